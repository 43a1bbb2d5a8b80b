"""Emergency funds for defenders: the directory's entries and which of them fit a case.

The directory is configuration (activities/data/funds.toml); this module only reads plain data.
Matching is a pure function of the case's fund profile, the directory, what was already asked of
which fund, and today's date (passed in). Every suggestion says why it fits and every excluded fund
says why not, because staff decide and must be able to check the reasoning (DESIGN.md section 3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from enum import StrEnum
from typing import Any

from domain.fields import as_date


class FundStatus(StrEnum):
    AVAILABLE = "available"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Purpose(StrEnum):
    """What an emergency grant pays for; a request names one."""

    RELOCATION = "relocation"
    LEGAL_FEES = "legal_fees"
    MEDICAL = "medical"
    SECURITY = "security"
    FAMILY_SUPPORT = "family_support"
    DIGITAL_SECURITY = "digital_security"


class RequiredItem(StrEnum):
    """What a fund asks an application to contain (the directory lists them per fund)."""

    INCIDENT_DESCRIPTION = "incident_description"
    LINK_TO_RIGHTS_WORK = "link_to_rights_work"
    BUDGET = "budget"
    ORGANISATION_DETAILS = "organisation_details"
    ACTIVISM_RECORD = "activism_record"
    WOMEN_OR_TRANS_LED = "women_or_trans_led"
    EXILE_STATUS = "exile_status"
    COSTS_INCURRED = "costs_incurred"
    REFERENCE_CONTACT = "reference_contact"
    SECURITY_PLAN = "security_plan"
    PAYMENT_DETAILS = "payment_details"


class FundDirectoryError(ValueError):
    """An entry of the fund directory is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class FundRules:
    """Eligibility as data. Unset rules (False / None) do not restrict."""

    requires_women_or_trans_led: bool = False
    requires_lgbti: bool = False
    requires_group_min_size: int | None = None
    requires_min_activism_months: int | None = None
    requires_causal_link: bool = False
    requires_time_urgent: bool = False
    excludes_exile: bool = False
    excludes_costs_incurred: bool = False


@dataclass(frozen=True)
class Fund:
    id: str
    name: str
    cap_eur: int | None
    turnaround: str
    rules: FundRules
    status: FundStatus
    last_verified: date
    purposes: frozenset[Purpose]
    # Hours within which the fund answers, where known: orders suggestions for time-urgent cases.
    response_hours: int | None = None
    note: str = ""
    # Where applications go (an example.org stand-in until confirmed with the fund), and what an
    # application must contain, in the fund's order.
    address: str = ""
    required_items: tuple[RequiredItem, ...] = ()


@dataclass(frozen=True)
class FundProfile:
    """What fund matching needs to know about a case (filled from the case by the caller)."""

    women_or_trans_led: bool
    lgbti: bool
    group_size: int
    in_exile: bool
    costs_already_incurred: bool
    activism_months: int | None
    causal_link_to_rights_work: bool
    time_urgent: bool
    purpose: str
    amount_eur: int


@dataclass(frozen=True)
class Suggestion:
    fund_id: str
    name: str
    reasons: tuple[str, ...]
    capped_amount: int
    stale: bool
    last_verified: date
    turnaround: str
    response_hours: int | None = None
    # Things staff must check before applying: a stale entry, another fund asked for the same thing.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exclusion:
    fund_id: str
    name: str
    reasons: tuple[str, ...]


Approached = Iterable[tuple[str, str]]


@dataclass(frozen=True)
class _Check:
    passed: bool
    text: str


def match_funds(
    profile: FundProfile,
    directory: Sequence[Fund],
    approached: Approached,
    today: date,
    max_age_days: int,
) -> list[Suggestion]:
    """The funds to suggest for this request, best first.

    A fund is left out when it is not available, was already approached for the same purpose, does
    not fund the purpose, or its rules exclude the profile (see `explain_exclusions`). Order: for a
    time-urgent case, funds that answer fastest first (known response time before unknown); then
    the larger amount covered; then recently verified entries before stale ones; then by name.
    """
    asked = _approached_set(approached)
    suggestions = [
        _suggest(fund, profile, asked, today, max_age_days)
        for fund in directory
        if not _exclusion_reasons(fund, profile, asked)
    ]

    def order(s: Suggestion) -> tuple[bool, int, int, bool, str]:
        hours = s.response_hours if profile.time_urgent else None
        return (hours is None, hours or 0, -s.capped_amount, s.stale, s.name)

    return sorted(suggestions, key=order)


