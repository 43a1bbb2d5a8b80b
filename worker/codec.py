"""Payload encryption for everything the Temporal server stores.

Temporal keeps workflow inputs, results, activity arguments, update arguments and (with the failure
converter below) error messages and stack traces in its own database. Case data must not be readable
there, so every payload is encrypted with AES-GCM before it leaves the process. The key id travels in
the payload metadata so that data written before a key rotation still decodes with the old key.

The one data converter built here is used by the worker, every client, the tests and replay; a
client without it sees only ciphertext.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from worker.keys import KeyRing

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_LENGTH = 12
TAG_LENGTH = 16


class PayloadDecryptionError(Exception):
    """A payload could not be decrypted: not encrypted at all, an unknown key id, or failed
    authentication."""


class EncryptionCodec(PayloadCodec):
    """AES-GCM over the whole serialized payload (data and its metadata) with the ring's current key.

    The key id is also the associated data, so a payload whose key-id label was altered fails
    authentication instead of being tried with another key.
    """

    def __init__(self, keyring: KeyRing) -> None:
        self._current_id = keyring.current_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        # An unencrypted payload comes from a client without the payload key: its content is never
        # passed on. It becomes a payload no converter reads, so an update carrying it is rejected
        # ("failed decoding arguments") and a case started with it records nothing, while the
        # workflow's own encrypted payloads in the same task still decode.
        return [self._decrypt_or_refuse(p) if is_encrypted(p) else REFUSED for p in payloads]

    async def decode_strict(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt every payload or raise PayloadDecryptionError saying why (for tools)."""
        for p in payloads:
            if not is_encrypted(p):
                raise PayloadDecryptionError("payload is not encrypted")
        return [self._decrypt(p) for p in payloads]

    def _decrypt_or_refuse(self, payload: Payload) -> Payload:
        """A payload that does not decrypt (another key, altered) is refused the same way: it
        never yields content, and an update carrying it cannot stall the case's workflow."""
        try:
            return self._decrypt(payload)
        except PayloadDecryptionError as exc:
            LOG.warning("payload refused: %s", exc)
            return UNDECRYPTABLE

    def _encrypt(self, payload: Payload) -> Payload:
        key_id = self._current_id
        # Random 96-bit nonces are safe up to 2^32 messages per key (NIST SP 800-38D), orders of
        # magnitude beyond what one secretariat writes between key rotations.
        nonce = os.urandom(NONCE_LENGTH)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("ascii", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r}, which is not in the key ring"
            )
        if len(payload.data) < NONCE_LENGTH + TAG_LENGTH:
            # AESGCM raises a bare ValueError for a short nonce: report truncation like tampering.
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r} is truncated (altered or corrupted)"
            )
        nonce, sealed = payload.data[:NONCE_LENGTH], payload.data[NONCE_LENGTH:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload failed authentication with key id {key_id!r} (altered or corrupted)"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


# What an unencrypted or undecryptable payload decodes to: encodings no payload converter knows.
REFUSED = Payload(metadata={"encoding": b"refused/unencrypted"}, data=b"")
UNDECRYPTABLE = Payload(metadata={"encoding": b"refused/undecryptable"}, data=b"")
LOG = logging.getLogger(__name__)


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def make_data_converter(keyring: KeyRing) -> DataConverter:
    """The default converter, with every payload encrypted and failure texts moved into payloads.

    ``DefaultFailureConverterWithEncodedAttributes`` moves error messages and stack traces into an
    encoded payload, so they are encrypted too (the server shows "Encoded failure" instead).
    """
    return dataclasses.replace(
        DataConverter.default,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
