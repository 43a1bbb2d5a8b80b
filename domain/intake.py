"""Intake and decision payloads: validated into plain, normalised dicts.

The domain may import only the standard library, so validation here is a few small readers rather
than a schema library; every failure names the field and the reason (InvalidInput) and nothing of
the value itself, because values can be names or incident text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar

from domain.countries import is_country_code
from domain.errors import GrantAmountExceeded, InvalidInput
from domain.fields import as_date
from domain.policies import EU_GRANT_CAP_EUR
from domain.vocab import (
    Action,
    AtRiskGroup,
    Gender,
    PerpetratorKind,
    Right,
    ThreatType,
    Urgency,
    Verdict,
)

NAME_MAX = 200
LINE_MAX = 500
TEXT_MAX = 20_000
DEFENDERS_MAX = 50
REFERENCE_RE = re.compile(r"^[A-Z]{2,5}-[0-9A-Z]{2,12}(-[0-9A-Z]{1,12}){0,3}$")
EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")
# Line breaks and other control characters in names or addresses would let text escape into mail
# headers or forge lines in reports; long text may contain line breaks and tabs, nothing else.
_CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


class Fields:
    """Reads the fields of one payload through `read(lambda: ...)`: by default the first bad field
    raises (what parse_intake has always done, and what every recorded case was checked with);
    with `gather=True` each bad field is noted in `problems` and reading goes on, so that a form
    can name every bad field at once (intake_problems)."""

    def __init__(self, *, gather: bool = False) -> None:
        self.gather = gather
        self.problems: list[InvalidInput] = []

    def __call__(self, read: Callable[[], T]) -> T | None:
        if not self.gather:
            return read()
        try:
            return read()
        except InvalidInput as err:
            self.problems.append(err)
        except GrantAmountExceeded as err:
            field, _, reason = err.message.partition(": ")
            self.problems.append(InvalidInput(field, reason))
        return None


_RAISE = Fields()


def _obj(data: Any, field: str, known: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    """An object; with `known`, one whose keys are all known (a misspelt key is refused by name
    rather than silently ignored: a `contact_nmae` would otherwise lose the contact person)."""
    if not isinstance(data, Mapping):
        raise InvalidInput(field, "must be an object with named fields")
    if known is not None:
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            prefix = "" if field in ("intake", "verification") else f"{field}."
            raise InvalidInput(f"{prefix}{unknown[0]:.40}", "is not a known field")
    return data


def line(data: Mapping[str, Any], key: str, field: str, *, required: bool = True,
         max_len: int = LINE_MAX) -> str:
    """A one-line text: no line breaks or control characters."""
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInput(field, "is required")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be text")
    if _CONTROL_IN_LINE.search(value):
        raise InvalidInput(field, "must not contain line breaks or control characters")
    value = value.strip()
    if len(value) > max_len:
        raise InvalidInput(field, f"is too long (at most {max_len} characters)")
    return value


def text(data: Mapping[str, Any], key: str, field: str, *, required: bool = True,
         max_len: int = TEXT_MAX) -> str:
    """A free text: line breaks allowed, other control characters not."""
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInput(field, "is required")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be text")
    if _CONTROL_IN_TEXT.search(value):
        raise InvalidInput(field, "must not contain control characters")
    value = value.strip()
    if len(value) > max_len:
        raise InvalidInput(field, f"is too long (at most {max_len} characters)")
    return value


def choice(data: Mapping[str, Any], key: str, field: str, enum: type[E], *,
           default: E | None = None) -> E:
    value = data.get(key)
    if value is None and default is not None:
        return default
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise InvalidInput(field, f"must be one of: {allowed}") from None


def choices(data: Mapping[str, Any], key: str, field: str, enum: type[E], *,
            required: bool = False) -> list[str]:
    values = data.get(key, [])
    if not isinstance(values, list):
        raise InvalidInput(field, "must be a list")
    if required and not values:
        raise InvalidInput(field, "needs at least one entry")
    out: list[str] = []
    for i, value in enumerate(values):
        item = choice({"v": value}, "v", f"{field}[{i}]", enum)
        if item.value not in out:
            out.append(item.value)
    return out


def integer(data: Mapping[str, Any], key: str, field: str, *, low: int, high: int,
            required: bool = True) -> int | None:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be a whole number")
    if not low <= value <= high:
        raise InvalidInput(field, f"must be between {low} and {high}")
    return value


def flag(data: Mapping[str, Any], key: str, field: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(field, "must be true or false")
    return value


def email(data: Mapping[str, Any], key: str, field: str, *, required: bool = True) -> str:
    value = line(data, key, field, required=required, max_len=254)
    if value and not EMAIL_RE.match(value):
        raise InvalidInput(field, "is not a valid email address")
    return value


def reference(value: Any, field: str = "reference") -> str:
    """A case reference: short, upper-case, no personal data (it is the workflow id)."""
    if not isinstance(value, str) or not REFERENCE_RE.match(value):
        raise InvalidInput(field, "must look like UA-2026-0001 (letters, digits and dashes)")
    return value


def _items(data: Mapping[str, Any], key: str, field: str,
           parse: Callable[[Any, str], dict[str, Any] | None], *, max_items: int
           ) -> list[dict[str, Any] | None]:
    values = data.get(key)
    if not isinstance(values, list) or not values:
        raise InvalidInput(field, "needs at least one entry")
    if len(values) > max_items:
        raise InvalidInput(field, f"has too many entries (at most {max_items})")
    return [parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


DEFENDER_FIELDS = ("name", "role", "gender", "age", "location", "at_risk_groups",
                   "disappearance", "detention")


def _defender(data: Any, field: str, today: date, f: Fields = _RAISE) -> dict[str, Any] | None:
    d = f(lambda: _obj(data, field, DEFENDER_FIELDS))
    if d is None:
        return None
    return {
        "name": f(lambda: line(d, "name", f"{field}.name", max_len=NAME_MAX)),
        "role": f(lambda: line(d, "role", f"{field}.role", required=False)),
        "gender": f(lambda: choice(d, "gender", f"{field}.gender", Gender,
                                   default=Gender.UNDISCLOSED).value),
        "age": f(lambda: integer(d, "age", f"{field}.age", low=0, high=120, required=False)),
        "location": f(lambda: line(d, "location", f"{field}.location", required=False)),
        "at_risk_groups": f(lambda: choices(d, "at_risk_groups", f"{field}.at_risk_groups",
                                            AtRiskGroup)),
        "disappearance": f(lambda: _disappearance(d.get("disappearance"),
                                                  f"{field}.disappearance", today)),
        "detention": f(lambda: _detention(d.get("detention"), f"{field}.detention", today)),
    }


# Optional structured blocks per defender, for the UN working groups on enforced disappearances and
# on arbitrary detention. Every field of a block is optional at intake (what is known arrives bit by
# bit); domain.readiness says which ones the letter to OHCHR waits for. A block that is given marks
# the defender: disappeared, or detained (incommunicado when it says so).
DISAPPEARANCE_FIELDS = ("last_seen_date", "last_seen_place", "nationality", "date_of_birth",
                        "forces_believed_responsible", "steps_by_family")
DETENTION_FIELDS = ("arrest_date", "authority", "legal_basis_and_charges", "place_of_detention",
                    "access_to_lawyer", "access_to_family", "incommunicado")


def _block(data: Any, field: str, known: tuple[str, ...]) -> Mapping[str, Any] | None:
    if data is None:
        return None
    return _obj(data, field, known)


def _past_date(data: Mapping[str, Any], key: str, field: str, today: date) -> str | None:
    """An optional calendar date, not in the future, as YYYY-MM-DD text (None when not given).
    YAML files give unquoted dates as dates: those are accepted too."""
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    when = as_date(value.strip() if isinstance(value, str) else value)
    if when is None:
        raise InvalidInput(field, "must be a date YYYY-MM-DD")
    if when > today:
        raise InvalidInput(field, "is in the future")
    return when.isoformat()


def _known_flag(data: Mapping[str, Any], key: str, field: str) -> bool | None:
    """true, false, or None when not known (not given)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidInput(field, "must be true or false")
    return value


