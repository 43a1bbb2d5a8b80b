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
        # OHCHR practice: domestic remedies need not be exhausted, perpetrators may be unknown.
        ("rapporteur", {"domestic_steps": ""}, []),
        ("rapporteur", {"incident": {**COMPLETE["incident"], "perpetrators": "", "ongoing_risk": ""}},
         ["incident.ongoing_risk"]),
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


def defenders_with(**blocks: dict[str, object]) -> list[dict[str, object]]:
    return [{**COMPLETE["defenders"][0], **blocks}]


@pytest.mark.parametrize(
    ("changes", "missing"),
    [
        # Nobody is recorded as detained: the account of the incident stands for the facts.
        ({}, []),
        ({"defenders": defenders_with(detention={})},
         ["defenders[0].detention.arrest_date", "defenders[0].detention.place_of_detention"]),
        ({"defenders": defenders_with(detention={"arrest_date": "2026-11-01",
                                                 "authority": "County police"})},
         ["defenders[0].detention.place_of_detention"]),
        ({"defenders": defenders_with(detention={"arrest_date": "2026-11-01",
                                                 "place_of_detention": "Central police station"})},
         []),
        # A disappearance block is not checked while the case is not routed to the working group.
        ({"defenders": defenders_with(disappearance={})}, []),
        ({"defenders": defenders_with(disappearance={}),
          "threat_types": ["enforced_disappearance"]},
         ["defenders[0].disappearance.last_seen_date", "defenders[0].disappearance.last_seen_place"]),
        ({"defenders": [*defenders_with(),
                        {**COMPLETE["defenders"][0], "name": "B. C.",
                         "disappearance": {"last_seen_date": "2026-10-31"}}],
          "threat_types": ["enforced_disappearance", "arbitrary_arrest_or_detention"]},
         ["defenders[1].disappearance.last_seen_place"]),
    ],
)
def test_the_routed_working_groups_need_their_facts_for_each_person_concerned(
        changes: dict[str, object], missing: list[str]) -> None:
    assert missing_fields("rapporteur", intake_without(**changes)) == missing


def test_the_mandates_checked_can_be_given_instead_of_routed() -> None:
    clean = intake_without(defenders=defenders_with(detention={}))
    assert missing_fields("rapporteur", clean, mandates=["human_rights_defenders"]) == []
    assert missing_fields("rapporteur", clean, mandates=["arbitrary_detention"]) == [
        "defenders[0].detention.arrest_date", "defenders[0].detention.place_of_detention"]
    # Other channels do not ask for the working groups' facts.
    assert missing_fields("mfa", clean) == []


def test_further_information_completes_the_intake_and_releases_held_dispatches() -> None:
    case: Case = opened(organisation={**COMPLETE["organisation"], "contact_name": ""})
    case = at_clearance_of(case)
    assert missing_fields("rapporteur", case.intake) == ["organisation.contact_name"]
    case.hold_dispatch("rapporteur", ["organisation.contact_name"], T0, "system", "h1")
    assert case.held == {"rapporteur": ["organisation.contact_name"]}
    case.add_further_information("The contact person is known.", T0 + timedelta(hours=1), "olga",
                                 "f1", intake_changes={"organisation": {"contact_name": "D. O."}})
    assert case.held == {} and case.intake["organisation"]["contact_name"] == "D. O."
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
