"""The secretariat's rules, enforced by the case aggregate (pure domain, no store)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from domain import errors
from domain.case import Case, new_case
from domain.intake import parse_intake, parse_verification
from tests.factories import T0, open_args, verification


def opened(actions: list[str] | None = None, **overrides: Any) -> Case:
    args = open_args(actions=actions, **overrides)
    args["intake"] = parse_intake(args["intake"], today=T0.date())
    return new_case(**args)


def at_consent(actions: list[str] | None = None) -> Case:
    case = opened(actions)
    case.record_verification(parse_verification(verification()), T0, "olga", "v1")
    return case


def at_clearance(actions: list[str]) -> Case:
    case = at_consent(actions)
    for i, action in enumerate(actions):
        case.grant_consent(action, "", T0, "olga", f"c{i}")
    return case


def test_opened_case_waits_for_verification_with_urgency_deadline() -> None:
    case = opened()
    assert case.stage == "verification"
    assert case.deadline == T0 + timedelta(hours=24)  # high urgency


def test_verified_threat_moves_to_consent_with_risk_level_from_matrix() -> None:
    case = at_consent()
    assert case.stage == "consent"
    assert case.risk_level == "critical"  # 4 x 4 = 16
    assert case.deadline == T0 + timedelta(hours=12)


def test_unverified_threat_closes_the_case() -> None:
    case = opened()
    case.record_verification(parse_verification(verification("unverified")), T0, "olga", "v1")
    assert case.stage == "closed" and case.outcome == "unverified"


def test_needing_more_information_stays_at_verification() -> None:
    case = opened()
    case.record_verification(parse_verification(verification("needs_more_information")), T0,
                             "olga", "v1")
    assert case.stage == "verification"


def test_consent_before_verification_is_out_of_order() -> None:
    with pytest.raises(errors.StageOrderError, match="verification stage"):
        opened().grant_consent("mfa", "", T0, "olga", "c1")


def test_verification_cannot_be_repeated_after_consent_stage_begins() -> None:
    with pytest.raises(errors.StageOrderError):
        at_consent().record_verification(parse_verification(verification()), T0, "olga", "v2")


def test_consent_for_an_action_not_proposed_is_unknown() -> None:
    with pytest.raises(errors.UnknownAction, match="emergency_fund"):
        at_consent(["mfa"]).grant_consent("emergency_fund", "", T0, "olga", "c1")


def test_consent_cannot_be_decided_twice() -> None:
    case = at_consent(["mfa", "rapporteur"])
    case.grant_consent("mfa", "", T0, "olga", "c1")
    with pytest.raises(errors.ActionAlreadyDecided):
        case.refuse_consent("mfa", "changed mind", T0, "olga", "c2")


def test_verifier_cannot_clear() -> None:
    case = at_clearance(["mfa"])
    with pytest.raises(errors.FourEyesViolation, match="verified the threat cannot also clear"):
        case.record_clearance("mfa", True, "", T0, "olga", "k1")


def test_dispatch_without_consent_is_refused() -> None:
    case = at_clearance(["mfa", "rapporteur"])
    case.record_clearance("mfa", True, "", T0, "lina", "k1")
    case.withdraw_consent("rapporteur", "grantee asked", T0, "olga", "w1")
    assert case.stage == "dispatch"
    with pytest.raises(errors.ConsentMissing, match="rapporteur"):
        case.record_dispatch("rapporteur", "appeal", ["a@example.org"], "<m@x>", T0, "system", "d1")


def test_dispatch_without_required_clearance_is_refused() -> None:
    case = at_clearance(["mfa", "emergency_fund"])  # emergency fund needs no clearance by default
    assert case.stage == "clearance"
    with pytest.raises(errors.StageOrderError):
        case.record_dispatch("emergency_fund", "appeal", ["f@example.org"], "<m@x>", T0, "s", "d")
    case.record_clearance("mfa", False, "not now", T0, "lina", "k1")
    with pytest.raises(errors.ClearanceMissing, match="denied"):
        case.record_dispatch("mfa", "appeal", ["m@example.org"], "<m@x>", T0, "system", "d1")
    case.record_dispatch("emergency_fund", "appeal", ["f@example.org"], "<m@x>", T0, "s", "d2")
    assert case.stage == "follow_up"


def test_consent_cannot_be_withdrawn_after_the_message_went_out() -> None:
    case = at_clearance(["mfa"])
    case.record_clearance("mfa", True, "", T0, "lina", "k1")
    case.record_dispatch("mfa", "appeal", ["m@example.org"], "<m@x>", T0, "system", "d1")
    with pytest.raises(errors.AlreadyDispatched):
        case.withdraw_consent("mfa", "too late", T0, "olga", "w1")


def test_eu_grant_over_ten_thousand_euros_is_refused() -> None:
    with pytest.raises(errors.GrantAmountExceeded, match="10,000"):
        parse_intake(open_args(eu_grant={"amount_eur": 10_001, "purpose": "relocation"})["intake"],
                     today=T0.date())


def test_nothing_but_reads_after_close() -> None:
    case = opened()
    case.close("duplicate", "Same as UA-2026-0000", T0, "hana", "x1")
    for attempt in (
        lambda: case.add_further_information("more", T0, "olga", "i1"),
        lambda: case.escalate("verification", 1, [], T0, "system", "e1"),
        lambda: case.close("resolved", "", T0, "hana", "x2"),
        lambda: case.record_verification(parse_verification(verification()), T0, "olga", "v1"),
    ):
        with pytest.raises(errors.CaseClosed):
            attempt()


def test_escalation_goes_up_one_level_at_a_time_and_restarts_the_clock() -> None:
    case = opened()
    later = T0 + timedelta(hours=24)
    case.escalate("verification", 1, ["team@example.org"], later, "system", "e1")
    assert case.escalation_level == 1 and case.deadline == later + timedelta(hours=24)
    with pytest.raises(errors.EscalationOutOfOrder):
        case.escalate("verification", 3, [], later, "system", "e3")


def test_extension_must_move_the_deadline_later() -> None:
    case = opened()
    assert case.deadline is not None
    with pytest.raises(errors.DeadlineNotLater):
        case.extend_deadline(case.deadline - timedelta(hours=1), "why", T0, "hana", "x1")
    case.extend_deadline(case.deadline + timedelta(days=1), "waiting for lawyer", T0, "hana", "x2")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("defenders", [], "defenders: needs at least one entry"),
        ("incident", None, "incident: must be an object"),
        ("country", "XX", "country: must be an ISO 3166-1 alpha-2"),
        ("incident", {"date": "2999-01-01", "place": "x", "description": "y"},
         "incident.date: is in the future"),
        ("defenders", [{"name": "Ana\r\nBcc: x@evil.example"}],
         "defenders[0].name: must not contain line breaks"),
        ("defenders", [{"name": "A" * 201}], "defenders[0].name: is too long"),
        ("threat_types", ["alien_abduction"], "threat_types[0]: must be one of"),
        ("requested_actions", ["mfa", "teleport"], "requested_actions[1]: must be one of"),
        ("urgency", "whenever", "urgency: must be one of"),
    ],
)
def test_bad_intake_names_the_field_and_the_reason(field: str, value: Any, message: str) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        parse_intake(open_args(**{field: value})["intake"], today=T0.date())
    assert str(info.value).startswith(message)


def test_incident_text_over_a_sane_size_is_refused() -> None:
    incident = {"date": "2026-11-01", "place": "x", "description": "y" * 20_001}
    with pytest.raises(errors.InvalidInput, match="incident.description: is too long"):
        parse_intake(open_args(incident=incident)["intake"], today=T0.date())


def test_rejection_messages_carry_no_personal_data() -> None:
    name = "Zephyrine Qwoxlandt"
    with pytest.raises(errors.InvalidInput) as info:
        parse_intake(open_args(country=name)["intake"], today=T0.date())
    assert name not in str(info.value)


def test_a_malformed_verification_is_refused_by_the_aggregate_itself() -> None:
    case = opened()
    with pytest.raises(errors.InvalidInput, match="probability"):
        case.record_verification(verification(probability=9), T0, "olga", "v1")
    assert case.stage == "verification" and len(case.collect_events()) == 1  # only Opened
