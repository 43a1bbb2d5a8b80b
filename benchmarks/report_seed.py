"""A seeded mix of cases through the real store, for the report tests and the benchmark: countries
(one with only two cases, so that its counts must be suppressed), threat types, rights, at-risk
groups, actions with consents, refusals, clearances, denials, messages sent, responses, fund
applications, check-ins reporting reprisals and closings with their outcomes, spread over 2025-12
and 2026. Every defender and organisation has a distinctive name, for the leak scans."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.data import intake, verification
from domain.policies import clearance_required, deadline_table
from domain.vocab import AtRiskGroup, Outcome, Right, ThreatType
from store.app import CaseStore

# Weights of the countries; "MV" gets exactly SMALL_COUNTRY_CASES cases (set by `seed`).
COUNTRIES = {"KE": 40, "UG": 20, "CO": 20, "PH": 15, "GT": 5}
SMALL_COUNTRY = "MV"
SMALL_COUNTRY_CASES = 2
ACTIONS = ("rapporteur", "mfa", "eu_delegation", "emergency_fund")
CLOSING_OUTCOMES = [o.value for o in Outcome if o.value != "unverified"]
START = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)


def defender_name(i: int) -> str:
    return f"Zephyrine Qwoxlandt-{i:05d}"


def organisation_name(i: int) -> str:
    return f"Observatoire Vrennick {i:05d}"


def names(count: int) -> list[str]:
    """Every personal or organisation name the seed writes (for scans)."""
    out = []
    for i in range(count):
        out += [defender_name(i), organisation_name(i)]
    return out + ["Qwoxlandt", "Vrennick", "Dalia Orvenne"]


def _consent(at: datetime) -> dict[str, Any]:
    return {"defender": 0, "given_by": "defender", "relationship": "",
            "channel": "secure_message", "given_at": (at - timedelta(hours=1)).isoformat()}


def seed(store: CaseStore, count: int, seed_value: int = 14, prefix: str = "UA-RPT") -> list[str]:
    """Open `count` cases with a seeded mix; returns their references."""
    rng = random.Random(seed_value)
    refs = []
    small = set(rng.sample(range(count), SMALL_COUNTRY_CASES)) if count > 10 else set()
    for i in range(count):
        ref = f"{prefix}-{i:05d}"
        refs.append(ref)
        _one(store, ref, i, rng, SMALL_COUNTRY if i in small else None)
    return refs


def _one(store: CaseStore, ref: str, i: int, rng: random.Random, country: str | None) -> None:
    country = country or rng.choices(list(COUNTRIES), weights=list(COUNTRIES.values()))[0]
    at = START + timedelta(days=rng.randrange(0, 395), hours=rng.randrange(0, 10))
    actions = [a for a in ACTIONS if rng.random() < 0.5] or [rng.choice(ACTIONS)]
    data = intake(
        country=country, urgency=rng.choice(["critical", "high", "medium", "low"]),
        threat_types=rng.sample([t.value for t in ThreatType], rng.randint(1, 3)),
        rights_affected=rng.sample([r.value for r in Right], rng.randint(1, 2)),
        requested_actions=actions, refused_actions=[],
    )
    data["defenders"][0]["name"] = defender_name(i)
    data["defenders"][0]["at_risk_groups"] = rng.sample([g.value for g in AtRiskGroup],
                                                        rng.randint(0, 2))
    data["organisation"]["name"] = organisation_name(i)
    data["incident"]["date"] = (at - timedelta(days=1)).date().isoformat()
    if "eu_delegation" not in actions:
        data["eu_grant"] = None
    if "emergency_fund" in actions:
        data["fund_request"] = {"amount_eur": 3000, "purpose": "relocation"}
    store.open_case(reference=ref, intake=data, clearance_required=clearance_required(actions),
                    deadline_table=deadline_table(), at=at, actor="olga",
                    command_id=f"{ref}:open", tracked=True)
    n = [0]

    def run(command: str, args: dict[str, Any], actor: str = "olga", hours: float = 0) -> None:
        nonlocal at
        at = at + timedelta(hours=hours or rng.uniform(1, 60))
        n[0] += 1
        store.execute(ref, command, {**args, "at": at}, actor, f"{ref}:{n[0]}")

    roll = rng.random()
    if roll < 0.06:
        return  # still waiting for its verification
    if roll < 0.14:
        run("record_verification", {"verification": verification("unverified")})
        return  # closed as unverified
    run("record_verification", {"verification": verification(
        probability=rng.randint(1, 5), impact=rng.randint(1, 5))})
    need_clearance = set(clearance_required(actions))
    for action in actions:
        r = rng.random()
        if r < 0.12:
            continue  # consent still awaited
        if r < 0.27:
            run("refuse_consent", {"action": action, "reason": "Too risky now."})
            continue
        run("grant_consent", {"action": action, "consents": [_consent(at + timedelta(hours=1))],
                              "publicity": {"0": "initials_only"}}, hours=2)
        if action in need_clearance:
            c = rng.random()
            if c < 0.08:
                continue  # waiting for clearance
            granted = c >= 0.22
            run("record_clearance", {"action": action, "granted": granted,
                                     "reason": "" if granted else "Not now."}, actor="lina")
            if not granted:
                continue
        if action == "emergency_fund":
            how = rng.choice([{"fund-a": "to_send"}, {"fund-a": "to_send", "fund-b": "to_submit"}])
            run("choose_funds", {"funds": how, "reason": "Best fit."})
            if rng.random() >= 0.85:
                continue  # not applied to yet
            run("record_dispatch", {"action": action, "kind": "appeal", "recipients": ["fund-a"],
                                    "message_id": f"<{ref}.fa@x>", "fund": "fund-a"})
            if "fund-b" in how:
                run("record_fund_submission", {"fund": "fund-b", "note": "Sent via form."})
        elif rng.random() < 0.9:
            run("record_dispatch", {"action": action, "kind": "appeal",
                                    "recipients": [f"{action}@example.org"],
                                    "message_id": f"<{ref}.{action}@x>"})
        else:
            continue
        if rng.random() < 0.5:
            run("record_response", {"action": action, "summary": "They acknowledged."})
    if rng.random() < 0.3:
        run("record_checkin", {"summary": "She was followed home.", "reprisals": rng.random() < 0.5})
    if rng.random() < 0.45:
        run("close", {"outcome": rng.choice(CLOSING_OUTCOMES), "summary": ""})
