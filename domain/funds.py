"""Emergency funds for defenders: the directory's entries and which of them fit a case.

The directory is configuration (activities/data/funds.toml); this module only reads plain data.
Matching is a pure function of the case's fund profile, the directory, which fund was already
chosen for which purpose, and today's date (passed in). Every suggestion says why it fits and every
excluded fund says why not, because staff decide and must be able to check the reasoning
(docs/design.md section 3.4).

Rules of matching, besides each fund's own eligibility rules:

- only funds whose status is "available" are suggested;
- refusals: a grantee who refused the `eu_delegation` action refused EU involvement, so EU-backed
  funds (`eu_backed = true`) are excluded too ("the grantee refused EU involvement"); a grantee who
  refused the `emergency_fund` action is suggested no fund at all;
- one fund per purpose: once a fund was chosen for a purpose, that fund and every other fund are
  excluded for the same purpose (the same costs must never be funded twice);
- with live sending on, a fund whose channel staff have not confirmed (`confirmed = false`) is
  excluded; with it off, the fund is suggested with a warning;
- an entry not verified for longer than the allowed age is still suggested, with a warning, after
  the fresh ones that cover the same amount.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from enum import StrEnum
from typing import Any

from domain.errors import FundChoiceRefused
from domain.fields import as_date


class FundStatus(StrEnum):
    AVAILABLE = "available"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Channel(StrEnum):
    """How a fund takes applications."""

    EMAIL = "email"  # to `address`: the system can send the application
    WEB_FORM = "web_form"  # through the fund's own form at `form_url`: staff submit it


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
    # The largest grant, in `currency` (an ISO 4217 code); None where no cap is published.
    cap: int | None
    currency: str
    turnaround: str
    rules: FundRules
    status: FundStatus
    last_verified: date
    purposes: frozenset[Purpose]
    channel: Channel
    # Where the channel (address or form) was published, for whoever confirms it.
    address_source: str
    # Funded or run by the European Union: excluded when the grantee refused EU involvement.
    eu_backed: bool
    # Staff confirmed the channel with the fund; with live sending on, unconfirmed funds are unused.
    confirmed: bool = False
    # Hours within which the fund answers, where known: orders suggestions for time-urgent cases.
    response_hours: int | None = None
    note: str = ""
    # Where applications go: an e-mail address (channel "email") or the fund's public page with its
    # application form (channel "web_form"); and what an application must contain, in the fund's
    # order.
    address: str = ""
    form_url: str = ""
    required_items: tuple[RequiredItem, ...] = ()

    @property
    def cap_eur(self) -> int | None:
        """The cap when it is published in euros; None when there is none or it is in another
        currency (a EUR amount cannot be compared with it without an exchange rate)."""
        return self.cap if self.currency == "EUR" else None

    @property
    def sendable(self) -> bool:
        """The system itself can send an application: the fund takes them by e-mail."""
        return self.channel is Channel.EMAIL and bool(self.address)


@dataclass(frozen=True)
class FundProfile:
    """What fund matching needs to know about a case (see `profile_from_intake`)."""

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
    # Action codes the grantee refused (intake `refused_actions`, and refused consents).
    refused_actions: frozenset[str] = frozenset()

    @property
    def refuses_eu_involvement(self) -> bool:
        """Refusing the EU delegation action is refusing EU involvement, EU-backed funds included."""
        return "eu_delegation" in self.refused_actions


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
    # Things staff must check before applying: a stale entry, an unconfirmed channel, a web form.
    warnings: tuple[str, ...] = ()
    channel: str = Channel.EMAIL.value
    confirmed: bool = False


@dataclass(frozen=True)
class Exclusion:
    fund_id: str
    name: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class FundAdvice:
    """Every fund of the directory, either suggested (best first) or excluded, each with reasons."""

    suggestions: tuple[Suggestion, ...]
    exclusions: tuple[Exclusion, ...]


# What was already chosen (or approached) for this case: (fund id, purpose) pairs, or bare fund ids
# meaning "chosen for the purpose of this request".
Approached = Iterable[tuple[str, str]]
Chosen = Iterable[str | tuple[str, str]]


@dataclass(frozen=True)
class _Check:
    passed: bool
    text: str


REFUSED_EU = "the grantee refused EU involvement"
REFUSED_FUNDS = "the grantee refused applications to emergency funds"
NOT_CONFIRMED_LIVE = "not confirmed by staff; with live sending on it cannot be used"


def suggest_funds(
    profile: FundProfile,
    directory: Sequence[Fund],
    today: date,
    *,
    already_chosen: Chosen = (),
    max_age_days: int = 365,
    live_sending: bool = False,
) -> FundAdvice:
    """The funds to suggest for this request, best first, and every other fund with its reasons.

    The grantee's refusals are the profile's `refused_actions` (see `profile_from_intake`). Order
    of suggestions: for a time-urgent case, funds that answer fastest first (known response time
    before unknown); then the larger amount covered; then recently verified entries before stale
    ones; then by name.
    """
    chosen = _chosen_pairs(already_chosen, profile.purpose)
    suggestions = []
    exclusions = []
    for fund in directory:
        reasons = _exclusion_reasons(fund, profile, chosen, live_sending)
        if reasons:
            exclusions.append(Exclusion(fund.id, fund.name, tuple(reasons)))
        else:
            suggestions.append(_suggest(fund, profile, today, max_age_days))

    def order(s: Suggestion) -> tuple[bool, int, int, bool, str]:
        hours = s.response_hours if profile.time_urgent else None
        return (hours is None, hours or 0, -s.capped_amount, s.stale, s.name)

    return FundAdvice(tuple(sorted(suggestions, key=order)), tuple(exclusions))


def match_funds(
    profile: FundProfile,
    directory: Sequence[Fund],
    approached: Approached,
    today: date,
    max_age_days: int,
) -> list[Suggestion]:
    """The suggestions of `suggest_funds` (live sending off), with `approached` as already chosen."""
    advice = suggest_funds(profile, directory, today, already_chosen=approached,
                           max_age_days=max_age_days)
    return list(advice.suggestions)


def explain_exclusions(
    profile: FundProfile, directory: Sequence[Fund], approached: Approached
) -> list[Exclusion]:
    """For every fund that `match_funds` leaves out, all the reasons why, in directory order."""
    chosen = _chosen_pairs(approached, profile.purpose)
    exclusions = []
    for fund in directory:
        reasons = _exclusion_reasons(fund, profile, chosen, live_sending=False)
        if reasons:
            exclusions.append(Exclusion(fund.id, fund.name, tuple(reasons)))
    return exclusions


def check_fund_choice(
    chosen_ids: Sequence[str],
    directory: Sequence[Fund],
    profile: FundProfile,
    already_chosen: Chosen,
    live_sending: bool,
    today: date,
) -> None:
    """Refuse, with one sentence naming the fund, a choice of fund(s) for the profile's request.

    Refused: no fund chosen; a fund not in the directory; a fund chosen twice, or two funds for the
    one purpose of the request; a fund excluded for this case (the sentence gives the reasons: not
    available, refused by the grantee, a fund already chosen for the same purpose, not eligible);
    and, with live sending on, a fund staff have not confirmed. A stale entry is not refused (as
    for addresses, staleness is a warning: see `suggest_funds`); `today` dates the check.
    """
    if not chosen_ids:
        raise FundChoiceRefused("No emergency fund was chosen; choose one of the suggested funds.")
    by_id = {fund.id: fund for fund in directory}
    for fund_id in chosen_ids:
        if fund_id not in by_id:
            raise FundChoiceRefused(f"Fund {str(fund_id)[:40]!r} is not in the fund directory.")
    if len(set(chosen_ids)) != len(chosen_ids):
        twice = next(f for f in chosen_ids if list(chosen_ids).count(f) > 1)
        raise FundChoiceRefused(f"Fund {twice!r} was chosen twice; choose each fund once.")
    if len(chosen_ids) > 1:
        listed = " and ".join(repr(f) for f in chosen_ids)
        raise FundChoiceRefused(
            f"Only one fund may be chosen for {_purpose_words(profile.purpose)}: {listed} were "
            "chosen (no two funds for the same purpose).")
    fund = by_id[chosen_ids[0]]
    advice = suggest_funds(profile, [fund], today, already_chosen=already_chosen)
    if advice.exclusions:
        reasons = "; ".join(advice.exclusions[0].reasons)
        raise FundChoiceRefused(f"Fund {fund.id!r} cannot be used for this case: {reasons}.")
    if live_sending and not fund.confirmed:
        raise FundChoiceRefused(f"Fund {fund.id!r} is {NOT_CONFIRMED_LIVE}.")


def profile_from_intake(
    intake: Mapping[str, Any],
    risk_level: str | None,
    verified: bool,
    *,
    refused: Iterable[str] = (),
) -> FundProfile:
    """The fund profile of a case from its plain intake.

    `risk_level` is the verified risk level (None before verification: the intake's urgency counts
    then); critical and high make the request time-urgent. `verified` (the threat was verified) is
    taken as the causal link between the danger and the rights work. `refused` adds action codes
    refused after the intake (consents refused or withdrawn) to the intake's `refused_actions`.
    """
    request = _mapping(intake.get("fund_request"))
    organisation = _mapping(intake.get("organisation"))
    raw_defenders = intake.get("defenders")
    defenders = [_mapping(d) for d in raw_defenders] if isinstance(raw_defenders, list) else []
    level = risk_level or intake.get("urgency")
    refusals = [*(intake.get("refused_actions") or []), *refused]
    return FundProfile(
        women_or_trans_led=organisation.get("women_or_trans_led") is True,
        lgbti=any("lgbti" in (d.get("at_risk_groups") or []) for d in defenders),
        group_size=len(defenders),
        in_exile=request.get("in_exile") is True,
        costs_already_incurred=request.get("costs_already_incurred") is True,
        activism_months=_whole(organisation.get("activism_months")),
        causal_link_to_rights_work=verified,
        time_urgent=str(level) in ("critical", "high"),
        purpose=str(request.get("purpose") or ""),
        amount_eur=_whole(request.get("amount_eur")) or 0,
        refused_actions=frozenset(str(a) for a in refusals),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_stale(last_verified: date, today: date, max_age_days: int) -> bool:
    """An entry not checked for more than `max_age_days` days must be checked before use."""
    return (today - last_verified).days > max_age_days


def capped_amount(amount_eur: int, cap_eur: int | None) -> int:
    return amount_eur if cap_eur is None else min(amount_eur, cap_eur)


def _chosen_pairs(chosen: Chosen, purpose: str) -> frozenset[tuple[str, str]]:
    pairs = set()
    for item in chosen:
        if isinstance(item, str):
            pairs.add((item, purpose))
        else:
            fund_id, for_purpose = item
            pairs.add((str(fund_id), str(for_purpose)))
    return frozenset(pairs)


def _purpose_words(purpose: str) -> str:
    # Free-text purposes are not echoed: they may contain names.
    return purpose.replace("_", " ") if purpose in set(Purpose) else "this purpose"


def _suggest(fund: Fund, profile: FundProfile, today: date, max_age_days: int) -> Suggestion:
    stale = is_stale(fund.last_verified, today, max_age_days)
    reasons = [f"funds {profile.purpose.replace('_', ' ')}"]
    reasons += [check.text for check in _rule_checks(fund.rules, profile) if check.passed]
    if fund.eu_backed:
        reasons.append("EU-backed; the grantee did not refuse EU involvement")
    reasons.append(_amount_reason(fund, profile.amount_eur))
    warnings = []
    if stale:
        warnings.append(
            f"directory entry last verified on {fund.last_verified.isoformat()}, "
            f"more than {max_age_days} days ago: check eligibility and availability first"
        )
    if not fund.confirmed:
        warnings.append(
            f"the fund's {_channel_words(fund)} is not yet confirmed by staff (published at: "
            f"{fund.address_source}); it cannot be used with live sending on"
        )
    if fund.channel is Channel.WEB_FORM:
        warnings.append(
            f"applications go through the fund's web form ({fund.form_url}), not by e-mail: "
            "staff submit the application there"
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
        channel=fund.channel.value,
        confirmed=fund.confirmed,
    )


def _channel_words(fund: Fund) -> str:
    return "e-mail address" if fund.channel is Channel.EMAIL else "web form"


def _amount_reason(fund: Fund, amount_eur: int) -> str:
    if fund.cap is None:
        return "no cap stated in the directory"
    if fund.currency != "EUR":
        return (
            f"cap {fund.currency} {fund.cap:,}, not compared with the EUR {amount_eur:,} "
            f"requested: convert at the day's rate before applying"
        )
    if amount_eur > fund.cap:
        return (
            f"cap EUR {fund.cap:,}: EUR {amount_eur:,} requested, "
            f"EUR {fund.cap:,} can be asked of this fund"
        )
    return f"EUR {amount_eur:,} requested is within the cap of EUR {fund.cap:,}"


def _exclusion_reasons(
    fund: Fund, profile: FundProfile, chosen: frozenset[tuple[str, str]], live_sending: bool
) -> list[str]:
    reasons = []
    if fund.status is not FundStatus.AVAILABLE:
        reasons.append(f"the fund is {fund.status.value}")
    if "emergency_fund" in profile.refused_actions:
        reasons.append(REFUSED_FUNDS)
    if fund.eu_backed and profile.refuses_eu_involvement:
        reasons.append(REFUSED_EU)
    if (fund.id, profile.purpose) in chosen:
        reasons.append("already chosen for this purpose")
    others = sorted(f for f, purpose in chosen if purpose == profile.purpose and f != fund.id)
    if others:
        reasons.append(
            f"another fund ({', '.join(others)}) was already chosen for "
            f"{_purpose_words(profile.purpose)}: no two funds for the same purpose"
        )
    if profile.purpose not in fund.purposes:
        reasons.append(_purpose_not_funded(fund, profile.purpose))
    reasons += [check.text for check in _rule_checks(fund.rules, profile) if not check.passed]
    if live_sending and not fund.confirmed:
        reasons.append(NOT_CONFIRMED_LIVE)
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
    {"id", "name", "cap", "currency", "turnaround", "response_hours", "status", "last_verified",
     "purposes", "note", "rules", "channel", "address", "form_url", "address_source", "confirmed",
     "eu_backed", "required_items"}
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
    channel = _channel(raw, fail)
    cap = _optional_int(raw, "cap", fail)
    return Fund(
        id=_identifier(raw, "id", fail),
        name=_required_text(raw, "name", fail),
        cap=cap,
        currency=_currency(raw, cap, fail),
        turnaround=_optional_text(raw, "turnaround", fail) or "not stated in the directory",
        rules=_rules(raw.get("rules", {}), fail),
        status=_status(raw, fail),
        last_verified=_date(raw, "last_verified", fail),
        purposes=_purposes(raw, fail),
        channel=channel,
        address_source=_required_text(raw, "address_source", fail),
        eu_backed=_flag(raw, "eu_backed", fail, required=True),
        confirmed=_flag(raw, "confirmed", fail),
        response_hours=_optional_int(raw, "response_hours", fail),
        note=_optional_text(raw, "note", fail),
        address=_address(raw, channel, fail),
        form_url=_form_url(raw, channel, fail),
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


def _flag(raw: Mapping[str, Any], key: str, fail: _Fail, *, required: bool = False) -> bool:
    value = raw.get(key)
    if value is None and not required:
        return False
    if not isinstance(value, bool):
        raise fail(key, "must be true or false")
    return value


_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def _currency(raw: Mapping[str, Any], cap: int | None, fail: _Fail) -> str:
    value = _optional_text(raw, "currency", fail)
    if cap is None:
        if value:
            raise fail("currency", "is the currency of 'cap' and needs a 'cap'")
        return ""
    if not _CURRENCY_RE.match(value):
        raise fail("currency", "must be the cap's ISO 4217 currency code, e.g. EUR or USD")
    return value


def _status(raw: Mapping[str, Any], fail: _Fail) -> FundStatus:
    value = raw.get("status")
    try:
        return FundStatus(str(value))
    except ValueError:
        allowed = ", ".join(s.value for s in FundStatus)
        raise fail("status", f"must be one of: {allowed}") from None


def _channel(raw: Mapping[str, Any], fail: _Fail) -> Channel:
    value = raw.get("channel")
    try:
        return Channel(str(value))
    except ValueError:
        allowed = ", ".join(c.value for c in Channel)
        raise fail("channel", f"must be one of: {allowed}") from None


def _date(raw: Mapping[str, Any], key: str, fail: _Fail) -> date:
    value = as_date(raw.get(key))
    if value is None:
        raise fail(key, "must be a date written YYYY-MM-DD")
    return value


_ADDRESS_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")
_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+\.[A-Za-z]{2,63}(?:/[^\s\"<>]*)?$")


def _address(raw: Mapping[str, Any], channel: Channel, fail: _Fail) -> str:
    value = _optional_text(raw, "address", fail)
    if channel is not Channel.EMAIL:
        if value:
            raise fail("address", 'is only for channel "email" (a web-form fund has \'form_url\')')
        return ""
    if not value:
        raise fail("address", 'is required with channel "email"')
    if not _ADDRESS_RE.match(value):
        raise fail("address", "must be one email address")
    return value


def _form_url(raw: Mapping[str, Any], channel: Channel, fail: _Fail) -> str:
    value = _optional_text(raw, "form_url", fail)
    if channel is not Channel.WEB_FORM:
        if value:
            raise fail("form_url", 'is only for channel "web_form" (an e-mail fund has \'address\')')
        return ""
    if not value:
        raise fail("form_url", 'is required with channel "web_form"')
    if not _URL_RE.match(value):
        raise fail("form_url", "must be one https:// address of the fund's page")
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
