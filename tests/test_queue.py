"""The case queue: filters both doors share (desk.queue, CaseStore.list_cases), and who holds a
case (claim and reassign: events CaseClaimed / CaseReassigned) with the desk's rules, on real
stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from desk.cases import Desk, Person
from desk.errors import CaseNotFound, InvalidRequest, NotAllowed, Rejected
from desk.queue import CaseQuery, countdown
from store.app import CaseStore
from tests.factories import DEFENDER_NAME, T0, open_args, verification

A, B, C = "UA-2026-0001", "UA-2026-0002", "UA-2026-0003"


class _Settings:
    temporal_address = "localhost:7233"
    task_queue = "appeals"


def _desk(store: CaseStore, now: datetime = T0 + timedelta(hours=1)) -> Desk:
    async def no_client() -> Any:
        raise AssertionError("the queue and holders need no Temporal client")
    return Desk(_Settings(), store, no_client, clock=lambda: now)


def _cases(store: CaseStore) -> None:
    store.add_user("olga", "Olga", "olga@example.org", ["case_officer"])
    store.add_user("omar", "Omar", "omar@example.org", ["case_officer"])
    store.add_user("hana", "Hana", "hana@example.org", ["head"])
    store.add_user("lina", "Lina", "lina@example.org", ["ministry_liaison"])
    _open(store, A, actions=["rapporteur", "mfa"])
    _open(store, B, actions=["rapporteur"], country="UG", threat_types=["death_threat"],
          urgency="critical")
    _open(store, C, actions=["rapporteur"])
    store.execute(A, "record_verification", {"verification": verification(), "at": T0},
                  "olga", "a-v")
    consent = {"defender": 0, "given_by": "defender", "relationship": "",
               "channel": "secure_message", "given_at": (T0 - timedelta(days=2)).isoformat()}
    store.execute(A, "grant_consent", {"action": "rapporteur", "at": T0, "consents": [consent],
                                       "publicity": {"0": "initials_only"}}, "olga", "a-c")
    store.execute(C, "close", {"outcome": "resolved", "summary": "", "at": T0}, "olga", "c-z")


def _open(store: CaseStore, reference: str, **kw: Any) -> None:
    store.open_case(**open_args(reference, **kw), tracked=True)


def _refs(rows: list[dict[str, Any]]) -> list[str]:
    return [r["reference"] for r in rows]


def test_filters_search_and_sort_in_one_place(store: CaseStore) -> None:
    _cases(store)
    desk = _desk(store)
    olga = Person("olga")
    every = desk.cases(CaseQuery(), details=True)
    assert sorted(_refs(every)) == [A, B, C]
    row = {r["reference"]: r for r in every}
    assert row[A]["threat_types"] == ["arbitrary_arrest_or_detention", "judicial_harassment"]
    assert row[A]["stage_detail"] == "consent: 1, clearance: 1"
    assert row[B]["country"] == "UG" and row[B]["threat_types"] == ["death_threat"]
    assert row[B]["countdown"].startswith("in ") or row[B]["countdown"].startswith("overdue ")
    assert _refs(desk.cases(CaseQuery(state="open"))) == _refs(
        [r for r in every if r["reference"] != C])
    assert _refs(desk.cases(CaseQuery(state="closed"))) == [C]
    assert _refs(desk.cases(CaseQuery(q="0002"))) == [B]
    assert _refs(desk.cases(CaseQuery(q="ug"))) == [B]  # a country code searches the country
    assert sorted(_refs(desk.cases(CaseQuery(country="ke")))) == [A, C]
    assert _refs(desk.cases(CaseQuery(threat="death_threat"))) == [B]
    # A is verified critical (probability and impact 4); B is critical by urgency; C high.
    assert sorted(_refs(desk.cases(CaseQuery(risk="critical")))) == [A, B]
    assert _refs(desk.cases(CaseQuery(risk="high"))) == [C]
    assert _refs(desk.cases(CaseQuery(stage="consent"))) == [A]  # the earliest track's stage
    assert _refs(desk.cases(CaseQuery(stage="verification"))) == [B]
    assert _refs(desk.cases(CaseQuery(sort="reference"))) == [A, B, C]
    assert _refs(desk.cases(CaseQuery(sort="opened")))[0] == C  # newest first (then reference)
    assert sorted(_refs(desk.cases(CaseQuery(mine="held", state="open"), olga))) == [A, B]
    assert _refs(desk.cases(CaseQuery(mine="held"), Person("omar"))) == []
    late = _desk(store, T0 + timedelta(days=30))
    assert sorted(_refs(late.cases(CaseQuery(overdue=True)))) == [A, B]


@pytest.mark.parametrize(("params", "field"), [
    ([("stage", "lunch")], "stage"),
    ([("risk", "extreme")], "risk"),
    ([("threat", "rudeness")], "threat type"),
    ([("sort", "name")], "sort"),
    ([("state", "frozen")], "state"),
    ([("mine", "yes")], "mine"),
    ([("overdue", "maybe")], "overdue"),
    ([("country", "Kenya")], "country"),
    ([("q", "a%b")], "search"),
    ([("colour", "red")], "filter"),
    ([("stage", "consent"), ("stage", "clearance")], "stage"),
])
def test_unknown_filters_are_refused_by_name(params: list[tuple[str, str]], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        CaseQuery.from_params(params)
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ")


def test_query_parameters_round_trip() -> None:
    query = CaseQuery.from_params([("q", "0042"), ("overdue", "1"), ("sort", "opened"),
                                   ("mine", "held")])
    assert query == CaseQuery(q="0042", overdue=True, sort="opened", mine="held", state="open")
    assert CaseQuery.from_params(query.params().items()) == query
    assert CaseQuery.from_params([]).state == "open"
    assert query.params(sort="reference")["sort"] == "reference"


def test_countdown_reads_like_a_clock() -> None:
    now = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    assert countdown(now + timedelta(days=2, hours=4, minutes=10), now) == "in 2 d 4 h"
    assert countdown(now - timedelta(hours=3, minutes=5), now) == "overdue 3 h"
    assert countdown(now + timedelta(minutes=35), now) == "in 35 min"
    assert countdown(now + timedelta(days=1), now) == "in 1 d"
    assert countdown(None, now) == ""


def test_claim_and_reassign_are_recorded_events_with_checked_rules(store: CaseStore) -> None:
    _cases(store)
    desk = _desk(store)
    olga, omar, hana, lina = (Person(n) for n in ("olga", "omar", "hana", "lina"))

    def go(coro: Any) -> Any:
        return asyncio.run(coro)

    # Only an active case officer may hold a case.
    with pytest.raises(NotAllowed):
        go(desk.claim(lina, A, request_id="r1"))
    with pytest.raises(NotAllowed):
        go(desk.claim(Person("nobody"), A, request_id="r1b"))
    assert go(desk.claim(omar, A, request_id="r2"))["assignee"] == "omar"
    assert go(desk.claim(omar, A, request_id="r2"))["assignee"] == "omar"  # repeated: same answer
    with pytest.raises(Rejected, match="holds this case already"):
        go(desk.claim(omar, A, request_id="r3"))
    # A closed case is not claimed.
    with pytest.raises(Rejected, match="closed"):
        go(desk.claim(omar, C, request_id="r4"))
    with pytest.raises(CaseNotFound):
        go(desk.claim(omar, "UA-2026-0999", request_id="r5"))
    # Reassign: a head, or the holder; to an active case officer only.
    with pytest.raises(NotAllowed):
        go(desk.reassign(olga, A, "olga", request_id="r6"))  # olga no longer holds A
    with pytest.raises(InvalidRequest) as err:
        go(desk.reassign(hana, A, "lina", request_id="r7"))
    assert err.value.field == "case officer" and "lina is not an active case officer" in str(err.value)
    with pytest.raises(InvalidRequest):
        go(desk.reassign(hana, A, "", request_id="r8"))
    assert go(desk.reassign(hana, A, "olga", request_id="r9"))["assignee"] == "olga"
    assert go(desk.reassign(olga, A, "omar", request_id="r10"))["assignee"] == "omar"
    # Nothing refused was recorded; both changes are in the trail and the audit chain holds.
    trail = store.trail(A)
    held = [(e.event, e.actor, e.details.get("holder"), e.details.get("previous"))
            for e in trail if e.event in ("CaseClaimed", "CaseReassigned")]
    assert held == [("CaseClaimed", "omar", None, "olga"),
                    ("CaseReassigned", "hana", "olga", "omar"),
                    ("CaseReassigned", "olga", "omar", "olga")]
    assert store.verify(A).ok
    assert _refs(desk.cases(CaseQuery(mine="held"), omar)) == [A]
    # The officer decisions of A now wait for its holder.
    assert A in _refs(store.pending_for("omar", T0))
    assert A not in _refs(store.pending_for("olga", T0))
    # No personal data in what the refusals said.
    for bad in (lambda: desk.claim(omar, C, request_id="r11"),
                lambda: desk.reassign(hana, A, "lina", request_id="r12")):
        with pytest.raises((Rejected, InvalidRequest)) as refused:
            go(bad())
        assert DEFENDER_NAME not in str(refused.value)


def test_cases_opened_before_tracks_cannot_be_claimed(store: CaseStore) -> None:
    store.add_user("omar", "Omar", "omar@example.org", ["case_officer"])
    store.open_case(**open_args(A, actions=["rapporteur"]))  # the older aggregate
    with pytest.raises(Rejected, match="before per-action tracks"):
        asyncio.run(_desk(store).claim(Person("omar"), A, request_id="old-1"))


def test_the_queue_is_paged_by_the_database_with_its_total(store: CaseStore) -> None:
    """A page of the list and the count of the whole list come from the same filters; the open
    cases by stage and risk are counted by the database too."""
    store.add_user("olga", "Olga", "olga@example.org", ["case_officer"])
    refs = [f"UA-2026-{n:04d}" for n in range(301, 308)]
    for i, ref in enumerate(refs):
        _open(store, ref, actions=["rapporteur"], country="UG" if i % 2 else "KE")
    store.execute(refs[0], "close", {"outcome": "resolved", "summary": "", "at": T0}, "olga",
                  "p-z")
    desk = _desk(store)
    olga = Person("olga")
    everything = _refs(desk.cases(CaseQuery(state="all", sort="reference"), olga))
    pages = [desk.case_page(CaseQuery(state="all", sort="reference"), olga, n, 3)
             for n in (1, 2, 3, 4)]
    assert [t for _, t in pages] == [7] * 4
    assert [r for rows, _ in pages for r in _refs(rows)] == everything == refs
    assert [len(rows) for rows, _ in pages] == [3, 3, 1, 0]
    assert all("countdown" in row and "threat_types" in row for row in pages[0][0])
    rows, total = desk.case_page(CaseQuery(state="open", country="UG"), olga, 1, 50)
    assert total == len(rows) == 3
    assert store.count_cases(state="open", country="KE") == 3
    by_stage, by_risk = store.open_case_counts()
    assert by_stage == {"verification": 6} and by_risk == {"high": 6}
