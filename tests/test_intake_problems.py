"""Every bad field of an intake at once (domain.intake.intake_problems), for forms that mark them
all; parse_intake still raises the first of them, exactly as before."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from domain.errors import InvalidInput
from domain.intake import intake_problems, parse_intake
from tests.factories import T0, intake


def fields(raw: Any) -> list[str]:
    return [p.field for p in intake_problems(raw, today=T0.date())]


def test_a_valid_intake_has_no_problems_and_parses_the_same() -> None:
    raw = intake()
    assert intake_problems(raw, today=T0.date()) == []
    assert parse_intake(raw, today=T0.date())["country"] == raw["country"].upper()


def test_five_bad_fields_are_all_named_in_reading_order() -> None:
    raw = intake()
    raw["organisation"] = {**raw["organisation"], "name": "", "contact_email": "not-an-address"}
    raw["defenders"] = [{**raw["defenders"][0], "age": 300}, {"name": ""}]
    raw["country"] = "Kenya"
    raw["incident"] = {**raw["incident"], "date": "12/11/2026", "place": ""}
    raw["urgency"] = "soon"
    names = fields(raw)
    assert names == ["organisation.name", "organisation.contact_email", "defenders[0].age",
                     "defenders[1].name", "country", "incident.date", "incident.place", "urgency"]
    # parse_intake raises the first of them, and only it.
    with pytest.raises(InvalidInput) as first:
        parse_intake(copy.deepcopy(raw), today=T0.date())
    assert first.value.field == names[0]


def test_unknown_fields_overlaps_and_grant_limits_are_gathered_too() -> None:
    raw = intake(refused_actions=["mfa"], eu_grant={"amount_eur": 50_000, "purpose": "relocation"})
    raw["requested_actions"] = ["mfa", "rapporteur"]
    raw["domestic_step"] = "misspelt"
    problems = intake_problems(raw, today=T0.date())
    assert [p.field for p in problems] == ["domestic_step"]  # an unknown key stops the reading
    del raw["domestic_step"]
    by_field = {p.field: p.reason for p in intake_problems(raw, today=T0.date())}
    assert by_field["refused_actions"] == "mfa is also requested"
    assert "cannot exceed" in by_field["eu_grant.amount_eur"]


def test_reasons_carry_no_values() -> None:
    raw = intake()
    secret = "Amina Secret-Name\x07"
    raw["defenders"] = [{**raw["defenders"][0], "name": secret}]
    raw["incident"] = {**raw["incident"], "description": "x" * 20_001}
    problems = intake_problems(raw, today=T0.date())
    assert {p.field for p in problems} == {"defenders[0].name", "incident.description"}
    assert all("Amina" not in str(p) for p in problems)
