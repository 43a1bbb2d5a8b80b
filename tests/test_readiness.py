"""What each channel needs before its message may go, and how further information completes it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import errors
from domain.case import Case
from domain.readiness import missing_fields
from tests.factories import T0, open_args
from tests.test_case_rules import at_clearance, opened

COMPLETE = open_args()["intake"]


def intake_without(**changes: object) -> dict[str, object]:
    from domain.intake import parse_intake

    raw = {**COMPLETE, **changes}
    return parse_intake(raw, today=T0.date())


@pytest.mark.parametrize(
    ("action", "changes", "missing"),
    [
        ("rapporteur", {}, []),
        ("rapporteur", {"domestic_steps": ""}, ["domestic_steps"]),
        ("rapporteur", {"incident": {**COMPLETE["incident"], "perpetrators": "", "ongoing_risk": ""}},
         ["incident.perpetrators", "incident.ongoing_risk"]),
        ("rapporteur", {"defenders": [{"name": "A. B."}]}, ["defenders[0].role", "defenders[0].location"]),
        ("rapporteur", {"organisation": {"name": "Org"}},
         ["organisation.contact_name", "organisation.contact_email"]),
        ("mfa", {"domestic_steps": ""}, []),
        ("mfa", {"incident": {**COMPLETE["incident"], "ongoing_risk": ""}}, ["incident.ongoing_risk"]),
        ("emergency_fund", {}, ["fund_request"]),
        ("emergency_fund", {"fund_request": {"amount_eur": 3000, "purpose": "relocation"}}, []),
    ],
)
def test_each_channel_names_the_fields_it_lacks(action: str, changes: dict[str, object],
                                                missing: list[str]) -> None:
    assert missing_fields(action, intake_without(**changes)) == missing


def test_further_information_completes_the_intake_and_releases_held_dispatches() -> None:
    case: Case = opened(domestic_steps="")
    case = at_clearance_of(case)
    case.hold_dispatch("rapporteur", ["domestic_steps"], T0, "system", "h1")
    assert case.held == {"rapporteur": ["domestic_steps"]}
    case.add_further_information("The lawyer's appeal was filed.", T0 + timedelta(hours=1), "olga",
                                 "f1", intake_changes={"domestic_steps": "Appeal filed on 2 Nov."})
    assert case.held == {} and case.intake["domestic_steps"] == "Appeal filed on 2 Nov."
    assert missing_fields("rapporteur", case.intake) == []


def at_clearance_of(case: Case) -> Case:
    from domain.intake import parse_verification
    from tests.factories import verification

    case.record_verification(parse_verification(verification()), T0, "olga", "v1")
    for i, action in enumerate(case.actions):
        case.grant_consent(action, "", T0, "olga", f"c{i}")
    for i, action in enumerate(case.actions):
        case.record_clearance(action, True, "", T0, "lina", f"k{i}")
    return case


def test_intake_changes_are_validated_and_limited() -> None:
    case = at_clearance(["rapporteur"])
    with pytest.raises(errors.InvalidInput, match="intake_changes.country: cannot be changed"):
        case.add_further_information("x", T0, "olga", "f1", intake_changes={"country": "FR"})
    with pytest.raises(errors.InvalidInput, match="country|incident.date"):
        case.add_further_information("x", T0, "olga", "f2",
                                     intake_changes={"incident": {"date": "2999-01-01"}})
    with pytest.raises(errors.GrantAmountExceeded):
        case.add_further_information("x", T0, "olga", "f3",
                                     intake_changes={"eu_grant": {"amount_eur": 20000, "purpose": "x"}})
    assert len(case.collect_events()) == 3  # opened, verification, consent; no further information


def test_a_dispatch_is_held_only_for_a_sendable_action_with_missing_fields() -> None:
    case = at_clearance(["rapporteur", "mfa", "eu_delegation"])
    case.record_clearance("rapporteur", True, "", T0, "lina", "k1")
    case.record_clearance("mfa", True, "", T0, "lina", "k2")  # eu_delegation still waits
    with pytest.raises(errors.ClearanceMissing):
        case.hold_dispatch("eu_delegation", ["incident.ongoing_risk"], T0, "system", "h2")
    with pytest.raises(errors.InvalidInput, match="missing"):
        case.hold_dispatch("rapporteur", [], T0, "system", "h0")
    case.withdraw_consent("mfa", "no", T0, "olga", "w1")
    with pytest.raises(errors.ConsentMissing):
        case.hold_dispatch("mfa", ["incident.ongoing_risk"], T0, "system", "h1")


def test_public_naming_is_recorded_with_consent_and_checked() -> None:
    from tests.test_case_rules import at_consent

    case = at_consent(["rapporteur", "mfa"])
    case.grant_consent("rapporteur", "Initials only in public reports", T0, "olga", "c1",
                       public_naming="initials_only")
    assert case.actions["rapporteur"]["public_naming"] == "initials_only"
    with pytest.raises(errors.InvalidInput, match="public_naming: must be one of"):
        case.grant_consent("mfa", "", T0, "olga", "c2", public_naming="nicknames")
