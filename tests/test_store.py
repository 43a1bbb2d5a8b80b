"""The encrypted event store on a real SQLite file and the real PostgreSQL."""

from __future__ import annotations

import pathlib
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from store.app import CaseAlreadyExists, CaseNotFound, CaseStore, verifier_without_key
from tests.backends import Backend, new_key
from tests.factories import DEFENDER_NAME, INCIDENT_TEXT, T0, open_args, verification

REF = "UA-2026-0001"


def run(store: CaseStore, command: str, cid: str, actor: str = "olga", **args: Any) -> dict[str, Any]:
    return store.execute(REF, command, {"at": T0, **args}, actor, cid)


def every_event_kind(store: CaseStore) -> None:
    """One case that records every kind of event the domain has."""
    store.open_case(**open_args(REF, actions=["rapporteur", "mfa", "emergency_fund"]))
    run(store, "add_further_information", "i0", information="Second summons received.")
    run(store, "escalate", "e1", actor="system", stage="verification", level=1,
        notified=["team@secretariat.example.org"])
    run(store, "extend_deadline", "x1", actor="hana", new_deadline=T0 + timedelta(days=3),
        reason="Waiting for the partner's call")
    run(store, "record_verification", "v1", verification=verification())
    run(store, "grant_consent", "c1", action="rapporteur", conditions="Initials only in public reports")
    run(store, "refuse_consent", "c2", action="emergency_fund", reason="Not needed")
    run(store, "grant_consent", "c3", action="mfa", conditions="")
    run(store, "record_clearance", "k1", actor="lina", action="mfa", granted=True, reason="ok")
    run(store, "record_clearance", "k2", actor="lina", action="rapporteur", granted=False, reason="no")
    run(store, "raise_warning", "w1", actor="system", warning="Address last verified 400 days ago")
    run(store, "hold_dispatch", "d9", actor="system", action="mfa", missing=["incident.ongoing_risk"])
    run(store, "add_further_information", "i1", information="Risk confirmed.",
        intake_changes={"incident": {"ongoing_risk": "Trial on Monday"}})
    run(store, "record_dispatch_failure", "d0", actor="system", action="mfa", reason="550")
    run(store, "record_dispatch", "d1", actor="system", action="mfa", kind="appeal",
        recipients=["desk-ke@mfa.example.org"], message_id="<d1@secretariat.example.org>")
    run(store, "record_reminder", "r1", actor="system", recipients=["olga@secretariat.example.org"],
        message_id="<r1@secretariat.example.org>")
    run(store, "record_response", "p1", action="mfa", summary="Embassy raised the case.")
    run(store, "record_checkin", "h1", summary="Released on bail; no reprisals.", reprisals=False)
    run(store, "close", "z1", actor="hana", outcome="resolved", summary="Released.")


EXPECTED_EVENTS = [
    "Opened", "FurtherInformationAdded", "DeadlineEscalated", "DeadlineExtended",
    "VerificationRecorded", "ConsentGranted", "ConsentRefused", "ConsentGranted",
    "ClearanceGranted", "ClearanceDenied", "StaffWarningRaised", "DispatchHeld",
    "FurtherInformationAdded", "DispatchFailed",
    "MessageDispatched", "ReminderSent", "ResponseRecorded", "DefenderCheckInRecorded", "Closed",
]


def test_every_event_kind_round_trips(backend: Backend) -> None:
    writer = backend.open()
    every_event_kind(writer)
    writer.close()
    reader = backend.open()  # a new process would see the same: nothing cached
    trail = reader.trail(REF)
    assert [e.event for e in trail] == EXPECTED_EVENTS
    assert [e.version for e in trail] == list(range(1, len(EXPECTED_EVENTS) + 1))
    assert trail[5].details["conditions"] == "Initials only in public reports"
    assert trail[8].actor == "lina" and trail[8].command_id == "k1"
    case = reader.get(REF)
    assert case.stage == "closed" and case.outcome == "resolved"
    assert case.intake["defenders"][0]["name"] == DEFENDER_NAME
    assert case.intake["incident"]["ongoing_risk"] == "Trial on Monday" and case.held == {}
    assert reader.verify(REF).ok
    reader.close()


def test_repeated_command_id_records_nothing_new(store: CaseStore) -> None:
    first = store.open_case(**open_args(REF))
    assert store.open_case(**open_args(REF)) == first
    one = run(store, "add_further_information", "i1", information="A")
    again = run(store, "add_further_information", "i1", information="A")
    assert again == one
    assert [e.event for e in store.trail(REF)] == ["Opened", "FurtherInformationAdded"]


def test_opening_the_same_reference_twice_is_refused(store: CaseStore) -> None:
    store.open_case(**open_args(REF))
    args = open_args(REF)
    args["command_id"] = "another"
    with pytest.raises(CaseAlreadyExists):
        store.open_case(**args)


def test_unknown_case_is_not_found(store: CaseStore) -> None:
    with pytest.raises(CaseNotFound):
        store.get("UA-1999-0404")


