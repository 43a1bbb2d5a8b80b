"""The intake's structured blocks for disappeared and detained defenders, the helpers that read
them, and the verification's do-no-harm answer (domain/intake.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from domain import errors
from domain.intake import (
    cannot_consent_personally,
    is_disappeared,
    parse_intake,
    parse_verification,
)
from tests.factories import DEFENDER_NAME, T0, intake, verification

TODAY = T0.date()


def with_defender(**fields: Any) -> dict[str, Any]:
    data = intake()
    data["defenders"] = [{**data["defenders"][0], **fields}]
    return data


def parsed_defender(**fields: Any) -> dict[str, Any]:
    defender: dict[str, Any] = parse_intake(with_defender(**fields), today=TODAY)["defenders"][0]
    return defender


def test_blocks_are_optional_and_normalised() -> None:
    plain = parsed_defender()
    assert plain["disappearance"] is None and plain["detention"] is None
    assert not is_disappeared(plain) and not cannot_consent_personally(plain)
    disappeared = parsed_defender(disappearance={
        "last_seen_date": "2026-10-30", "last_seen_place": " Nairobi, Moi Avenue ",
        "nationality": "Kenyan", "date_of_birth": dt.date(1990, 5, 1),  # as YAML reads it
        "forces_believed_responsible": "Police", "steps_by_family": "Asked at two stations.",
    })
    assert disappeared["disappearance"] == {
        "last_seen_date": "2026-10-30", "last_seen_place": "Nairobi, Moi Avenue",
        "nationality": "Kenyan", "date_of_birth": "1990-05-01",
        "forces_believed_responsible": "Police", "steps_by_family": "Asked at two stations.",
    }
    assert is_disappeared(disappeared) and cannot_consent_personally(disappeared)
    detained = parsed_defender(detention={"arrest_date": "2026-10-30", "access_to_lawyer": False})
    assert detained["detention"] == {
        "arrest_date": "2026-10-30", "authority": "", "legal_basis_and_charges": "",
        "place_of_detention": "", "access_to_lawyer": False, "access_to_family": None,
        "incommunicado": None,
    }
    assert not is_disappeared(detained) and not cannot_consent_personally(detained)
    incommunicado = parsed_defender(detention={"incommunicado": True})
    assert cannot_consent_personally(incommunicado) and not is_disappeared(incommunicado)
    # An empty block marks the person; what is known arrives later.
    assert is_disappeared(parsed_defender(disappearance={}))


def test_a_normalised_intake_parses_to_itself() -> None:
    """Further information re-validates the stored intake as a whole."""
    once = parse_intake(with_defender(disappearance={"last_seen_date": "2026-10-30"},
                                      detention={"incommunicado": False}), today=TODAY)
    assert parse_intake(once, today=TODAY) == once


def test_helpers_read_stored_intakes_from_before_the_blocks() -> None:
    old = {"name": DEFENDER_NAME, "role": "journalist"}
    assert not is_disappeared(old) and not cannot_consent_personally(old)
    assert not cannot_consent_personally({"detention": {"incommunicado": None}})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"disappearance": {"last_seen_date": "30/10/2026"}},
         "defenders[0].disappearance.last_seen_date: must be a date YYYY-MM-DD"),
        ({"disappearance": {"last_seen_date": "2999-01-01"}},
         "defenders[0].disappearance.last_seen_date: is in the future"),
        ({"disappearance": {"date_of_birth": 1990}},
         "defenders[0].disappearance.date_of_birth: must be a date YYYY-MM-DD"),
        ({"disappearance": {"last_seen_place": "a\nb"}},
         "defenders[0].disappearance.last_seen_place: must not contain line breaks"),
        ({"disappearance": {"hair_colour": "black"}},
         "defenders[0].disappearance.hair_colour: is not a known field"),
        ({"disappearance": ["2026-10-30"]},
         "defenders[0].disappearance: must be an object with named fields"),
        ({"detention": {"arrest_date": "2026-11-01T10:00"}},
         "defenders[0].detention.arrest_date: must be a date YYYY-MM-DD"),
        ({"detention": {"incommunicado": "yes"}},
         "defenders[0].detention.incommunicado: must be true or false"),
        ({"detention": {"access_to_lawyer": 1}},
         "defenders[0].detention.access_to_lawyer: must be true or false"),
        ({"detention": {"cell": "4"}}, "defenders[0].detention.cell: is not a known field"),
        ({"detention": {"authority": 7}}, "defenders[0].detention.authority: must be text"),
    ],
)
def test_bad_blocks_are_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        parse_intake(with_defender(**fields), today=TODAY)
    assert str(refused.value).startswith(message)
    assert DEFENDER_NAME not in str(refused.value)


def test_an_unknown_key_is_named_without_echoing_a_long_value() -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        parse_intake(with_defender(detention={"x" * 500: True}), today=TODAY)
    assert len(str(refused.value)) < 120


def test_a_verified_threat_must_say_whether_public_action_is_advised() -> None:
    assert parse_verification(verification())["public_action_advised"] is False
    assert parse_verification({**verification(), "public_action_advised": True})[
        "public_action_advised"] is True
    for bad in ({}, {"public_action_advised": None}, {"public_action_advised": "no"},
                {"public_action_advised": 0}):
        data = {k: v for k, v in verification().items() if k != "public_action_advised"} | bad
        with pytest.raises(errors.InvalidInput,
                           match=r"^public_action_advised: is required \(true or false\)$"):
            parse_verification(data)


@pytest.mark.parametrize("verdict", ["unverified", "needs_more_information"])
def test_other_verdicts_default_to_no_public_action(verdict: str) -> None:
    data = {k: v for k, v in verification(verdict).items() if k != "public_action_advised"}
    assert parse_verification(data)["public_action_advised"] is False
    with pytest.raises(errors.InvalidInput, match="public_action_advised"):
        parse_verification({**data, "public_action_advised": "maybe"})
