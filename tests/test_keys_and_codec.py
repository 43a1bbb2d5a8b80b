"""Key material (worker.keys) and the Temporal payload encryption codec (worker.codec)."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from worker.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptionError,
    is_encrypted,
    make_data_converter,
)
from worker.keys import (
    KEY_LENGTH,
    KeyMaterialError,
    KeyRing,
    decode_key,
    encode_key,
    fingerprint_key_id,
    load_or_create_key_file,
    read_key_file,
)

MARKER = "Zephyrine Qwoxlandt"
"""A name that must never appear in anything Temporal stores."""


def new_key() -> bytes:
    return os.urandom(KEY_LENGTH)


def json_payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


# --- decoding keys ----------------------------------------------------------------------------


def test_decode_key_round_trips_encode_key() -> None:
    key = new_key()
    assert decode_key(encode_key(key), setting="APPEALS_X") == key
    assert decode_key(f"  {encode_key(key)}\n", setting="APPEALS_X") == key


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!!",
        base64.b64encode(b"Qwoxlandt-is-31-bytes-long-xxxx"[:31]).decode(),  # too short
        base64.b64encode(b"Q" * 33).decode(),  # too long
        "Zéphyrine" + "A" * 40,  # not ASCII
        "",
    ],
)
def test_decode_key_error_names_the_setting_and_never_the_key(text: str) -> None:
    with pytest.raises(KeyMaterialError) as info:
        decode_key(text, setting="APPEALS_EVENT_CIPHER_KEY")
    message = str(info.value)
    assert message.startswith("APPEALS_EVENT_CIPHER_KEY:")
    if text:
        assert text not in message
        assert text[:8] not in message


def test_key_ring_parse_first_entry_is_current() -> None:
    k1, k2 = new_key(), new_key()
    ring = KeyRing.parse(f"k2:{encode_key(k2)}, k1:{encode_key(k1)}", setting="APPEALS_CODEC_KEYS")
    assert ring.current_id == "k2"
    assert ring.current_key == k2
    assert dict(ring.keys) == {"k2": k2, "k1": k1}


@pytest.mark.parametrize(
    "template",
    [
        "{k}",  # no id
        "k1:{k},",  # empty entry
        "bad id:{k}",  # space in id
        "k1:{k},k1:{k}",  # same id twice
        "k1:{k}x",  # not base64
        "k1:{short}",  # wrong length
    ],
)
def test_key_ring_parse_errors_name_the_setting_and_never_the_key(template: str) -> None:
    key = encode_key(new_key())
    short = base64.b64encode(os.urandom(16)).decode()
    text = template.format(k=key, short=short)
    with pytest.raises(KeyMaterialError) as info:
        KeyRing.parse(text, setting="APPEALS_CODEC_KEYS")
    message = str(info.value)
    assert message.startswith("APPEALS_CODEC_KEYS")
    assert key not in message and key[:8] not in message
    assert short not in message and short[:8] not in message


def test_key_ring_refuses_missing_current_key_and_malformed_keys() -> None:
    with pytest.raises(KeyMaterialError, match="current key id"):
        KeyRing(current_id="k2", keys={"k1": new_key()})
    with pytest.raises(KeyMaterialError, match="malformed"):
        KeyRing(current_id="k1", keys={"k1": b"short"})


def test_key_ring_repr_shows_ids_but_no_key() -> None:
    key = new_key()
    ring = KeyRing(current_id="k1", keys={"k1": key})
    text = repr(ring) + str(ring)
    assert "k1" in text
    assert encode_key(key) not in text
    assert repr(key) not in text


def test_single_key_ring_is_named_by_a_stable_fingerprint() -> None:
    key, other = new_key(), new_key()
    ring = KeyRing.single(key)
    assert ring.current_id == fingerprint_key_id(key) == KeyRing.single(key).current_id
    assert ring.current_id != KeyRing.single(other).current_id
    assert ring.current_id.startswith("fp-")
    assert encode_key(key) not in ring.current_id


# --- key files --------------------------------------------------------------------------------


def test_key_file_is_created_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "payload-codec.key"
    key = load_or_create_key_file(path)

    assert len(key) == KEY_LENGTH
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert decode_key(path.read_text(), setting="file") == key
    contents = path.read_bytes()

    assert load_or_create_key_file(path) == key  # second start: same key, file untouched
    assert path.read_bytes() == contents
    assert read_key_file(path) == key
    # No temporary files left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["payload-codec.key"]


def test_two_key_files_get_different_keys(tmp_path: Path) -> None:
    assert load_or_create_key_file(tmp_path / "a.key") != load_or_create_key_file(tmp_path / "b.key")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused_without_echoing_the_key(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "event-store.key"
    text = encode_key(new_key())
    path.write_text(text + "\n")
    path.chmod(mode)
    with pytest.raises(KeyMaterialError) as info:
        load_or_create_key_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert text not in message
    assert path.read_text() == text + "\n"  # not replaced by a new key


@pytest.mark.parametrize("contents", [b"Zephyrine Qwoxlandt\n", "Zéphyrine".encode() * 5, b""])
def test_malformed_key_file_is_refused_without_echoing_it(tmp_path: Path, contents: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(contents)
    path.chmod(0o600)
    with pytest.raises(KeyMaterialError) as info:
        read_key_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "Zephyrine" not in message and "Qwoxlandt" not in message
    assert "0xc3" not in message  # no byte of the file quoted by the text codec


# --- the payload codec ------------------------------------------------------------------------


def ring(**keys: bytes) -> KeyRing:
    """A ring whose first keyword is the current key."""
    return KeyRing(current_id=next(iter(keys)), keys=keys)


async def test_codec_round_trips_and_hides_the_plaintext() -> None:
    codec = EncryptionCodec(ring(k1=new_key()))
    original = json_payload(MARKER)
    [encoded] = await codec.encode([original])

    assert is_encrypted(encoded)
    assert encoded.metadata["encoding"] == ENCODING
    assert encoded.metadata[KEY_ID_METADATA] == b"k1"
    stored = encoded.SerializeToString()
    assert MARKER.encode() not in stored
    assert b"Qwoxlandt" not in stored
    assert b"json/plain" not in stored  # the inner metadata is encrypted too

    [decoded] = await codec.decode([encoded])
    assert decoded == original


async def test_same_payload_encrypts_differently_each_time() -> None:
    codec = EncryptionCodec(ring(k1=new_key()))
    first, second = await codec.encode([json_payload(MARKER), json_payload(MARKER)])
    assert first.data != second.data


async def test_payload_written_before_rotation_decodes_after_a_new_current_key() -> None:
    k1, k2 = new_key(), new_key()
    before = EncryptionCodec(ring(k1=k1))
    [old] = await before.encode([json_payload(MARKER)])

    after = EncryptionCodec(KeyRing.parse(f"k2:{encode_key(k2)},k1:{encode_key(k1)}", setting="S"))
    assert await after.decode([old]) == [json_payload(MARKER)]

    [new] = await after.encode([json_payload("after rotation")])
    assert new.metadata[KEY_ID_METADATA] == b"k2"
    assert await after.decode([new]) == [json_payload("after rotation")]

    # Once k1 is dropped from the ring, data written with it is refused, not misread.
    only_new = EncryptionCodec(ring(k2=k2))
    with pytest.raises(PayloadDecryptionError, match="not in the key ring"):
        await only_new.decode_strict([old])


@pytest.mark.parametrize("position", [0, 11, 12, 20, -1])
async def test_tampered_ciphertext_is_refused(position: int) -> None:
    codec = EncryptionCodec(ring(k1=new_key()))
    [encoded] = await codec.encode([json_payload(MARKER)])
    data = bytearray(encoded.data)
    data[position] ^= 0x01
    tampered = Payload(metadata=dict(encoded.metadata), data=bytes(data))
    with pytest.raises(PayloadDecryptionError, match="failed authentication") as info:
        await codec.decode_strict([tampered])
    assert MARKER not in str(info.value)


@pytest.mark.parametrize("length", [0, 5, 12, 27])
async def test_truncated_ciphertext_is_refused(length: int) -> None:
    codec = EncryptionCodec(ring(k1=new_key()))
    [encoded] = await codec.encode([json_payload(MARKER)])
    truncated = Payload(metadata=dict(encoded.metadata), data=encoded.data[:length])
    with pytest.raises(PayloadDecryptionError):
        await codec.decode_strict([truncated])


async def test_altered_key_id_to_another_key_in_the_ring_is_refused() -> None:
    codec = EncryptionCodec(ring(k2=new_key(), k1=new_key()))
    [encoded] = await codec.encode([json_payload(MARKER)])
    assert encoded.metadata[KEY_ID_METADATA] == b"k2"
    relabelled = Payload(metadata={**encoded.metadata, KEY_ID_METADATA: b"k1"}, data=encoded.data)
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode_strict([relabelled])


@pytest.mark.parametrize("key_id", [b"k9", b"", None])
async def test_unknown_or_missing_key_id_is_refused(key_id: bytes | None) -> None:
    codec = EncryptionCodec(ring(k1=new_key()))
    [encoded] = await codec.encode([json_payload(MARKER)])
    metadata = dict(encoded.metadata)
    if key_id is None:
        del metadata[KEY_ID_METADATA]
    else:
        metadata[KEY_ID_METADATA] = key_id
    with pytest.raises(PayloadDecryptionError, match="not in the key ring"):
        await codec.decode_strict([Payload(metadata=metadata, data=encoded.data)])


async def test_same_key_id_with_a_different_key_is_refused() -> None:
    [encoded] = await EncryptionCodec(ring(k1=new_key())).encode([json_payload(MARKER)])
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await EncryptionCodec(ring(k1=new_key())).decode_strict([encoded])


async def test_unencrypted_payloads_are_refused() -> None:
    codec = EncryptionCodec(ring(k1=new_key()))
    plain = json_payload("sent by a client without the payload key")
    [decoded] = await codec.decode([plain])
    assert decoded.data == b"" and b"sent by a client" not in decoded.SerializeToString()
    with pytest.raises(KeyError, match="Unknown payload encoding"):
        DataConverter.default.payload_converter.from_payloads([decoded])


# --- the data converter -----------------------------------------------------------------------


@dataclass(frozen=True)
class CaseNote:
    reference: str
    defender_name: str
    risk_level: int
    tags: list[str]


async def test_data_converter_round_trips_a_dataclass_encrypted() -> None:
    converter = make_data_converter(ring(k1=new_key()))
    note = CaseNote(reference="UA-2025-0042", defender_name=MARKER, risk_level=3, tags=["detention"])

    payloads = await converter.encode([note, "second value"])

    assert len(payloads) == 2
    for payload in payloads:
        assert is_encrypted(payload)
        assert b"Qwoxlandt" not in payload.SerializeToString()
        assert b"UA-2025-0042" not in payload.SerializeToString()
    assert await converter.decode(payloads, [CaseNote, str]) == [note, "second value"]


async def test_data_converter_with_another_key_cannot_decode() -> None:
    note = CaseNote(reference="UA-2025-0042", defender_name=MARKER, risk_level=3, tags=[])
    payloads = await make_data_converter(ring(k1=new_key())).encode([note])
    with pytest.raises(KeyError, match="refused/undecryptable") as refused:
        await make_data_converter(ring(k1=new_key())).decode(payloads, [CaseNote])
    assert MARKER not in str(refused.value)


async def test_data_converter_encrypts_failure_messages_and_stack_traces() -> None:
    converter = make_data_converter(ring(k1=new_key()))
    try:
        raise ApplicationError(f"could not reach {MARKER}", "detail " + MARKER, type="Unreachable")
    except ApplicationError as exc:
        error = exc
    failure = Failure()
    await converter.encode_failure(error, failure)

    stored = failure.SerializeToString()
    assert b"Qwoxlandt" not in stored
    assert failure.message == "Encoded failure"

    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == f"could not reach {MARKER}"
    assert decoded.details == ("detail " + MARKER,)


async def test_decode_refuses_what_does_not_decrypt_without_stopping_the_worker() -> None:
    """Worker and clients decode with `decode`: a payload under another key, altered or not
    encrypted never yields content; it becomes a payload no converter reads, so an update that
    carries it is rejected instead of failing the whole workflow task."""
    [encoded] = await EncryptionCodec(ring(k1=new_key())).encode([json_payload(MARKER)])
    [decoded] = await EncryptionCodec(ring(k1=new_key())).decode([encoded])
    assert decoded.data == b"" and MARKER.encode() not in decoded.SerializeToString()