def _disappearance(data: Any, field: str, today: date) -> dict[str, Any] | None:
    d = _block(data, field, DISAPPEARANCE_FIELDS)
    if d is None:
        return None
    return {
        "last_seen_date": _past_date(d, "last_seen_date", f"{field}.last_seen_date", today),
        "last_seen_place": line(d, "last_seen_place", f"{field}.last_seen_place", required=False),
        "nationality": line(d, "nationality", f"{field}.nationality", required=False,
                            max_len=NAME_MAX),
        "date_of_birth": _past_date(d, "date_of_birth", f"{field}.date_of_birth", today),
        "forces_believed_responsible": text(d, "forces_believed_responsible",
                                            f"{field}.forces_believed_responsible",
                                            required=False, max_len=2_000),
        "steps_by_family": text(d, "steps_by_family", f"{field}.steps_by_family",
                                required=False, max_len=5_000),
    }


def _detention(data: Any, field: str, today: date) -> dict[str, Any] | None:
    d = _block(data, field, DETENTION_FIELDS)
    if d is None:
        return None
    return {
        "arrest_date": _past_date(d, "arrest_date", f"{field}.arrest_date", today),
        "authority": line(d, "authority", f"{field}.authority", required=False),
        "legal_basis_and_charges": text(d, "legal_basis_and_charges",
                                        f"{field}.legal_basis_and_charges", required=False,
                                        max_len=2_000),
        "place_of_detention": line(d, "place_of_detention", f"{field}.place_of_detention",
                                   required=False),
        "access_to_lawyer": _known_flag(d, "access_to_lawyer", f"{field}.access_to_lawyer"),
        "access_to_family": _known_flag(d, "access_to_family", f"{field}.access_to_family"),
        "incommunicado": _known_flag(d, "incommunicado", f"{field}.incommunicado"),
    }