def explain_exclusions(
    profile: FundProfile, directory: Sequence[Fund], approached: Approached
) -> list[Exclusion]:
    """For every fund that `match_funds` leaves out, all the reasons why, in directory order."""
    asked = _approached_set(approached)
    exclusions = []
    for fund in directory:
        reasons = _exclusion_reasons(fund, profile, asked)
        if reasons:
            exclusions.append(Exclusion(fund.id, fund.name, tuple(reasons)))
    return exclusions


def is_stale(last_verified: date, today: date, max_age_days: int) -> bool:
    """An entry not checked for more than `max_age_days` days must be checked before use."""
    return (today - last_verified).days > max_age_days


def capped_amount(amount_eur: int, cap_eur: int | None) -> int:
    return amount_eur if cap_eur is None else min(amount_eur, cap_eur)


def _approached_set(approached: Approached) -> frozenset[tuple[str, str]]:
    return frozenset((fund_id, str(purpose)) for fund_id, purpose in approached)


def _suggest(
    fund: Fund,
    profile: FundProfile,
    asked: frozenset[tuple[str, str]],
    today: date,
    max_age_days: int,
) -> Suggestion:
    stale = is_stale(fund.last_verified, today, max_age_days)
    reasons = [f"funds {profile.purpose.replace('_', ' ')}"]
    reasons += [check.text for check in _rule_checks(fund.rules, profile) if check.passed]
    reasons.append(_amount_reason(fund, profile.amount_eur))
    warnings = []
    if stale:
        warnings.append(
            f"directory entry last verified on {fund.last_verified.isoformat()}, "
            f"more than {max_age_days} days ago: check eligibility and availability first"
        )
    others = sorted(fid for fid, purpose in asked if purpose == profile.purpose and fid != fund.id)
    if others:
        warnings.append(
            f"already approached for the same purpose: {', '.join(others)}; "
            "make sure the same costs are not funded twice"
        )
    if fund.note:
        warnings.append(fund.note)
    return Suggestion(
        fund_id=fund.id,
        name=fund.name,
        reasons=tuple(reasons),
        capped_amount=capped_amount(profile.amount_eur, fund.cap_eur),
        stale=stale,
        last_verified=fund.last_verified,
        turnaround=fund.turnaround,
        response_hours=fund.response_hours,
        warnings=tuple(warnings),
    )


def _amount_reason(fund: Fund, amount_eur: int) -> str:
    if fund.cap_eur is None:
        return "no cap stated in the directory"
    if amount_eur > fund.cap_eur:
        return (
            f"cap EUR {fund.cap_eur:,}: EUR {amount_eur:,} requested, "
            f"EUR {fund.cap_eur:,} can be asked of this fund"
        )
    return f"EUR {amount_eur:,} requested is within the cap of EUR {fund.cap_eur:,}"


def _exclusion_reasons(
    fund: Fund, profile: FundProfile, asked: frozenset[tuple[str, str]]
) -> list[str]:
    reasons = []
    if fund.status is not FundStatus.AVAILABLE:
        reasons.append(f"the fund is {fund.status.value}")
    if (fund.id, profile.purpose) in asked:
        reasons.append("already approached for this purpose")
    if profile.purpose not in fund.purposes:
        reasons.append(_purpose_not_funded(fund, profile.purpose))
    reasons += [check.text for check in _rule_checks(fund.rules, profile) if not check.passed]
    return reasons


def _purpose_not_funded(fund: Fund, purpose: str) -> str:
    funded = ", ".join(sorted(p.value for p in fund.purposes)) or "nothing"
    if purpose not in set(Purpose):
        # Not echoed: the purpose may be free text and contain names.
        return f"the requested purpose is not one of the directory's purposes (this fund: {funded})"
    return f"does not fund {purpose.replace('_', ' ')} (funds: {funded})"


