"""Random command sequences through the real store (SQLite file): the invariants always hold."""

from __future__ import annotations

import contextlib
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import CaseRuleError
from store.app import CaseStore, sqlite_url
from tests.backends import new_key
from tests.factories import T0, open_args, verification

REF = "UA-2026-0100"
ACTIONS = ["rapporteur", "mfa", "eu_delegation", "emergency_fund"]
ACTORS = ["olga", "lina", "hana", "system"]

action = st.sampled_from(ACTIONS)
commands = st.one_of(
    st.builds(lambda v: ("record_verification", {"verification": verification(v)}),
              st.sampled_from(["verified", "verified", "unverified", "needs_more_information"])),
    st.builds(lambda a: ("grant_consent", {"action": a, "conditions": ""}), action),
    st.builds(lambda a: ("refuse_consent", {"action": a, "reason": "no"}), action),
    st.builds(lambda a: ("withdraw_consent", {"action": a, "reason": "changed"}), action),
    st.builds(lambda a, g: ("record_clearance", {"action": a, "granted": g, "reason": ""}),
              action, st.booleans()),
    st.builds(lambda a: ("record_dispatch", {"action": a, "kind": "appeal",
                                             "recipients": ["x@example.org"],
                                             "message_id": "<m@example.org>"}), action),
    st.builds(lambda a: ("record_dispatch_failure", {"action": a, "reason": "550"}), action),
    st.builds(lambda a: ("record_response", {"action": a, "summary": "ok"}), action),
    st.just(("add_further_information", {"information": "more"})),
    st.builds(lambda lvl: ("escalate", {"stage": "verification", "level": lvl, "notified": []}),
              st.integers(1, 3)),
    st.just(("record_checkin", {"summary": "fine", "reprisals": False})),
    st.sampled_from(["resolved", "duplicate"]).map(
        lambda o: ("close", {"outcome": o, "summary": ""})),
)


def check_trail(store: CaseStore) -> None:
    """Replays the stored trail and checks the rules held at every step."""
    consent: dict[str, str] = {}
    clearance: dict[str, str] = {}
    needs = set(store.get(REF).actions) & {"rapporteur", "mfa", "eu_delegation"}
    closed = False
    for entry in store.trail(REF):
        assert not closed, "an event was recorded after close"
        d = entry.details
        match entry.event:
            case "ConsentGranted":
                consent[d["action"]] = "granted"
            case "ConsentRefused" | "ConsentWithdrawn":
                consent[d["action"]] = "no"
            case "ClearanceGranted":
                clearance[d["action"]] = "granted"
            case "ClearanceDenied":
                clearance[d["action"]] = "denied"
            case "MessageDispatched":
                assert consent.get(d["action"]) == "granted", "dispatched without consent"
                if d["action"] in needs:
                    assert clearance.get(d["action"]) == "granted", "dispatched without clearance"
            case "Closed":
                closed = True
    assert store.verify(REF).ok


def happy_prefix(requested: list[str]) -> list[tuple[tuple[str, dict[str, Any]], str]]:
    """A valid walk to dispatch, so that random steps also land where messages go out."""
    steps: list[tuple[tuple[str, dict[str, Any]], str]] = [
        (("record_verification", {"verification": verification()}), "olga")]
    steps += [(("grant_consent", {"action": a, "conditions": ""}), "olga") for a in requested]
    steps += [(("record_clearance", {"action": a, "granted": True, "reason": ""}), "lina")
              for a in requested]
    return steps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(commands, st.sampled_from(ACTORS)), max_size=25),
       st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=4, unique=True), st.booleans())
def test_random_commands_never_break_the_rules(steps: list[tuple[tuple[str, dict[str, Any]], str]],
                                                requested: list[str], prefix: bool) -> None:
    if prefix:
        steps = happy_prefix(requested) + steps
    with tempfile.TemporaryDirectory() as tmp:
        store = CaseStore(sqlite_url(str(Path(tmp) / "e.sqlite")), new_key())
        try:
            store.open_case(**open_args(REF, actions=requested))
            for i, ((command, args), actor) in enumerate(steps):
                # A rejected command records nothing; the trail check proves it.
                with contextlib.suppress(CaseRuleError):
                    store.execute(REF, command, {**args, "at": T0 + timedelta(minutes=i)}, actor,
                                  f"cmd-{i}")
            check_trail(store)
        finally:
            store.close()
