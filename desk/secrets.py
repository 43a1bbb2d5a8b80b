"""Secrets the doors keep at rest, sealed with AES-GCM: a user's one-time-code (TOTP) secret is
stored in the users table only as ciphertext under the TOTP key (setting `totp_key_file`,
`Settings.totp_key()`), bound to a context (the web and the CLI use `totp:<username>`), so that a
database dump or a backup gives nobody a working second factor, and a sealed value copied to
another user's row does not open.

    sealed = seal(key, secret, context=f"totp:{username}")
    secret = unseal(key, sealed, context=f"totp:{username}")

`is_sealed` tells a sealed value (`sealed:v1:...`) from a secret stored before sealing (plain
base32), which the doors accept and seal at the next sign-in. Errors never include a secret or the
key.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "sealed:v1:"
_NONCE = 12
_PURPOSE = b"urgent-appeals/sealed/"


class SealError(ValueError):
    """A sealed value that does not open with this key in this context (or a bad key)."""


def _aead(key: bytes) -> AESGCM:
    if len(key) not in (16, 24, 32):
        raise SealError("the sealing key must be 16, 24 or 32 bytes")
    return AESGCM(key)


def is_sealed(value: str) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(key: bytes, secret: str, *, context: str) -> str:
    """`secret` as `sealed:v1:<base64url(nonce + ciphertext)>`, bound to `context`."""
    nonce = os.urandom(_NONCE)
    sealed = _aead(key).encrypt(nonce, secret.encode(), _PURPOSE + context.encode())
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(key: bytes, value: str, *, context: str) -> str:
    """The secret of a sealed value; SealError when it is not one, or does not open."""
    if not is_sealed(value):
        raise SealError("the value is not sealed")
    try:
        raw = base64.urlsafe_b64decode(value[len(PREFIX):].encode("ascii"))
    except (binascii.Error, ValueError):
        raise SealError("the sealed value is malformed") from None
    if len(raw) <= _NONCE:
        raise SealError("the sealed value is malformed")
    try:
        plain = _aead(key).decrypt(raw[:_NONCE], raw[_NONCE:], _PURPOSE + context.encode())
    except InvalidTag:
        raise SealError("the sealed value does not open with this key here (a different key, "
                        "or a value moved from elsewhere)") from None
    return plain.decode()