# One small function per rule; each returns None when the fund does not have the rule.
def _women_or_trans_led(rules: FundRules, p: FundProfile) -> _Check | None:
    if not rules.requires_women_or_trans_led:
        return None
    if p.women_or_trans_led:
        return _Check(True, "women- or trans-led, as the fund requires")
    return _Check(False, "only for women- or trans-led defenders and groups")


def _lgbti(rules: FundRules, p: FundProfile) -> _Check | None:
    if not rules.requires_lgbti:
        return None
    if p.lgbti:
        return _Check(True, "LGBTI defenders, as the fund requires")
    return _Check(False, "only for LGBTI defenders")


def _group_size(rules: FundRules, p: FundProfile) -> _Check | None:
    minimum = rules.requires_group_min_size
    if minimum is None:
        return None
    if p.group_size >= minimum:
        return _Check(True, f"a group of {p.group_size} activists (at least {minimum} required)")
    return _Check(False, f"only for groups of at least {minimum} activists ({p.group_size} here)")


def _activism(rules: FundRules, p: FundProfile) -> _Check | None:
    minimum = rules.requires_min_activism_months
    if minimum is None:
        return None
    if p.activism_months is None:
        return _Check(False, f"needs {minimum} months of documented activism (not recorded)")
    if p.activism_months >= minimum:
        return _Check(
            True, f"{p.activism_months} months of activism (at least {minimum} required)"
        )
    return _Check(
        False, f"needs {minimum} months of documented activism ({p.activism_months} recorded)"
    )


def _causal_link(rules: FundRules, p: FundProfile) -> _Check | None:
    if not rules.requires_causal_link:
        return None
    if p.causal_link_to_rights_work:
        return _Check(True, "the danger is linked to the person's rights work")
    return _Check(False, "needs a causal link between the danger and the person's rights work")


def _time_urgent(rules: FundRules, p: FundProfile) -> _Check | None:
    if not rules.requires_time_urgent:
        return None
    if p.time_urgent:
        return _Check(True, "time-urgent, as the fund requires")
    return _Check(False, "only for time-urgent requests")


def _exile(rules: FundRules, p: FundProfile) -> _Check | None:
    if not rules.excludes_exile:
        return None
    if p.in_exile:
        return _Check(False, "not for defenders already in exile")
    return _Check(True, "not in exile")


def _costs_incurred(rules: FundRules, p: FundProfile) -> _Check | None:
    if not rules.excludes_costs_incurred:
        return None
    if p.costs_already_incurred:
        return _Check(False, "does not pay costs already incurred")
    return _Check(True, "costs not yet incurred")


_RULE_CHECKS: tuple[Callable[[FundRules, FundProfile], _Check | None], ...] = (
    _women_or_trans_led,
    _lgbti,
    _group_size,
    _activism,
    _causal_link,
    _time_urgent,
    _exile,
    _costs_incurred,
)


def _rule_checks(rules: FundRules, profile: FundProfile) -> list[_Check]:
    checks = (check(rules, profile) for check in _RULE_CHECKS)
    return [check for check in checks if check is not None]


# Parsing the directory from plain data (the TOML file read by activities/directories.py).

# A rule is a flag when its default is False, a threshold when its default is None.
_BOOL_RULES = frozenset(f.name for f in fields(FundRules) if f.default is False)
_INT_RULES = frozenset(f.name for f in fields(FundRules)) - _BOOL_RULES
_FUND_KEYS = frozenset(
    {"id", "name", "cap_eur", "turnaround", "response_hours", "status", "last_verified",
     "purposes", "note", "rules", "address", "required_items"}
)


def parse_fund_directory(data: Mapping[str, Any]) -> list[Fund]:
    """The directory from its plain form: {"funds": [ {...}, ... ]}; ids must be unique."""
    raw = data.get("funds")
    if not isinstance(raw, list) or not raw:
        raise FundDirectoryError("fund directory: 'funds' must be a non-empty list of entries")
    funds = [parse_fund(entry, index) for index, entry in enumerate(raw, start=1)]
    seen: set[str] = set()
    for fund in funds:
        if fund.id in seen:
            raise FundDirectoryError(f"fund {fund.id!r}: field 'id' is used by two entries")
        seen.add(fund.id)
    return funds


