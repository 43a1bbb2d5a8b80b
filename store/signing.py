"""Ed25519 signatures of the audit chain's links and of the checkpoints (store.checkpoints).

The processes that write the store (the workers and the doors) hold the private signing key, read
from a key file kept outside the database (worker.settings `chain_signing_key_file`); auditors get
only the public keys (`appeals audit public-key`). Each signature names the id of its key, derived
from the public key (`ed-` and 12 hex digits of its SHA-256), so that a rotated key's old
signatures keep verifying while its public key stays in the verifier's list.

A private key file holds the 32-byte Ed25519 seed in base64, like the other key files
(worker.keys). A public key list holds one base64 public key (32 bytes) per line; blank lines and
lines starting with `#` are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PUBLIC_KEY_LENGTH = 32


class SigningKeyError(ValueError):
    """A signing key or public key list is missing or malformed (the message names the place)."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed-" + hashlib.sha256(raw).hexdigest()[:12]


def public_text(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


@dataclass(frozen=True)
class ChainSigner:
    """The private key that signs links and checkpoints (kept out of `repr`)."""

    private: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> ChainSigner:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> ChainSigner:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, message: bytes) -> tuple[str, str]:
        """(key id, base64 signature)."""
        return self.key_id, base64.b64encode(self.private.sign(message)).decode("ascii")

    def verifier(self, extra: Iterable[Ed25519PublicKey] = ()) -> ChainKeys:
        return ChainKeys.of([self.public, *extra])


@dataclass(frozen=True)
class ChainKeys:
    """The public keys a verifier accepts, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey]) -> ChainKeys:
        return cls({key_id(k): k for k in keys})

    def verify(self, kid: str, signature: str, message: bytes) -> str | None:
        """None when the signature is good, else why not (no key material in the reason)."""
        public = self.keys.get(kid)
        if public is None:
            return f"signed with key {kid[:20]!s}, which is not among the public keys given"
        try:
            raw = base64.b64decode(signature, validate=True)
            public.verify(raw, message)
        except (binascii.Error, ValueError, InvalidSignature):
            return "the signature does not verify"
        return None

    def export(self) -> str:
        return "".join(f"# {kid}\n{public_text(k)}\n" for kid, k in self.keys.items())


def parse_public_keys(text: str, *, source: str) -> list[Ed25519PublicKey]:
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise SigningKeyError(f"{source}, line {number}: not valid base64") from None
        if len(raw) != PUBLIC_KEY_LENGTH:
            raise SigningKeyError(f"{source}, line {number}: a public key is "
                                  f"{PUBLIC_KEY_LENGTH} bytes, got {len(raw)}")
        keys.append(Ed25519PublicKey.from_public_bytes(raw))
    if not keys:
        raise SigningKeyError(f"{source}: no public key in it")
    return keys


def read_public_keys(path: Path, *, setting: str) -> list[Ed25519PublicKey]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise SigningKeyError(f"{setting}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"{setting}: cannot read {path} ({type(exc).__name__})") from None
    return parse_public_keys(text, source=f"{setting} ({path})")
