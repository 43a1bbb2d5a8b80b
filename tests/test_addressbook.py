"""The address book file: every malformed entry is refused naming the file, the entry and the field."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from activities.directories import DirectoryFileError, load_address_book
from domain.addressbook import AddressRole

GOOD = '''[[entries]]
address = "desk@example.org"
role = "mfa_desk"
country = "KE"
purpose = "MFA desk for Kenya"
last_verified = 2026-06-01
example = true
'''


def book(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "address_book.toml"
    path.write_text(text)
    return path


def test_a_well_formed_entry_loads(tmp_path: Path) -> None:
    loaded = load_address_book(book(tmp_path, GOOD))
    [entry] = loaded.for_country(AddressRole.MFA_DESK, "KE")
    assert entry.last_verified == date(2026, 6, 1) and not entry.live_ready
    assert entry.is_stale(date(2027, 7, 1), 365) and not entry.is_stale(date(2026, 12, 1), 365)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("last_verified = 2026-06-01", 'last_verified = "June 2026"'),
         "field 'last_verified' must be a date written YYYY-MM-DD"),
        (("last_verified = 2026-06-01", "last_verified = 2026-06-01T10:00:00"),
         "field 'last_verified' must be a date written YYYY-MM-DD"),
        (('address = "desk@example.org"', 'address = "Desk <desk@example.org>"'), "field 'address'"),
        (('country = "KE"', 'country = "Kenya"'), "field 'country'"),
        (("example = true", "example = false"), "field 'example'"),
        (('role = "mfa_desk"', 'role = "embassy"'), "field 'role' must be one of"),
        (("example = true", "example = true\nphone = \"+1\""), "field 'phone' is not a known field"),
    ],
)
def test_a_malformed_entry_is_refused_naming_file_and_field(
        tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = book(tmp_path, GOOD.replace(*change))
    with pytest.raises(DirectoryFileError) as info:
        load_address_book(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_the_same_address_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError, match="desk@example.org"):
        load_address_book(book(tmp_path, GOOD + "\n" + GOOD))


def test_the_shipped_book_has_the_design_mailboxes_and_fallback_desks() -> None:
    shipped = load_address_book()
    for address in ("urgent-action@ohchr.org", "defenders@ohchr.org", "freedex@ohchr.org",
                    "freeassembly@ohchr.org"):
        assert shipped.contains(address)
    # A country without its own desk falls back to the role's general entry.
    assert shipped.for_country(AddressRole.MFA_DESK, "NO") and shipped.for_country(
        AddressRole.EU_DELEGATION, "NO")