def parse_fund(raw: Any, index: int = 1) -> Fund:
    """One directory entry; errors name the entry (its id, or its position) and the field."""
    if not isinstance(raw, Mapping):
        raise FundDirectoryError(f"fund entry {index}: must be a table of fields")
    where = f"fund {raw['id']!r}" if isinstance(raw.get("id"), str) else f"fund entry {index}"

    def fail(key: str, problem: str) -> FundDirectoryError:
        return FundDirectoryError(f"{where}: field {key!r} {problem}")

    unknown = sorted(set(raw) - _FUND_KEYS)
    if unknown:
        raise fail(unknown[0], "is not a known field")
    return Fund(
        id=_identifier(raw, "id", fail),
        name=_required_text(raw, "name", fail),
        cap_eur=_optional_int(raw, "cap_eur", fail),
        turnaround=_optional_text(raw, "turnaround", fail) or "not stated in the directory",
        rules=_rules(raw.get("rules", {}), fail),
        status=_status(raw, fail),
        last_verified=_date(raw, "last_verified", fail),
        purposes=_purposes(raw, fail),
        response_hours=_optional_int(raw, "response_hours", fail),
        note=_optional_text(raw, "note", fail),
        address=_address(raw, "address", fail),
        required_items=_required_items(raw, fail),
    )


_Fail = Callable[[str, str], FundDirectoryError]


def _identifier(raw: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = _required_text(raw, key, fail)
    if not value.replace("_", "").replace("-", "").isalnum() or not value.isascii():
        raise fail(key, "must be letters, digits, '-' or '_'")
    return value


def _required_text(raw: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = _optional_text(raw, key, fail)
    if not value:
        raise fail(key, "is required")
    return value


def _optional_text(raw: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise fail(key, "must be text")
    return value.strip()


def _optional_int(raw: Mapping[str, Any], key: str, fail: _Fail) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail(key, "must be a positive whole number")
    return value


def _status(raw: Mapping[str, Any], fail: _Fail) -> FundStatus:
    value = raw.get("status")
    try:
        return FundStatus(str(value))
    except ValueError:
        allowed = ", ".join(s.value for s in FundStatus)
        raise fail("status", f"must be one of: {allowed}") from None


def _date(raw: Mapping[str, Any], key: str, fail: _Fail) -> date:
    value = as_date(raw.get(key))
    if value is None:
        raise fail(key, "must be a date written YYYY-MM-DD")
    return value


_ADDRESS_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")


def _address(raw: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = _optional_text(raw, key, fail)
    if value and not _ADDRESS_RE.match(value):
        raise fail(key, "must be one email address")
    return value


def _required_items(raw: Mapping[str, Any], fail: _Fail) -> tuple[RequiredItem, ...]:
    value = raw.get("required_items", [])
    if not isinstance(value, list):
        raise fail("required_items", "must be a list")
    try:
        items = tuple(RequiredItem(item) for item in value)
    except ValueError:
        allowed = ", ".join(i.value for i in RequiredItem)
        raise fail("required_items", f"must list only: {allowed}") from None
    if len(set(items)) != len(items):
        raise fail("required_items", "lists an item twice")
    return items


def _purposes(raw: Mapping[str, Any], fail: _Fail) -> frozenset[Purpose]:
    value = raw.get("purposes")
    if not isinstance(value, list) or not value:
        raise fail("purposes", "must be a non-empty list")
    try:
        return frozenset(Purpose(item) for item in value)
    except ValueError:
        allowed = ", ".join(p.value for p in Purpose)
        raise fail("purposes", f"must list only: {allowed}") from None


def _rules(value: Any, fail: _Fail) -> FundRules:
    if not isinstance(value, Mapping):
        raise fail("rules", "must be a table of rules")
    unknown = sorted(set(value) - _BOOL_RULES - _INT_RULES)
    if unknown:
        raise fail(f"rules.{unknown[0]}", "is not a known rule")
    for key in _BOOL_RULES & set(value):
        if not isinstance(value[key], bool):
            raise fail(f"rules.{key}", "must be true or false")
    for key in _INT_RULES & set(value):
        _optional_int(value, key, lambda k, problem: fail(f"rules.{k}", problem))
    return FundRules(**dict(value))

