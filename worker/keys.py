"""Key material: 32-byte AES keys read from the environment or from key files, never from code.

Two shapes are supported:

- a key file holding one base64 key (the embedded development stack creates its own on first run);
- a key ring string ``"k2:BASE64,k1:BASE64"``: the first key is current (used to encrypt), the others
  are kept only to decrypt data written before a rotation.

Error messages name the setting or the file, never the key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

KEY_LENGTH = 32
"""AES-256: the only key size we issue or accept."""

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class KeyMaterialError(ValueError):
    """A key setting or key file is missing, malformed or unsafe."""


def decode_key(text: str, *, setting: str) -> bytes:
    """Decode one base64 key and check its length; errors name ``setting``, never the value."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{setting}: not valid base64") from None
    if len(key) != KEY_LENGTH:
        raise KeyMaterialError(
            f"{setting}: key must be {KEY_LENGTH} bytes after base64 decoding, got {len(key)}"
        )
    return key


def encode_key(key: bytes) -> str:
    """Base64 text of a key, as stored in key files and accepted by the settings."""
    return base64.b64encode(key).decode("ascii")


def fingerprint_key_id(key: bytes) -> str:
    """A stable key id derived from the key itself.

    Used for keys that come from a key file, which has no room for an id. A truncated SHA-256 of a
    random 256-bit key reveals nothing usable about it, and unlike a fixed name ("k1") it cannot
    collide with a different key given the same name later.
    """
    return "fp-" + hashlib.sha256(key).hexdigest()[:12]


def read_key_file(path: Path) -> bytes:
    """Read an existing key file, refusing one that group or others may access."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise KeyMaterialError(
            f"key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    setting = f"key file {path}"
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError:
        # The codec's own message would quote a byte of the file.
        raise KeyMaterialError(f"{setting}: not valid base64") from None
    return decode_key(text, setting=setting)


def load_or_create_key_file(path: Path) -> bytes:
    """Return the key in ``path``, creating the file with a fresh random key if it is missing.

    The file holds the key in base64 and is created with mode 0600 in a directory created with
    mode 0700. An existing file is reused, but refused if group or others may access it.
    """
    if not path.exists():
        _create_key_file(path)
    return read_key_file(path)


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Write a private temporary file, then hard-link it into place: the key appears complete or
    # not at all, and if two processes race on first start the loser keeps the winner's key
    # instead of overwriting it (os.link refuses an existing target).
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(encode_key(secrets.token_bytes(KEY_LENGTH)) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class KeyRing:
    """Keys by id, with the id of the current key (the one new data is encrypted with).

    The keys are kept out of ``repr`` so that a logged or printed key ring shows only its ids.
    """

    current_id: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current_id not in self.keys:
            raise KeyMaterialError(f"key ring: current key id {self.current_id!r} has no key")
        for key_id, key in self.keys.items():
            if not _KEY_ID.fullmatch(key_id) or len(key) != KEY_LENGTH:
                raise KeyMaterialError(f"key ring: key {key_id!r} is malformed")

    @property
    def current_key(self) -> bytes:
        return self.keys[self.current_id]

    @classmethod
    def single(cls, key: bytes) -> KeyRing:
        """A ring of one key, identified by its fingerprint (see :func:`fingerprint_key_id`)."""
        key_id = fingerprint_key_id(key)
        return cls(current_id=key_id, keys={key_id: key})

    @classmethod
    def parse(cls, text: str, *, setting: str) -> KeyRing:
        """Parse ``"k2:BASE64,k1:BASE64"``; the first entry is the current key."""
        keys: dict[str, bytes] = {}
        for entry in (part.strip() for part in text.split(",")):
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID.fullmatch(key_id):
                raise KeyMaterialError(
                    f"{setting}: expected comma-separated 'id:base64' entries, ids made of "
                    "letters, digits, '_', '.', '-'"
                )
            if key_id in keys:
                raise KeyMaterialError(f"{setting}: key id {key_id!r} appears twice")
            keys[key_id] = decode_key(encoded, setting=f"{setting} (key {key_id!r})")
        return cls(current_id=next(iter(keys)), keys=keys)
