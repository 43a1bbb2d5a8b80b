"""Reading the address book and the fund directory from their TOML files.

The files are configuration: the shipped defaults live in activities/data/ (package data) and
production points the settings at its own copies. Parsing and validation are the domain's
(domain.addressbook, domain.funds); this module only finds and reads the bytes, and puts the file
name into error messages so that whoever edited it knows where to look.
"""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

from domain.addressbook import AddressBook, AddressBookError, parse_address_book
from domain.funds import Fund, FundDirectoryError, parse_fund_directory

DEFAULT_ADDRESS_BOOK = "address_book.toml"
DEFAULT_FUND_DIRECTORY = "funds.toml"


class DirectoryFileError(ValueError):
    """A directory file is missing, is not valid TOML or has an invalid entry."""


def load_address_book(path: Path | None = None) -> AddressBook:
    """The address book at `path`; None is the default shipped with the package."""
    name, data = _read(path, DEFAULT_ADDRESS_BOOK)
    try:
        return parse_address_book(data)
    except AddressBookError as exc:
        raise DirectoryFileError(f"{name}: {exc}") from exc


def load_fund_directory(path: Path | None = None) -> list[Fund]:
    """The fund directory at `path`; None is the default shipped with the package."""
    name, data = _read(path, DEFAULT_FUND_DIRECTORY)
    try:
        return parse_fund_directory(data)
    except FundDirectoryError as exc:
        raise DirectoryFileError(f"{name}: {exc}") from exc


def _read(path: Path | None, default: str) -> tuple[str, dict[str, Any]]:
    if path is None:
        resource = files("activities") / "data" / default
        name, raw = f"default {default}", resource.read_bytes()
    else:
        try:
            name, raw = str(path), Path(path).read_bytes()
        except OSError as exc:
            raise DirectoryFileError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        return name, tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DirectoryFileError(f"{name}: not valid UTF-8 TOML ({exc})") from exc
