"""The benchmark's own case data: one invented intake, a verification, the staff who decide, and
the arguments of `CaseStore.open_case`. Nothing here names a real person."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from domain.policies import clearance_required, deadline_table

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)

# (user name, role): the staff the benchmark's cases are decided by.
USERS = [("olga", "case_officer"), ("omar", "case_officer"), ("lina", "ministry_liaison"),
         ("hana", "head"), ("aldo", "auditor")]
# The password the benchmark gives its staff for `appeals login` (a throwaway store).
PASSWORD = "benchmark staff passphrase"

_INTAKE: dict[str, Any] = {
    "organisation": {"name": "Benchmark Observatory", "contact_name": "Bench Contact",
                     "contact_email": "contact@bench.example.org", "women_or_trans_led": True},
    "defenders": [{"name": "Bench Defender", "role": "journalist", "gender": "woman", "age": 34,
                   "location": "Nairobi", "at_risk_groups": ["journalists", "women"]}],
    "country": "KE",
    "incident": {"date": "2026-11-01", "place": "Nairobi", "description": "An invented incident.",
                 "perpetrator_kind": "state", "perpetrators": "Police",
                 "ongoing_risk": "Trial set for next week"},
    "threat_types": ["arbitrary_arrest_or_detention", "judicial_harassment"],
    "rights_affected": ["freedom_of_expression", "liberty_and_security"],
    "requested_actions": ["rapporteur", "mfa", "eu_delegation"],
    "refused_actions": ["emergency_fund"],
    "urgency": "high",
    "domestic_steps": "A lawyer filed for release.",
    "eu_grant": {"amount_eur": 8000, "purpose": "legal fees"},
}


def intake(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(_INTAKE)
    data.update(overrides)
    return data


def verification(verdict: str = "verified", probability: int = 4, impact: int = 4) -> dict[str, Any]:
    return {
        "threat_questions": {
            "facts": "Arrest confirmed by two witnesses.",
            "pattern": "Third summons this year.",
            "objective": "Silence reporting.",
            "source_of_threat": "Local police command.",
            "likely_carried_out": "Trial scheduled.",
        },
        "vulnerabilities": "Works alone.",
        "capacities": "Strong network of lawyers.",
        "probability": probability,
        "impact": impact,
        "verdict": verdict,
        "verifying_source": "Trusted partner",
        "do_no_harm": "Prefer quiet diplomacy.",
        "public_action_advised": False,
    }


def open_args(reference: str, actions: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The arguments of CaseStore.open_case for an invented case."""
    data = intake(**overrides)
    if actions is not None:
        data["requested_actions"] = actions
        data["refused_actions"] = []
        if "eu_delegation" not in actions:
            data["eu_grant"] = None
    return {
        "reference": reference,
        "intake": data,
        "clearance_required": clearance_required(data["requested_actions"]),
        "deadline_table": deadline_table(),
        "at": T0,
        "actor": "olga",
        "command_id": f"{reference}:open",
    }
