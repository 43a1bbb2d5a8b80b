"""Per-case data keys (store.cipher) and erasure (issue 13, part B), on a real SQLite file and the
real PostgreSQL: ciphertext bound to its case, version and type; a database written by the code
before per-case keys still loads; master key rotation re-wraps; two heads erase a closed case."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from desk.cases import Desk, Person
from desk.errors import NotAllowed, Rejected
from domain.case import case_id
from store.app import (
    CaseErased,
    CaseStore,
    CaseUnreadable,
    ErasureRefused,
    sqlite_url,
    verifier_without_key,
)
from store.cipher import MAGIC, EventUnreadable, MasterKeyError
from tests.backends import Backend, new_key
from tests.dev_stack import ROOT
from tests.factories import DEFENDER_NAME, INCIDENT_TEXT, T0, open_args
from tests.test_store import REF, every_event_kind

OTHER = "UA-2026-0002"
LATER = T0 + timedelta(days=400)


OLD_WRITER = """
import sys
from store.app import CaseStore
from tests.factories import open_args
from tests.test_store import every_event_kind
store = CaseStore(sys.argv[1], sys.argv[2])
for name, role in (("hana", "head"), ("hugo", "head"), ("olga", "case_officer")):
    store.add_user(name, name.title(), name + "@secretariat.example.org", [role])