def test_concurrent_writers_lose_nothing(backend: Backend) -> None:
    setup = backend.open()
    setup.open_case(**open_args(REF))
    setup.close()
    stores = [backend.open() for _ in range(4)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(5):
                run(stores[i], "add_further_information", f"t{i}-{j}", information=f"note {i}-{j}")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reader = stores[0]
    assert len(reader.trail(REF)) == 1 + 4 * 5
    assert reader.verify(REF).ok
    for s in stores:
        s.close()


def _events_sql(backend: Backend, sql: str, **params: Any) -> None:
    s = backend.open()
    with s.engine.begin() as conn:
        conn.execute(text(sql), params)
    s.close()


def _state(backend: Backend, version: int) -> bytes:
    s = backend.open()
    with s.engine.connect() as conn:
        value = conn.execute(text("SELECT state FROM appeals_events WHERE originator_version = :v"),
                             {"v": version}).scalar()
    s.close()
    return bytes(value)


@pytest.fixture
def recorded(backend: Backend) -> Backend:
    s = backend.open()
    every_event_kind(s)
    assert s.verify(REF).ok
    s.close()
    return backend


def _report(backend: Backend) -> Any:
    verifier = verifier_without_key(backend.url)  # an auditor needs no key to verify
    return verifier.verify_reference(REF)


def test_flipped_byte_in_a_stored_event_is_reported_with_case_and_version(recorded: Backend) -> None:
    state = bytearray(_state(recorded, 5))
    state[len(state) // 2] ^= 0x01
    _events_sql(recorded, "UPDATE appeals_events SET state = :s WHERE originator_version = 5",
                s=bytes(state))
    report = _report(recorded)
    assert (report.ok, report.reference, report.broken_version) == (False, REF, 5)
    assert "differs" in report.describe()


def test_deleted_event_is_reported(recorded: Backend) -> None:
    _events_sql(recorded, "DELETE FROM appeals_events WHERE originator_version = 7")
    report = _report(recorded)
    assert (report.ok, report.broken_version) == (False, 7)


def test_two_swapped_events_are_reported(recorded: Backend) -> None:
    three, four = _state(recorded, 3), _state(recorded, 4)
    _events_sql(recorded, "UPDATE appeals_events SET state = :s WHERE originator_version = 3", s=four)
    _events_sql(recorded, "UPDATE appeals_events SET state = :s WHERE originator_version = 4", s=three)
    report = _report(recorded)
    assert (report.ok, report.broken_version) == (False, 3)


def test_deleted_chain_row_and_altered_actor_are_reported(recorded: Backend) -> None:
    _events_sql(recorded, "UPDATE appeals_chain SET actor = 'mallory' WHERE version = 9")
    assert _report(recorded).broken_version == 9
    _events_sql(recorded, "DELETE FROM appeals_chain WHERE version = 2")
    assert _report(recorded).broken_version == 2


def test_no_plaintext_names_or_incident_text_in_the_database(recorded: Backend) -> None:
    needles = [DEFENDER_NAME, "Qwoxlandt", INCIDENT_TEXT, "Vrennick", "Initials only"]
    if recorded.sqlite_path is not None:
        blobs = [p.read_bytes() for p in recorded.sqlite_path.parent.glob("events.sqlite*")]
    else:
        s = recorded.open()
        with s.engine.connect() as conn:
            tables = [r[0] for r in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            blobs = [
                "\n".join(str(r[0]) for r in conn.execute(text(f"SELECT t::text FROM {t} t"))).encode()
                for t in tables
            ]
        s.close()
        assert "appeals_events" in tables
    for needle in needles:
        for blob in blobs:
            assert needle.encode() not in blob
            assert needle.encode().hex().encode() not in blob


def test_the_wrong_key_cannot_read_the_case(recorded: Backend) -> None:
    intruder = recorded.open(key=new_key())
    with pytest.raises(Exception):  # noqa: B017 - any failure to decrypt is the point
        intruder.get(REF)
    intruder.close()


def test_case_index_lists_and_finds_pending_and_overdue(store: CaseStore) -> None:
    store.add_user("olga", "Olga", "olga@secretariat.example.org", ["case_officer"])
    store.add_user("lina", "Lina", "lina@secretariat.example.org", ["ministry_liaison"])
    store.open_case(**open_args(REF, actions=["mfa"]))
    store.open_case(**open_args("UA-2026-0002", actions=["mfa"]))
    store.execute("UA-2026-0002", "record_verification", {"verification": verification(), "at": T0},
                  "olga", "v2")
    store.execute("UA-2026-0002", "grant_consent", {"action": "mfa", "conditions": "", "at": T0},
                  "olga", "c2")
    rows = store.list_cases()
    assert [r["reference"] for r in rows] == ["UA-2026-0002", REF]  # soonest deadline first
    assert store.list_cases(stage="clearance")[0]["reference"] == "UA-2026-0002"
    later = T0 + timedelta(hours=13)
    assert [r["reference"] for r in store.list_cases(overdue_at=later)] == ["UA-2026-0002"]
    assert [r["reference"] for r in store.pending_for("olga", later)] == [REF]
    assert [r["reference"] for r in store.pending_for("lina", later)] == ["UA-2026-0002"]
    assert store.pending_for("lina", later)[0]["overdue"] is True


def test_a_sqlite_event_store_is_readable_by_its_owner_only(tmp_path: pathlib.Path) -> None:
    import stat

    from store.app import CaseStore, sqlite_url
    path = tmp_path / "events.sqlite"
    store = CaseStore(sqlite_url(str(path)), new_key())
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        store.close()


def test_each_read_from_the_aggregate_cache_is_a_copy_of_its_own(store: CaseStore) -> None:
    """Reads from the cache are copies (a pickle round trip, domain.case.copied): what one read
    changes, the next read does not see; and the copy is the case, every field of it."""
    store.open_case(**open_args("UA-2026-0301", actions=["rapporteur", "mfa"]), tracked=True)
    store.execute("UA-2026-0301", "record_verification",
                  {"verification": verification(), "at": T0}, "olga", "c-v")
    first = store.get("UA-2026-0301")
    second = store.get("UA-2026-0301")
    assert first is not second and first.__dict__ == second.__dict__
    assert first.summary() == second.summary()
    first.tracks["mfa"].step = "ended"
    first.intake["country"] = "UG"
    third = store.get("UA-2026-0301")
    assert third.tracks["mfa"].step == "consent" and third.intake["country"] == "KE"
