""""Waiting for me" as one SQL condition (store.waiting.condition) against the Python rules
(store.waiting.decisions), on generated case index and track rows in a real store (an SQLite file,
and PostgreSQL when it answers): every role mix, holders and verifiers, stages, tracks waiting for
each decision, cases without tracks, closed cases and escalation levels. Then the same lists
through the store's pages and the desk's "waiting for me" list, with the queue's filters."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from desk.cases import Desk, Person
from desk.queue import CaseQuery
from domain.decisions import DECISIONS, HEAD, LIAISON, OFFICER
from domain.vocab import Stage
from store import schema, waiting
from store.app import CaseStore

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=3)
ROLE_NAMES = {OFFICER: "o", LIAISON: "l", HEAD: "h", "auditor": "a"}
# One user per mix of roles, named by their initials ("u_oh": case officer and head).
MIXES = [list(mix) for n in range(1, len(ROLE_NAMES) + 1)
         for mix in itertools.combinations(ROLE_NAMES, n)]
USERNAMES = ["u_" + "".join(ROLE_NAMES[r] for r in mix) for mix in MIXES]
# Who else a case may be held or verified by: a user who is gone, and nobody.
OTHERS = ["someone_else", "u_gone"]
STAGES = [s.value for s in Stage]
ACTIONS = ["rapporteur", "mfa", "eu_delegation", "emergency_fund"]
# What a track may wait for: nothing, every decision's name, and a name no decision has.
WAITS = ["", "", *sorted(DECISIONS), "a_future_decision"]
COUNTRIES = ["KE", "UG", "TZ"]
THREATS = ["death_threat", "judicial_harassment"]


def _users(store: CaseStore) -> list[str]:
    for username, mix in zip(USERNAMES, MIXES, strict=True):
        store.add_user(username, username, f"{username}@example.org", mix)
    store.add_user("u_gone", "Gone", "gone@example.org", [OFFICER, LIAISON, HEAD])
    store.users.deactivate("u_gone", reason="left", actor="u_h")
    return [*USERNAMES, "u_gone", "nobody_at_all"]


def _generate(store: CaseStore, count: int, seed: int) -> None:
    """`count` cases written straight into the case index, the track index and the threats."""
    rng = random.Random(seed)
    people = [*USERNAMES, *OTHERS]
    cases, tracks, threats = [], [], []
    for n in range(count):
        reference = f"UA-2026-{n + 1:04d}"
        stage = rng.choice(STAGES)
        deadline = None if rng.random() < 0.1 else T0 + timedelta(hours=rng.randrange(-48, 200))
        cases.append(dict(
            reference=reference, case_id=str(uuid.uuid4()), version=rng.randrange(1, 30),
            stage=stage, urgency=rng.choice(["medium", "high", "critical"]),
            risk_level=rng.choice([None, "low", "high"]), country=rng.choice(COUNTRIES),
            next_deadline=deadline, escalation_level=rng.choice([0, 0, 1, 2, 3]),
            assignee=rng.choice(people), verifier=rng.choice([None, None, *people]),
            outcome="resolved" if stage == "closed" else None,
            opened_at=T0 - timedelta(minutes=n), updated_at=T0))
        if rng.random() < 0.3:
            continue  # a case opened before per-action tracks: no track rows
        for action in rng.sample(ACTIONS, rng.randrange(1, len(ACTIONS) + 1)):
            tracks.append(dict(reference=reference, action=action, step=rng.choice(
                ["consent", "clearance", "fund_choice", "dispatch", "follow_up", "ended"]),
                waiting_for=rng.choice(WAITS), deadline=deadline, escalation_level=0))
        if rng.random() < 0.5:
            threats.append(dict(reference=reference, threat_type=rng.choice(THREATS)))
    with store.engine.begin() as conn:
        conn.execute(insert(schema.case_index), cases)
        conn.execute(insert(schema.track_index), tracks)
        if threats:
            conn.execute(insert(schema.case_threats), threats)


def _python(store: CaseStore, username: str) -> dict[str, list[str]]:
    """Reference -> what waits for this person there, by the Python rules over every row."""
    roles = store.user_roles(username)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(schema.case_index)).mappings()]
        waits = waiting.track_waits(conn, [r["reference"] for r in rows])
    found = {r["reference"]: waiting.decisions(r, waits.get(r["reference"]), username, roles)
             for r in rows}
    return {ref: names for ref, names in found.items() if names}


def _sql(store: CaseStore, username: str) -> set[str]:
    where = waiting.condition(username, store.user_roles(username))
    if where is None:
        return set()
    idx = schema.case_index
    with store.engine.connect() as conn:
        return set(conn.execute(select(idx.c.reference).where(where)).scalars())


def _by_deadline(store: CaseStore, references: set[str]) -> list[str]:
    rows = {r["reference"]: r for r in store.list_cases(state="all")}
    return sorted(references, key=lambda ref: (rows[ref]["next_deadline"] is None,
                                                rows[ref]["next_deadline"] or T0, ref))


def test_the_sql_condition_decides_as_the_python_rules(store: CaseStore) -> None:
    people = _users(store)
    _generate(store, 1500, seed=15)
    seen: set[str] = set()
    for username in people:
        expected = _python(store, username)
        assert _sql(store, username) == set(expected), username
        for names in expected.values():
            seen.update(names)
        # pending_for: the same cases with the same names, soonest deadline first.
        pending = store.pending_for(username, NOW)
        assert [r["reference"] for r in pending] == _by_deadline(store, set(expected))
        assert {r["reference"]: r["waiting"] for r in pending} == expected
    # The generated rows reached every rule: each decision a track or a stage can wait for, and
    # the escalated cases.
    assert seen >= {"record_verification", "grant_consent", "record_clearance", "choose_funds",
                    "record_response", "record_fund_submission", "escalated", "close"}
    # The gone user and an unknown name get nothing; an auditor alone nothing either.
    assert store.pending_for("u_gone", NOW) == []
    assert store.pending_for("nobody_at_all", NOW) == []
    assert store.pending_page("u_a", NOW) == ([], 0)


def test_pages_and_counts_come_from_the_database_with_the_filters(store: CaseStore) -> None:
    _users(store)
    _generate(store, 400, seed=8)
    for username in ("u_o", "u_l", "u_h", "u_olh"):
        expected = _python(store, username)
        everything = _by_deadline(store, set(expected))
        rows, total = store.pending_page(username, NOW, limit=7, offset=7)
        assert total == len(expected)
        assert [r["reference"] for r in rows] == everything[7:14]
        assert all("threat_types" in r and "stage_detail" in r for r in rows)
        index = {r["reference"]: r for r in store.list_cases(state="all")}
        for stage in STAGES:
            rows, total = store.pending_page(username, NOW, stage=stage)
            wanted = [ref for ref in everything if index[ref]["stage"] == stage]
            assert ([r["reference"] for r in rows], total) == (wanted, len(wanted))
        rows, total = store.pending_page(username, NOW, country="UG", overdue_at=NOW,
                                         sort="reference", limit=5)
        wanted = sorted(ref for ref in expected if index[ref]["country"] == "UG"
                        and index[ref]["next_deadline"] is not None
                        and index[ref]["next_deadline"] < NOW)
        assert ([r["reference"] for r in rows], total) == (wanted[:5], len(wanted))
        assert all(r["overdue"] for r in rows)
        assert store.pending_page(username, NOW, state="closed") == ([], 0)


def _desk(store: CaseStore) -> Desk:
    class Settings:
        temporal_address = "localhost:7233"
        task_queue = "appeals"

    async def no_client() -> Any:
        raise AssertionError("the lists need no Temporal client")
    return Desk(Settings(), store, no_client, clock=lambda: NOW)


def test_the_desks_waiting_list_is_the_same_list_paged_and_filtered(store: CaseStore) -> None:
    _users(store)
    _generate(store, 300, seed=3)
    desk = _desk(store)
    index = {r["reference"]: r for r in store.list_cases(state="all")}
    threats: dict[str, set[str]] = {}
    with store.engine.connect() as conn:
        for ref, code in conn.execute(select(schema.case_threats)):
            threats.setdefault(ref, set()).add(code)
    username = "u_ol"
    expected = _python(store, username)
    person = Person(username)
    queries = [CaseQuery(mine="waiting"), CaseQuery(mine="waiting", state="open", sort="opened"),
               CaseQuery(mine="waiting", risk="high"), CaseQuery(mine="waiting", q="KE"),
               CaseQuery(mine="waiting", threat="death_threat", sort="reference"),
               CaseQuery(mine="waiting", q="UA-2026-01", overdue=True)]
    for query in queries:
        q = query.checked()

        def shown(ref: str, q: CaseQuery = q) -> bool:
            row = index[ref]
            return ((q.risk is None or (row["risk_level"] or row["urgency"]) == q.risk)
                    and (q.q is None or q.q.upper() in ref or row["country"] == q.q.upper())
                    and (q.threat is None or q.threat in threats.get(ref, set()))
                    and (not q.overdue or (row["next_deadline"] is not None
                                           and row["next_deadline"] < NOW)))

        listed = desk.cases(query, person)
        wanted = {ref for ref in expected if shown(ref)}
        assert {r["reference"]: r["waiting"] for r in listed} == {r: expected[r] for r in wanted}
        first, total = desk.case_page(query, person, 1, 4)
        second, _ = desk.case_page(query, person, 2, 4)
        assert total == len(listed)
        assert [r["reference"] for r in first + second] == [r["reference"] for r in listed][:8]
        assert all(r["waiting"] and "countdown" in r for r in first + second)