every_event_kind(store)
store.open_case(**open_args(sys.argv[3]))
store.close()
"""


def write_with_the_code_before_per_case_keys(backend: Backend, tmp_path: Path) -> None:
    """Run the code as it was before per-case keys (the parent of the commit that added
    store/cipher.py, unpacked from git) to write a database: REF closed, OTHER open, users."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the code before per-case keys cannot be unpacked")
    added = subprocess.run(["git", "log", "--format=%H", "-1", "--diff-filter=A", "--",
                            "store/cipher.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    old = tmp_path / "old-code"
    old.mkdir()
    archive = subprocess.run(["git", "archive", f"{added}^"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    assert not (old / "store" / "cipher.py").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPEALS_")}
    done = subprocess.run([sys.executable, "-c", OLD_WRITER, backend.url, backend.key, OTHER],
                          cwd=old, env={**env, "PYTHONPATH": str(old)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def heads(store: CaseStore) -> None:
    store.add_user("hana", "Hana", "hana@secretariat.example.org", ["head"])
    store.add_user("hugo", "Hugo", "hugo@secretariat.example.org", ["head"])
    store.add_user("olga", "Olga", "olga@secretariat.example.org", ["case_officer"])


def states(store: CaseStore, reference: str) -> dict[int, tuple[str, bytes]]:
    return {e.originator_version: (e.topic, e.state)
            for e in store.recorder.select_events(case_id(reference))}


def set_event(store: CaseStore, reference: str, version: int, **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values)
    with store.engine.begin() as conn:
        assert conn.execute(text(f"UPDATE appeals_events SET {sets} "  # noqa: S608 - fixed names
                          "WHERE originator_id = :id AND originator_version = :v"),
                     {**values, "id": _id(store, reference), "v": version}).rowcount == 1


def _id(store: CaseStore, reference: str) -> Any:
    # SQLite stores the UUID as its 16 bytes, PostgreSQL as a uuid.
    cid = case_id(reference)
    return cid.bytes if store.engine.dialect.name == "sqlite" else cid


# ============================================================== binding to case, version, type
@pytest.mark.parametrize("attack", ["relabelled", "other version", "other case"])
def test_a_moved_or_relabelled_event_fails_to_decrypt_naming_case_and_version(
        backend: Backend, attack: str) -> None:
    s = backend.open()
    every_event_kind(s)  # REF: 19 events
    s.open_case(**open_args(OTHER))
    s.execute(OTHER, "add_further_information", {"at": T0, "information": "More."}, "olga", "o1")
    mine, other = states(s, REF), states(s, OTHER)
    assert all(state.startswith(MAGIC) for _, state in mine.values())
    if attack == "relabelled":  # ClearanceDenied (10) shown as ClearanceGranted (9)
        set_event(s, REF, 10, topic=mine[9][0])
        broken = (REF, 10)
    elif attack == "other version":  # version 2's ciphertext put at version 1
        set_event(s, REF, 1, state=mine[2][1])
        broken = (REF, 1)
    else:  # OTHER's further information put into REF at the same version
        set_event(s, REF, 2, state=other[2][1])
        broken = (REF, 2)
    s.close()
    reader = backend.open()
    with pytest.raises(CaseUnreadable) as info:
        reader.get(REF)
    message = str(info.value)
    assert f"Case {broken[0]} version {broken[1]} cannot be read" in message
    assert DEFENDER_NAME not in message and "Qwox" not in message
    with pytest.raises(CaseUnreadable):
        reader.trail(REF)
    # The cipher's own error names the case id and version (what the store turns into the above).
    with pytest.raises(EventUnreadable) as low:
        list(reader.repository.event_store.get(case_id(REF)))
    assert low.value.case_id == str(case_id(REF)) and low.value.version == broken[1]
    assert reader.get(OTHER).summary()["reference"] == OTHER  # the other case is untouched
    reader.close()


def test_a_wrapped_key_copied_to_another_case_does_not_unwrap(backend: Backend) -> None:
    s = backend.open()
    every_event_kind(s)
    s.open_case(**open_args(OTHER))
    with s.engine.begin() as conn:
        conn.execute(text("UPDATE appeals_case_keys SET wrapped_key = :w WHERE case_id = :c"),
                     {"w": wrapped_key(s, REF), "c": str(case_id(OTHER))})
    s.close()
    reader = backend.open()
    with pytest.raises(MasterKeyError, match=f"case {case_id(OTHER)}: its wrapped data key does "
                                             "not unwrap"):
        reader.get(OTHER)
    assert reader.get(REF).outcome == "resolved"
    reader.close()


# ======================================================================= old databases still load
def test_a_database_written_by_the_code_before_per_case_keys_still_loads_and_works(
        backend: Backend, tmp_path: Path) -> None:
    write_with_the_code_before_per_case_keys(backend, tmp_path)
    new = backend.open()
    legacy = states(new, OTHER)
    assert legacy and not any(state.startswith(MAGIC) for _, state in legacy.values())
    assert new.get(REF).outcome == "resolved"
    assert [e.event for e in new.trail(REF)][-1] == "Closed"
    assert new.verify(REF).ok and new.verify_users().ok
    assert new.user_roles("hana") == {"head"}
    # The running case keeps running: its next event is written under its own new data key.
    new.execute(OTHER, "add_further_information", {"at": T0, "information": "More."}, "olga", "o1")
    after = states(new, OTHER)
    assert after[1] == legacy[1] and after[2][1].startswith(MAGIC)
    assert len(new.get(OTHER).further_information) == 1
    assert new.verify(OTHER).ok
    # A case written (partly) under the master key cannot be erased alone: said plainly.
    with pytest.raises(ErasureRefused, match="before per-case keys"):
        new.erase(REF, actor="hana", at=LATER, retention_days=0,
                  reason_code="retention-expired", reason="Retention over")
    new.close()


# ================================================================================ key rotation
def test_master_key_rotation_rewraps_the_data_keys_and_leaves_the_events_alone(
        backend: Backend) -> None:
    first, second = backend.key, new_key()
    s = backend.open()
    heads(s)
    every_event_kind(s)
    before = states(s, REF)
    s.close()

    # Without the old key among the previous ones, the data keys cannot be unwrapped: said so.
    with pytest.raises(MasterKeyError, match="APPEALS_EVENT_CIPHER_PREVIOUS_KEYS"):
        CaseStore(backend.url, second).get(REF)

    rotating = CaseStore(backend.url, f"{second},{first}")
    assert rotating.get(REF).outcome == "resolved"  # unwrapped with the previous key
    assert rotating.rotate_master_key() == 2  # the case and the users log
    assert rotating.rotate_master_key() == 0
    rotating.close()

    after = CaseStore(backend.url, second)  # the old master key is gone
    assert after.get(REF).outcome == "resolved" and after.user_roles("hana") == {"head"}
    assert states(after, REF) == before  # no event was re-encrypted
    assert after.verify(REF).ok
    after.close()
    with pytest.raises(MasterKeyError):
        CaseStore(backend.url, first).get(REF)


# ===================================================================================== erasure
def raw_contents(backend: Backend, store: CaseStore) -> bytes:
    """Everything the database holds as bytes: the SQLite file (and its journal), or every
    PostgreSQL table's rows as text (bytea as hex)."""
    if backend.sqlite_path is not None:
        out = b""
        for suffix in ("", "-wal", "-journal"):
            path = backend.sqlite_path.with_name(backend.sqlite_path.name + suffix)
            if path.exists():
                out += path.read_bytes()
        return out
    with store.engine.connect() as conn:
        tables = conn.execute(text("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = 'public'")).scalars().all()
        return b"\n".join(
            row.encode() for table in tables
            for row in conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars())  # noqa: S608


def wrapped_key(store: CaseStore, reference: str) -> bytes | None:
    with store.engine.connect() as conn:
        value = conn.execute(text("SELECT wrapped_key FROM appeals_case_keys WHERE case_id = :c"),
                             {"c": str(case_id(reference))}).scalar()
    return None if value is None else bytes(value)


def test_two_heads_erase_a_closed_case_and_its_personal_data_is_gone(backend: Backend) -> None:
    s = backend.open()
    heads(s)
    every_event_kind(s)  # REF, closed by hana
    s.open_case(**open_args(OTHER))  # still open
    key_before = wrapped_key(s, REF)
    assert key_before is not None and len(key_before) == 60
    chain_before = verifier_without_key(backend.url).verify_reference(REF)
    assert chain_before.ok

    def erase(actor: str, at: Any = LATER, reference: str = REF, days: int = 365) -> Any:
        return s.erase(reference, actor=actor, at=at, retention_days=days,
                       reason_code="retention-expired", reason="Retention period over")

    with pytest.raises(ErasureRefused, match=f"Case {OTHER} is open"):
        erase("hana", reference=OTHER)
    with pytest.raises(ErasureRefused, match="retention period.*allows its erasure from"):
        erase("hana", at=T0 + timedelta(days=30))
    with pytest.raises(ErasureRefused, match="reason code"):
        s.erase(REF, actor="hana", at=LATER, retention_days=0, reason_code="because",
                reason="x")
    with pytest.raises(ErasureRefused, match="reason: it names someone") as named:
        s.erase(REF, actor="hana", at=LATER, retention_days=0, reason_code="erasure-request",
                reason="qwoxlandt asked us")
    assert "qwox" not in str(named.value).lower()
    asked = erase("hana")
    assert asked.state == "requested" and asked.record["requested_by"] == "hana"
    assert s.get(REF).outcome == "resolved"  # still readable until confirmed
    with pytest.raises(ErasureRefused, match="another head must confirm"):
        erase("hana")
    done = erase("hugo")
    assert done.state == "erased" and done.record["confirmed_by"] == "hugo"

    # The key is gone; the defender's name is nowhere in the database, nor the wrapped key.
    assert wrapped_key(s, REF) is None and s.keys.state(str(case_id(REF))) == "destroyed"
    raw = raw_contents(backend, s)
    assert len(raw) > 1000
    for needle in (DEFENDER_NAME.encode(), INCIDENT_TEXT.encode(), key_before,
                   key_before.hex().encode()):
        assert needle not in raw
    # Reading the case fails clearly, in this process and in a fresh one.
    with pytest.raises(CaseErased, match=f"Case {REF} was erased on"):
        s.get(REF)
    s.close()
    fresh = backend.open()
    with pytest.raises(CaseErased) as info:
        fresh.get(REF)
    assert DEFENDER_NAME not in str(info.value)
    with pytest.raises(CaseErased):  # nothing new can be written to it either
        fresh.execute(REF, "record_checkin", {"at": LATER, "summary": "x", "reprisals": False},
                      "olga", "late")
    # The trail shows the erasure (who, when, why) and the case's events as erased.
    trail = fresh.trail(REF)
    assert [e.event for e in trail[:19]][:2] == ["Opened", "FurtherInformationAdded"]
    assert all(e.details == {"erased": True} for e in trail[:19])
    requested, confirmed = trail[19:]
    assert (requested.event, requested.actor, requested.details["reason_code"],
            requested.details["reason"]) == ("ErasureRequested", "hana", "retention-expired",
                                             "Retention period over")
    assert (confirmed.event, confirmed.actor) == ("ErasureConfirmed", "hugo")
    # The chain still verifies over the ciphertext, with the key and without it.
    assert fresh.verify(REF).ok
    after = verifier_without_key(backend.url).verify_reference(REF)
    assert (after.ok, after.events) == (True, chain_before.events)
    # Other cases are untouched; a second erase is refused.
    assert fresh.get(OTHER).summary()["reference"] == OTHER
    with pytest.raises(ErasureRefused, match="already erased"):
        fresh.erase(REF, actor="hana", at=LATER, retention_days=0)
    fresh.close()


def test_only_heads_erase_through_the_desk(backend: Backend) -> None:
    s = backend.open()
    heads(s)
    every_event_kind(s)

    async def no_temporal() -> Any:
        raise AssertionError("no Temporal call before the key is destroyed")

    desk = Desk(None, s, no_temporal, clock=lambda: LATER)
    with pytest.raises(NotAllowed, match="Only a head"):
        asyncio.run(desk.erase(Person("olga"), REF, reason_code="erasure-request",
                               reason="Asked by the organisation"))
    asked = asyncio.run(desk.erase(Person("hana"), REF, reason_code="erasure-request",
                                   reason="Asked by the organisation"))
    assert asked["state"] == "requested"
    with pytest.raises(Rejected, match="another head must confirm"):
        asyncio.run(desk.erase(Person("hana"), REF))
    assert s.keys.state(str(case_id(REF))) == "live"
    s.close()


# ============================================================== settings and the command line
def test_previous_master_keys_follow_the_current_one_and_bad_ones_are_refused(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from worker.settings import error_line, load_settings

    for name in list(os.environ):
        if name.startswith("APPEALS_"):
            monkeypatch.delenv(name)
    current, old = new_key(), new_key()
    settings = load_settings(var_dir=str(tmp_path), event_cipher_key=current,
                             event_cipher_previous_keys=f"{old}, {current}")
    assert settings.event_store_cipher_key() == f"{current},{old}"
    assert load_settings(var_dir=str(tmp_path), event_cipher_key=current
                         ).event_store_cipher_key() == current
    assert settings.erasure_retention_days == 365
    with pytest.raises(ValidationError) as info:
        load_settings(var_dir=str(tmp_path), event_cipher_previous_keys=f"{old},Qwoxnotakey")
    assert error_line(info.value).startswith("APPEALS_EVENT_CIPHER_PREVIOUS_KEYS")
    assert "Qwox" not in str(info.value)


def test_appeals_keys_rotate_master_rewraps_and_names_a_missing_key(tmp_path: Any) -> None:
    from tests.dev_stack import appeals_command, fails, ok

    url = sqlite_url(str(tmp_path / "events.sqlite"))
    first, second = new_key(), new_key()
    s = CaseStore(url, first)
    every_event_kind(s)
    s.close()
    base = {k: v for k, v in os.environ.items() if not k.startswith("APPEALS_")}
    env = {**base, "APPEALS_VAR_DIR": str(tmp_path / "var"), "APPEALS_DATABASE_URL": url,
           "APPEALS_EVENT_CIPHER_KEY": second}
    assert fails(appeals_command(env, "keys", "rotate-master"), 2).startswith(
        "settings: case ")
    done = ok(appeals_command({**env, "APPEALS_EVENT_CIPHER_PREVIOUS_KEYS": first},
                              "keys", "rotate-master"))
    assert done.startswith("1 data keys re-wrapped under master key fp-")
    assert ok(appeals_command(env, "keys", "rotate-master")).startswith("0 data keys")
    assert CaseStore(url, second).get(REF).outcome == "resolved"


# ======================================================================= the aggregate cache
def test_cached_cases_follow_other_writers_and_an_erased_case_is_never_served_from_memory(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process keeps the cases it read in memory (eventsourcing's aggregate cache) and
    brings them up to date with what other processes recorded; a case erased by another process
    is refused once the key cache's lifetime is over (here: at once), and by this process at
    once."""
    import store.cipher

    reader, writer = backend.open(), backend.open()
    heads(writer)
    every_event_kind(writer)  # REF closed
    writer.open_case(**open_args(OTHER))
    assert reader.repository.cache is not None
    before = reader.get(OTHER).version
    writer.execute(OTHER, "add_further_information", {"at": T0, "information": "More."},
                   "olga", "o-1")
    assert reader.get(OTHER).version == before + 1  # the other process's event, fast-forwarded
    reader.execute(OTHER, "add_further_information", {"at": T0, "information": "Again."},
                   "olga", "o-2")
    assert len(writer.get(OTHER).further_information) == 2
    # A copy per read: changing what one read returned changes nothing for the next.
    reader.get(OTHER).further_information.clear()
    assert len(reader.get(OTHER).further_information) == 2

    assert reader.get(REF).outcome == "resolved"  # cached with its key
    monkeypatch.setattr(store.cipher, "CACHE_SECONDS", 0.0)
    for head in ("hana", "hugo"):
        writer.erase(REF, actor=head, at=LATER, retention_days=0,
                     reason_code="retention-expired", reason="Retention period over")
    for process in (writer, reader):
        with pytest.raises(CaseErased):
            process.get(REF)
    reader.close()
    writer.close()