def is_disappeared(defender: Mapping[str, Any]) -> bool:
    """The intake records the defender as disappeared (a `disappearance` block is given)."""
    return isinstance(defender.get("disappearance"), Mapping)


def is_detained_incommunicado(defender: Mapping[str, Any]) -> bool:
    detention = defender.get("detention")
    return isinstance(detention, Mapping) and detention.get("incommunicado") is True


def cannot_consent_personally(defender: Mapping[str, Any]) -> bool:
    """Disappeared or held incommunicado: consent can only come from relatives or a lawyer."""
    return is_disappeared(defender) or is_detained_incommunicado(defender)


def _country(data: Mapping[str, Any], key: str, field: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not is_country_code(value.upper()):
        raise InvalidInput(field, "must be an ISO 3166-1 alpha-2 country code, e.g. KE")
    return value.upper()


INCIDENT_FIELDS = ("date", "time", "place", "description", "perpetrator_kind", "perpetrators",
                   "ongoing_risk")


def _incident_date(d: Mapping[str, Any], field: str, today: date) -> str:
    raw_date = d.get("date")
    try:
        when = date.fromisoformat(raw_date) if isinstance(raw_date, str) else None
    except ValueError:
        when = None
    if when is None:
        raise InvalidInput(field, "must be a date written YYYY-MM-DD")
    if when > today:
        raise InvalidInput(field, "is in the future")
    return when.isoformat()


def _incident(data: Any, field: str, today: date, f: Fields = _RAISE) -> dict[str, Any] | None:
    d = f(lambda: _obj(data, field, INCIDENT_FIELDS))
    if d is None:
        return None
    return {
        "date": f(lambda: _incident_date(d, f"{field}.date", today)),
        "time": f(lambda: line(d, "time", f"{field}.time", required=False, max_len=50)),
        "place": f(lambda: line(d, "place", f"{field}.place")),
        "description": f(lambda: text(d, "description", f"{field}.description")),
        "perpetrator_kind": f(lambda: choice(
            d, "perpetrator_kind", f"{field}.perpetrator_kind", PerpetratorKind,
            default=PerpetratorKind.UNKNOWN,
        ).value),
        "perpetrators": f(lambda: text(d, "perpetrators", f"{field}.perpetrators",
                                       required=False, max_len=2_000)),
        "ongoing_risk": f(lambda: text(d, "ongoing_risk", f"{field}.ongoing_risk",
                                       required=False, max_len=5_000)),
    }


ORGANISATION_FIELDS = ("name", "contact_name", "contact_email", "women_or_trans_led",
                       "activism_months")


def _organisation(data: Any, field: str, f: Fields = _RAISE) -> dict[str, Any] | None:
    d = f(lambda: _obj(data, field, ORGANISATION_FIELDS))
    if d is None:
        return None
    return {
        "name": f(lambda: line(d, "name", f"{field}.name", max_len=NAME_MAX)),
        "contact_name": f(lambda: line(d, "contact_name", f"{field}.contact_name",
                                       required=False, max_len=NAME_MAX)),
        "contact_email": f(lambda: email(d, "contact_email", f"{field}.contact_email",
                                         required=False)),
        "women_or_trans_led": f(lambda: flag(d, "women_or_trans_led",
                                             f"{field}.women_or_trans_led")),
        "activism_months": f(lambda: integer(d, "activism_months", f"{field}.activism_months",
                                             low=0, high=1200, required=False)),
    }


def _eu_grant(data: Any, field: str) -> dict[str, Any] | None:
    if data is None:
        return None
    d = _obj(data, field, ("amount_eur", "purpose"))
    amount = integer(d, "amount_eur", f"{field}.amount_eur", low=1, high=10**9)
    assert amount is not None
    if amount > EU_GRANT_CAP_EUR:
        raise GrantAmountExceeded(
            f"{field}.amount_eur: an EU emergency grant request cannot exceed "
            f"EUR {EU_GRANT_CAP_EUR:,}"
        )
    return {"amount_eur": amount, "purpose": line(d, "purpose", f"{field}.purpose")}


def _fund_request(data: Any, field: str) -> dict[str, Any] | None:
    if data is None:
        return None
    d = _obj(data, field, ("amount_eur", "purpose", "costs_already_incurred", "in_exile"))
    return {
        "amount_eur": integer(d, "amount_eur", f"{field}.amount_eur", low=1, high=10**7),
        "purpose": line(d, "purpose", f"{field}.purpose"),
        "costs_already_incurred": flag(d, "costs_already_incurred",
                                       f"{field}.costs_already_incurred"),
        "in_exile": flag(d, "in_exile", f"{field}.in_exile"),
    }


INTAKE_FIELDS = ("organisation", "defenders", "country", "incident", "threat_types",
                 "rights_affected", "requested_actions", "refused_actions", "urgency",
                 "domestic_steps", "confidential_information", "eu_grant", "fund_request")


def merge_changes(intake: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The intake with `changes` applied as further information applies them: an object field
    (organisation, incident, fund_request, ...) is merged key by key, any other field replaced.
    Not validated: parse_intake the result."""
    merged = dict(intake)
    for key, value in changes.items():
        old = merged.get(key)
        merged[key] = ({**old, **value} if isinstance(old, dict) and isinstance(value, dict)
                       else value)
    return merged


def parse_intake(data: Any, *, today: date) -> dict[str, Any]:
    """Validate an intake into the normalised dict that the Opened event carries. A key that is
    not a field of the intake (at any level) is refused by name; the first bad field raises."""
    return _read_intake(data, today, _RAISE)


def intake_problems(data: Any, *, today: date) -> list[InvalidInput]:
    """Every bad field of an intake at once (in the order parse_intake reads them; its first is
    the one parse_intake raises), for a form that marks them all; [] when the intake is valid."""
    f = Fields(gather=True)
    _read_intake(data, today, f)
    return f.problems


def _overlap(requested: list[str], refused: list[str]) -> None:
    both = sorted(set(requested) & set(refused))
    if both:
        raise InvalidInput("refused_actions", f"{', '.join(both)} is also requested")


def _grant_needs_delegation(intake: Mapping[str, Any], requested: list[str]) -> None:
    if intake["eu_grant"] and Action.EU_DELEGATION not in requested:
        raise InvalidInput("eu_grant", "needs the eu_delegation action among requested_actions")


def _read_intake(data: Any, today: date, f: Fields) -> dict[str, Any]:
    d = f(lambda: _obj(data, "intake", INTAKE_FIELDS))
    if d is None:
        return {}
    requested = f(lambda: choices(d, "requested_actions", "requested_actions", Action,
                                  required=True))
    refused = f(lambda: choices(d, "refused_actions", "refused_actions", Action))
    if requested is not None and refused is not None:
        f(lambda: _overlap(requested, refused))
    intake = {
        "organisation": _organisation(d.get("organisation"), "organisation", f),
        "defenders": f(lambda: _items(d, "defenders", "defenders",
                                      lambda item, field: _defender(item, field, today, f),
                                      max_items=DEFENDERS_MAX)),
        "country": f(lambda: _country(d, "country", "country")),
        "incident": _incident(d.get("incident"), "incident", today, f),
        "threat_types": f(lambda: choices(d, "threat_types", "threat_types", ThreatType,
                                          required=True)),
        "rights_affected": f(lambda: choices(d, "rights_affected", "rights_affected", Right)),
        "requested_actions": requested,
        "refused_actions": refused,
        "urgency": f(lambda: choice(d, "urgency", "urgency", Urgency).value),
        "domestic_steps": f(lambda: text(d, "domestic_steps", "domestic_steps", required=False,
                                         max_len=5_000)),
        "confidential_information": f(lambda: text(d, "confidential_information",
                                                   "confidential_information", required=False,
                                                   max_len=5_000)),
        "eu_grant": f(lambda: _eu_grant(d.get("eu_grant"), "eu_grant")),
        "fund_request": f(lambda: _fund_request(d.get("fund_request"), "fund_request")),
    }
    if requested is not None:
        f(lambda: _grant_needs_delegation(intake, requested))
    return intake


THREAT_QUESTIONS = ("facts", "pattern", "objective", "source_of_threat", "likely_carried_out")
VERIFICATION_FIELDS = ("threat_questions", "vulnerabilities", "capacities", "probability", "impact",
                       "verdict", "verifying_source", "do_no_harm", "public_action_advised")


_NESTED_FIELDS: dict[str, tuple[str, ...]] = {
    "organisation": ORGANISATION_FIELDS, "incident": INCIDENT_FIELDS,
    "eu_grant": ("amount_eur", "purpose"),
    "fund_request": ("amount_eur", "purpose", "costs_already_incurred", "in_exile"),
}


def check_known_fields(data: Mapping[str, Any], field: str = "") -> None:
    """Refuse (InvalidInput naming it) the first key of a partial intake, such as the changes of
    further information, that is not a field of the intake, at any level; values are not checked
    here (parse_intake does that once they are merged)."""
    prefix = f"{field}." if field else ""
    _obj(data, field or "intake", INTAKE_FIELDS)
    for key, value in data.items():
        if key in _NESTED_FIELDS and isinstance(value, Mapping):
            _obj(value, f"{prefix}{key}", _NESTED_FIELDS[key])
        elif key == "defenders" and isinstance(value, list):
            for i, person in enumerate(value):
                where = f"{prefix}defenders[{i}]"
                if isinstance(person, Mapping):
                    _obj(person, where, DEFENDER_FIELDS)
                    for block, known in (("disappearance", DISAPPEARANCE_FIELDS),
                                         ("detention", DETENTION_FIELDS)):
                        if isinstance(person.get(block), Mapping):
                            _obj(person[block], f"{where}.{block}", known)


def parse_verification(data: Any) -> dict[str, Any]:
    """The threat analysis of docs/design.md section 2.2, normalised.

    `public_action_advised` is the do-no-harm analysis's answer in one word: may anyone act in
    public (statements, press, social media) without endangering the defenders? A verified threat
    must answer it; for the other verdicts nothing is sent and it is False unless given.
    """
    d = _obj(data, "verification", VERIFICATION_FIELDS)
    questions = _obj(d.get("threat_questions"), "threat_questions", THREAT_QUESTIONS)
    verdict = choice(d, "verdict", "verdict", Verdict)
    advised = d.get("public_action_advised")
    if not isinstance(advised, bool) and (verdict is Verdict.VERIFIED or advised is not None):
        raise InvalidInput("public_action_advised", "is required (true or false)")
    return {
        "threat_questions": {
            key: text(questions, key, f"threat_questions.{key}", max_len=5_000)
            for key in THREAT_QUESTIONS
        },
        "vulnerabilities": text(d, "vulnerabilities", "vulnerabilities", max_len=5_000),
        "capacities": text(d, "capacities", "capacities", max_len=5_000),
        "probability": integer(d, "probability", "probability", low=1, high=5),
        "impact": integer(d, "impact", "impact", low=1, high=5),
        "verdict": verdict.value,
        "verifying_source": line(d, "verifying_source", "verifying_source", max_len=NAME_MAX),
        "do_no_harm": text(d, "do_no_harm", "do_no_harm", max_len=5_000),
        "public_action_advised": advised is True,
    }
