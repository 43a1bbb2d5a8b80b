"""Issue 13, part A: signed chain links and signed checkpoints outside the database.

Each attack is made as someone with plain SQL write access to the event store and no key would
make it (SQLAlchemy Core statements on the tables, on a real SQLite file and on the real
PostgreSQL), and the store verification with the public key only must name the case and version.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, Table, delete, insert, select, update
from temporalio.testing import WorkflowEnvironment

from domain.case import case_id
from domain.users import USERS_LOG_ID
from store import schema
from store.app import CaseStore, verifier_without_key
from store.audit import verify_case
from store.chain import GENESIS, event_hash, event_name, link_hash
from store.checkpoints import (
    Checkpointer,
    CheckpointRefused,
    StoreReport,
    checkpoint_files,
    verify_store,
    write_checkpoint,
)
from store.recorder import UnsignedWriteRefused
from store.signing import ChainKeys, ChainSigner
from tests.backends import Backend
from tests.factories import T0, open_args
from tests.test_store import REF, every_event_kind

REF2 = "UA-2026-0002"
ROOT = Path(__file__).resolve().parent.parent
CID, CID2 = str(case_id(REF)), str(case_id(REF2))


@dataclass
class Signed:
    backend: Backend
    signer: ChainSigner
    directory: Path
    store: CaseStore

    @property
    def keys(self) -> ChainKeys:
        return ChainKeys.of([self.signer.public])  # what an auditor holds: the public key

    def audit(self, case: str | None = None) -> StoreReport:
        """The store verification an auditor runs: database rows, public key, checkpoints."""
        verifier = verifier_without_key(self.backend.url, self.keys)
        try:
            return verify_store(verifier.engine, verifier.recorder, self.keys, self.directory,
                                case_id=case)
        finally:
            verifier.engine.dispose()

    def checkpoint(self) -> Path:
        return write_checkpoint(self.store.engine, self.store.recorder, self.signer,
                                self.store.chain_keys or self.keys, self.directory)


def second_case(store: CaseStore) -> None:
    store.open_case(**open_args(REF2))
    store.execute(REF2, "add_further_information", {"at": T0, "information": "More."}, "olga",
                  "r2-i1")


@pytest.fixture
def signed(backend: Backend, tmp_path: Path) -> Iterator[Signed]:
    signer = ChainSigner.generate()
    store = CaseStore(backend.url, backend.key, signer=signer)
    store.users.bootstrap_head("hana", "Hana", "hana@secretariat.example.org")
    store.users.add("olga", "Olga", "olga@secretariat.example.org", ["case_officer"], actor="hana")
    every_event_kind(store)  # REF: 19 events, closed; v10 is ClearanceDenied
    second_case(store)  # REF2: 2 events
    ctx = Signed(backend, signer, tmp_path / "checkpoints", store)
    ctx.checkpoint()
    try:
        yield ctx
    finally:
        store.close()


# ------------------------------------------------------------------- what the attacker does
def attacker(backend: Backend) -> tuple[Engine, Table]:
    """A plain database connection (no key) and the events table."""
    verifier = verifier_without_key(backend.url)
    table = verifier.recorder.events_record_cls.__table__  # type: ignore[attr-defined]
    return verifier.engine, table


def recompute_chain(conn: Any, events: Table, cid: str) -> None:
    """What someone who read store/chain.py does after changing events: every link recomputed
    with plain SHA-256 from the stored rows (the signatures cannot be recomputed)."""
    c = schema.chain
    rows = {r.version: r for r in conn.execute(select(c).where(c.c.case_id == cid))}
    prev = GENESIS
    for version, topic, state in conn.execute(
            select(events.c.originator_version, events.c.topic, events.c.state)
            .where(events.c.originator_id == UUID(cid)).order_by(events.c.originator_version)):
        row = rows[version]
        ev_hash = event_hash(cid, version, topic, bytes(state))
        link = link_hash(prev, ev_hash, cid, version, event_name(topic), row.actor,
                         schema.utc(row.recorded_at))  # type: ignore[arg-type]
        conn.execute(update(c).where((c.c.case_id == cid) & (c.c.version == version))
                     .values(event_name=event_name(topic), event_hash=ev_hash, prev_hash=prev,
                             hash=link))
        prev = link


def one_failure(report: StoreReport) -> str:
    assert not report.ok, report.lines
    assert len(report.failures) == 1, report.failures
    return report.failures[0]


# ------------------------------------------------------------------------------- the attacks
def test_an_untouched_store_verifies_with_the_public_key_only(signed: Signed) -> None:
    report = signed.audit()
    assert report.ok, report.failures
    assert (report.chains, report.events) == (3, 19 + 2 + 3)
    assert f"{REF}: audit chain verified (19 events)" in report.lines
    assert report.lines[-1].startswith("checked against checkpoint-0000000001.json")
    assert signed.audit(CID).chains == 1


def test_a_relabelled_event_with_the_chain_recomputed_is_detected(signed: Signed) -> None:
    engine, events = attacker(signed.backend)
    with engine.begin() as conn:
        where = (events.c.originator_id == UUID(CID)) & (events.c.originator_version == 10)
        topic = conn.execute(select(events.c.topic).where(where)).scalar_one()
        assert topic.endswith("ClearanceDenied")
        conn.execute(update(events).where(where).values(
            topic=topic.replace("ClearanceDenied", "ClearanceGranted")))
        recompute_chain(conn, events, CID)
    # The plain hashes now agree: this is the attack of issue 13 against the old verifier.
    assert verifier_without_key(signed.backend.url).verify_reference(REF).ok
    failure = one_failure(signed.audit())
    assert failure.startswith(f"{REF}: audit chain broken at version 10: the link's signature")
    report = signed.store.verify(REF)  # the doors' `audit REF --verify` checks signatures too
    assert (report.ok, report.broken_version) == (False, 10)


def test_an_event_moved_to_another_case_is_detected(signed: Signed) -> None:
    """REF's ClearanceDenied (v10) appended to REF2 as its v3, its chain row recomputed and its
    signature row copied: the signature covers the case and the version."""
    engine, events = attacker(signed.backend)
    sg = schema.chain_signatures
    with engine.begin() as conn:
        row = conn.execute(select(events).where((events.c.originator_id == UUID(CID))
                                                & (events.c.originator_version == 10))).one()
        conn.execute(insert(events).values(originator_id=UUID(CID2), originator_version=3,
                                           topic=row.topic, state=row.state))
        link = conn.execute(select(schema.chain).where((schema.chain.c.case_id == CID)
                                                       & (schema.chain.c.version == 10))).one()
        conn.execute(insert(schema.chain).values({**link._asdict(), "case_id": CID2,
                                                  "version": 3}))
        sig = conn.execute(select(sg).where((sg.c.case_id == CID) & (sg.c.version == 10))).one()
        conn.execute(insert(sg).values({**sig._asdict(), "case_id": CID2, "version": 3}))
        recompute_chain(conn, events, CID2)
    failure = one_failure(signed.audit())
    assert failure.startswith(f"{REF2}: audit chain broken at version 3: the link's signature")


def test_an_event_moved_to_another_version_is_detected(signed: Signed) -> None:
    """v9 (ClearanceGranted) and v10 (ClearanceDenied) of REF swapped, with their signature rows,
    and the chain recomputed."""
    engine, events = attacker(signed.backend)
    sg = schema.chain_signatures
    with engine.begin() as conn:
        def at(version: int) -> Any:
            return (events.c.originator_id == UUID(CID)) & (events.c.originator_version == version)
        nine, ten = (conn.execute(select(events.c.topic, events.c.state).where(at(v))).one()
                     for v in (9, 10))
        conn.execute(update(events).where(at(9)).values(topic=ten.topic, state=ten.state))
        conn.execute(update(events).where(at(10)).values(topic=nine.topic, state=nine.state))
        sigs = {r.version: r for r in conn.execute(
            select(sg).where((sg.c.case_id == CID) & sg.c.version.in_([9, 10])))}
        for version, other in ((9, 10), (10, 9)):
            conn.execute(update(sg).where((sg.c.case_id == CID) & (sg.c.version == version))
                         .values(key_id=sigs[other].key_id, signature=sigs[other].signature))
        recompute_chain(conn, events, CID)
    assert verifier_without_key(signed.backend.url).verify_reference(REF).ok
    failure = one_failure(signed.audit())
    assert failure.startswith(f"{REF}: audit chain broken at version 9: the link's signature")


def test_the_newest_event_deleted_with_its_chain_row_is_detected_against_the_checkpoint(
        signed: Signed) -> None:
    engine, events = attacker(signed.backend)
    with engine.begin() as conn:
        conn.execute(delete(events).where((events.c.originator_id == UUID(CID))
                                          & (events.c.originator_version == 19)))
        for table in (schema.chain, schema.chain_signatures):
            conn.execute(delete(table).where((table.c.case_id == CID) & (table.c.version == 19)))
    # The chain itself is whole and signed: only the checkpoint knows version 19 existed.
    assert signed.store.verify(REF).ok
    failure = one_failure(signed.audit())
    assert failure == (f"{REF}: audit chain broken at version 19: events deleted, "
                       "checkpoint-0000000001.json sealed version 19 and the chain now ends at "
                       "version 18")
    # And the next checkpoint does not seal over the deletion.
    with pytest.raises(CheckpointRefused, match=f"{REF} version 19: events deleted"):
        signed.checkpoint()
    assert len(checkpoint_files(signed.directory)) == 1


def test_a_removed_case_is_detected_against_the_checkpoint(signed: Signed) -> None:
    engine, events = attacker(signed.backend)
    with engine.begin() as conn:
        conn.execute(delete(events).where(events.c.originator_id == UUID(CID2)))
        for table in (schema.chain, schema.chain_signatures, schema.commands):
            conn.execute(delete(table).where(table.c.case_id == CID2))
        for table in (schema.case_index, schema.track_index, schema.case_threats):
            conn.execute(delete(table).where(table.c.reference == REF2))
    failure = one_failure(signed.audit())
    assert failure == (f"{REF2}: the case was removed: checkpoint-0000000001.json sealed it at "
                       "version 2")
    assert not signed.audit(CID2).ok


def test_a_role_added_in_the_users_table_is_detected_and_not_granted(signed: Signed) -> None:
    engine, _ = attacker(signed.backend)
    with engine.begin() as conn:
        conn.execute(update(schema.users).where(schema.users.c.username == "olga")
                     .values(roles="case_officer,head"))
    failure = one_failure(signed.audit())
    assert failure.startswith("users log: audit chain broken at version 3: the users table "
                              "differs from the state signed")
    assert signed.store.user_roles("olga") == {"case_officer"}  # the doors do not grant it
    # A later, legitimate change of another user does not sign the tampered row along.
    signed.store.users.add("lina", "Lina", "lina@secretariat.example.org", ["ministry_liaison"],
                           actor="hana")
    assert one_failure(signed.audit()).startswith(
        "users log: audit chain broken at version 4: the users table differs")
    signed.store.set_password("olga", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
    with engine.begin() as conn:  # a password hash of the attacker's choosing
        conn.execute(update(schema.users).where(schema.users.c.username == "olga")
                     .values(password_hash="$argon2id$v=19$m=65536,t=3,p=4$bWluZQ$bWluZQ"))
    assert signed.store.password_hash("olga") is None  # not what the users log recorded
    assert [d.username for d in signed.store.verify_users().differences] == ["olga"]


def test_a_removed_users_log_grants_no_roles_once_a_checkpoint_sealed_it(signed: Signed) -> None:
    """Deleting the whole users log would otherwise leave the table as the only registry (as
    before the log existed)."""
    engine, events = attacker(signed.backend)
    with engine.begin() as conn:
        conn.execute(delete(events).where(events.c.originator_id == USERS_LOG_ID))
        for table in (schema.chain, schema.chain_signatures):
            conn.execute(delete(table).where(table.c.case_id == str(USERS_LOG_ID)))
        conn.execute(update(schema.users).where(schema.users.c.username == "olga")
                     .values(roles="case_officer,head"))
    assert one_failure(signed.audit()) == (
        "users log: the users log was removed: checkpoint-0000000001.json sealed it at version 3")
    signed.store.checkpoint_dir = signed.directory
    assert signed.store.user_roles("olga") == set() and signed.store.user_roles("hana") == set()
    signed.store.checkpoint_dir = None  # a registry from before the log: the table decides
    assert signed.store.user_roles("olga") == {"case_officer", "head"}


# ------------------------------------------------------------------ downgrades and legacy links
def test_removed_signatures_are_not_taken_for_legacy_links(signed: Signed) -> None:
    engine, _ = attacker(signed.backend)
    sg = schema.chain_signatures
    with engine.begin() as conn:
        conn.execute(delete(sg).where((sg.c.case_id == CID) & (sg.c.version == 5)))
    assert one_failure(signed.audit()).startswith(
        f"{REF}: audit chain broken at version 5: the link has no signature although earlier")
    with engine.begin() as conn:
        conn.execute(delete(sg).where(sg.c.case_id == CID))  # every signature of the case
    assert one_failure(signed.audit()) == (
        f"{REF}: audit chain broken at version 1: the link is unsigned but "
        "checkpoint-0000000001.json allows unsigned links only up to version 0")


def test_legacy_unsigned_links_verify_and_the_first_checkpoint_seals_them(backend: Backend,
                                                                          tmp_path: Path) -> None:
    old = CaseStore(backend.url, backend.key)  # as the code before signing wrote it
    old.open_case(**open_args(REF))
    old.execute(REF, "add_further_information", {"at": T0, "information": "x"}, "olga", "i1")
    old.close()
    signer = ChainSigner.generate()
    store = CaseStore(backend.url, backend.key, signer=signer)
    ctx = Signed(backend, signer, tmp_path / "checkpoints", store)
    try:
        store.execute(REF, "add_further_information", {"at": T0, "information": "y"}, "olga", "i2")
        report = store.verify(REF)
        assert (report.ok, report.signed, report.unsigned) == (True, 1, 2)
        assert "2 unsigned links from before signing, covered only by a checkpoint" in \
            report.describe()
        before = ctx.audit()
        assert before.ok and "no checkpoint yet" in before.lines[-1]
        ctx.checkpoint()
        assert ctx.audit().ok and ctx.audit().unsigned_only_by_checkpoint == 1
        # Without the key, nothing more may be written to a signed chain.
        unsigned = CaseStore(backend.url, backend.key)
        with pytest.raises(UnsignedWriteRefused, match="APPEALS_CHAIN_SIGNING_KEY_FILE"):
            unsigned.execute(REF, "add_further_information", {"at": T0, "information": "z"},
                             "olga", "i3")
        unsigned.close()
        # A rewrite of an old unsigned link, the whole chain recomputed: caught by the seal.
        engine, events = attacker(backend)
        with engine.begin() as conn:
            conn.execute(update(schema.chain).where((schema.chain.c.case_id == CID)
                                                    & (schema.chain.c.version == 2))
                         .values(actor="hana"))
            recompute_chain(conn, events, CID)
        failure = one_failure(ctx.audit())
        assert failure.startswith(f"{REF}: audit chain broken at version 3: the link's signature")
    finally:
        store.close()


def test_a_changed_checkpoint_file_is_detected(signed: Signed) -> None:
    path = checkpoint_files(signed.directory)[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o440  # written once, read-only
    doc = json.loads(path.read_text())
    doc["chains"] = [e for e in doc["chains"] if e["chain"] != CID2]
    path.chmod(0o640)
    path.write_text(json.dumps(doc))
    failures = signed.audit().failures
    assert any("checkpoint-0000000001.json: the checkpoint's signature: the signature does not "
               "verify" in f for f in failures), failures


def test_a_checkpoint_follows_each_close_and_checkpoints_chain(signed: Signed) -> None:
    writer = Checkpointer(signed.store.engine, signed.store.recorder, signed.signer,
                          signed.keys, signed.directory)
    signed.store.after_close = writer.after_close
    signed.store.execute(REF2, "close", {"at": T0, "outcome": "resolved", "summary": "Done."},
                         "hana", "r2-z1")
    files = checkpoint_files(signed.directory)
    assert [p.name for p in files] == ["checkpoint-0000000001.json", "checkpoint-0000000002.json"]
    second = json.loads(files[1].read_text())
    assert second["sequence"] == 2 and second["previous"]
    assert {e["ref"]: e["version"] for e in second["chains"]} == {
        REF: 19, REF2: 3, "users log": 3}
    assert str(USERS_LOG_ID) in {e["chain"] for e in second["chains"]}
    assert signed.audit().ok


def test_the_command_needs_only_the_public_key_and_names_case_and_version(
        signed: Signed, tmp_path: Path) -> None:
    """`appeals audit store` as an auditor runs it: database URL, public key file and checkpoint
    directory; no cipher key, no signing key, nobody signed in."""
    keys = tmp_path / "auditor.pub"
    keys.write_text(signed.keys.export())
    env = {**os.environ, "APPEALS_VAR_DIR": str(tmp_path / "auditor-var"),
           "APPEALS_DATABASE_URL": signed.backend.url,
           "APPEALS_CHAIN_PUBLIC_KEYS_FILE": str(keys),
           "APPEALS_CHECKPOINT_DIR": str(signed.directory)}

    def appeals(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "audit", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)

    good = appeals("store")
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines()[-1] == "3 chains, 24 events: OK"
    assert appeals("store", "--case", REF2).stdout.splitlines()[-1] == "1 chains, 2 events: OK"
    assert appeals("public-key").stdout == signed.keys.export()
    engine, events = attacker(signed.backend)
    with engine.begin() as conn:
        conn.execute(delete(events).where(events.c.originator_id == UUID(CID2)))
        for table in (schema.chain, schema.chain_signatures):
            conn.execute(delete(table).where(table.c.case_id == CID2))
    bad = appeals("store", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["failures"] == [
        f"{REF2}: the case was removed: checkpoint-0000000001.json sealed it at version 2"]
    assert not (tmp_path / "auditor-var" / "keys").exists()  # no key was created or needed


# ------------------------------------------------------------ audit after Temporal's retention
async def test_a_closed_case_temporal_no_longer_holds_is_verified_against_the_checkpoint(
        signed: Signed, time_skipping: WorkflowEnvironment) -> None:
    """The real Temporal test server holds no history of these cases (as after its retention):
    the cross-check says so and the closed case is verified against the checkpoint instead."""
    client = time_skipping.client
    report = await verify_case(signed.store, client, REF, checkpoint_dir=signed.directory)
    assert report["ok"], report
    assert report["history"]["text"] == (
        f"{REF}: Temporal holds no history for this closed case (retention may have expired); "
        "its decisions were not cross-checked, and the store was verified against "
        "checkpoint-0000000001.json instead")
    # Without a checkpoint directory the old answer stands; an open case is not excused.
    assert not (await verify_case(signed.store, client, REF))["ok"]
    still_open = await verify_case(signed.store, client, REF2, checkpoint_dir=signed.directory)
    assert not still_open["ok"] and "no history" in still_open["history"]["text"]
    # Newest events deleted after the checkpoint: the closed case fails, naming the version.
    engine, events = attacker(signed.backend)
    with engine.begin() as conn:
        conn.execute(delete(events).where((events.c.originator_id == UUID(CID))
                                          & (events.c.originator_version == 19)))
        for table in (schema.chain, schema.chain_signatures):
            conn.execute(delete(table).where((table.c.case_id == CID) & (table.c.version == 19)))
    failed = await verify_case(signed.store, client, REF, checkpoint_dir=signed.directory)
    assert not failed["ok"] and "broken at version 19: events deleted" in \
        failed["history"]["text"]


async def test_the_worker_writes_a_checkpoint_at_each_interval(signed: Signed) -> None:
    from worker.main import write_checkpoints

    writer = Checkpointer(signed.store.engine, signed.store.recorder, signed.signer,
                          signed.keys, signed.directory)
    stop = asyncio.Event()
    task = asyncio.create_task(write_checkpoints(writer, 0.05, stop))
    for _ in range(200):
        if len(checkpoint_files(signed.directory)) >= 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert len(checkpoint_files(signed.directory)) >= 3
    assert signed.audit().ok


def test_verification_while_a_case_is_being_written_reports_nothing_false(signed: Signed) -> None:
    """Links are read before events (and again when a save landed in between): a store in use
    verifies."""
    import threading

    done = threading.Event()

    def write() -> None:
        try:
            for i in range(25):
                signed.store.execute(REF2, "add_further_information",
                                     {"at": T0, "information": f"Live {i}."}, "olga", f"live-{i}")
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    verifier = signed.store.chain_verifier()
    reports = []
    while not done.is_set():
        reports.append(verifier.verify_reference(REF2))
    thread.join()
    assert reports and all(r.ok for r in reports), [r.describe() for r in reports if not r.ok]
    assert verifier.verify_reference(REF2).events == 27


def test_a_database_from_before_signing_verifies_as_legacy(backend: Backend,
                                                          tmp_path: Path) -> None:
    """A copy written by the code before this change has no signature table: the auditor's
    verifier (which creates nothing) reads every link as legacy unsigned."""
    old = CaseStore(backend.url, backend.key)
    second_case(old)
    with old.engine.begin() as conn:
        schema.chain_signatures.drop(conn)
    old.close()
    signer = ChainSigner.generate()
    report = Signed(backend, signer, tmp_path / "none", old).audit()
    assert report.ok, report.failures
    assert f"{REF2}: audit chain verified (2 events; 2 unsigned links from before signing, " \
           "covered only by a checkpoint) (no checkpoint yet: the unsigned links are not " \
           "protected)" in report.lines
    reopened = CaseStore(backend.url, backend.key, signer=signer)  # creates the table
    try:
        reopened.execute(REF2, "add_further_information", {"at": T0, "information": "z"},
                         "olga", "r2-i2")
        assert (reopened.verify(REF2).signed, reopened.verify(REF2).unsigned) == (1, 2)
    finally:
        reopened.close()


def test_an_erased_case_still_verifies_against_the_checkpoints(signed: Signed) -> None:
    """Erasure destroys the case's key, not its ciphertext or its chain: the checkpoint written
    before still verifies the store, and so does the next one (which seals the erasure record)."""
    from datetime import timedelta

    from store.app import CaseErased

    store = signed.store
    store.users.add("hugo", "Hugo", "hugo@secretariat.example.org", ["head"], actor="hana")
    for head in ("hana", "hugo"):
        store.erase(REF, actor=head, at=T0 + timedelta(days=400), retention_days=365,
                    reason_code="retention-expired", reason="Retention period over")
    with pytest.raises(CaseErased):
        store.get(REF)
    report = signed.audit()
    assert report.ok, report.failures
    assert f"{REF}: audit chain verified (19 events)" in report.lines
    signed.checkpoint()
    report = signed.audit()
    assert report.ok, report.failures
    assert report.lines[-1].startswith("checked against checkpoint-0000000002.json")
    assert [e.event for e in store.trail(REF)][-2:] == ["ErasureRequested", "ErasureConfirmed"]
