"""Emergency fund matching (docs/design.md section 3.4): pure logic over the shipped directory."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from activities.directories import DirectoryFileError, load_fund_directory
from domain.errors import CaseRuleError, FundChoiceRefused
from domain.funds import (
    Channel,
    Fund,
    FundDirectoryError,
    FundProfile,
    FundStatus,
    check_fund_choice,
    explain_exclusions,
    match_funds,
    parse_fund,
    profile_from_intake,
    suggest_funds,
)
from tests.factories import DEFENDER_NAME, intake
from tests.message_cases import CASES

TODAY = date(2026, 12, 1)
PROFILE = FundProfile(
    women_or_trans_led=False, lgbti=False, group_size=1, in_exile=False,
    costs_already_incurred=False, activism_months=24, causal_link_to_rights_work=True,
    time_urgent=True, purpose="legal_fees", amount_eur=12_000,
)
EU_REFUSED = replace(PROFILE, refused_actions=frozenset({"eu_delegation"}))


@pytest.fixture(scope="module")
def directory() -> list[Fund]:
    return load_fund_directory()


def ids(suggestions) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.fund_id for s in suggestions]


def confirmed(directory: list[Fund]) -> list[Fund]:
    """The directory as it will be once staff have confirmed every channel."""
    return [replace(f, confirmed=True) for f in directory]


# --------------------------------------------------------------------------- the shipped directory
def test_every_shipped_entry_parses_dated_with_its_published_channel(directory: list[Fund]) -> None:
    assert len(directory) >= 6
    for fund in directory:
        assert fund.last_verified <= TODAY, fund.id
        assert fund.address_source, fund.id
        assert not fund.confirmed, f"{fund.id}: ships unconfirmed until staff confirm it"
        if fund.channel is Channel.EMAIL:
            assert fund.address and not fund.form_url and fund.sendable, fund.id
        else:
            assert fund.form_url.startswith("https://") and not fund.address, fund.id
            assert not fund.sendable, fund.id
        assert fund.cap is None or re.fullmatch(r"[A-Z]{3}", fund.currency), fund.id


def test_the_shipped_directory_holds_the_real_funds(directory: list[Fund]) -> None:
    by_id = {f.id: f for f in directory}
    eu = by_id["eu_defenders_mechanism"]
    assert "ProtectDefenders.eu" in eu.name and eu.eu_backed and (eu.cap, eu.currency) == (10_000, "EUR")
    assert [f.id for f in directory if f.eu_backed] == ["eu_defenders_mechanism"]
    uaf = by_id["women_trans_urgent"]
    assert (uaf.cap, uaf.currency, uaf.cap_eur, uaf.response_hours) == (8_000, "USD", None, 72)
    assert all(region in uaf.note for region in ("UAF-Africa", "FAU-LAC", "Asia & Pacific"))
    aedh = by_id["solidarity"]
    assert aedh.channel is Channel.EMAIL and aedh.address == "protectionddh@aedh.org"
    assert by_id["protection_grant"].cap_eur == 7_500
    assert by_id["freedom_house_eap"].status is FundStatus.CLOSED


# ------------------------------------------------------------------------------------ suggestions
def test_every_fund_is_either_suggested_or_excluded_with_reasons(directory: list[Fund]) -> None:
    advice = suggest_funds(PROFILE, directory, TODAY)
    suggested, excluded = ids(advice.suggestions), [e.fund_id for e in advice.exclusions]
    assert sorted(suggested + excluded) == sorted(f.id for f in directory)
    assert all(s.reasons for s in advice.suggestions) and all(e.reasons for e in advice.exclusions)
    reasons = {e.fund_id: e.reasons for e in advice.exclusions}
    assert "only for women- or trans-led defenders and groups" in reasons["women_trans_urgent"]
    assert "only for LGBTI defenders" in reasons["lgbti_defenders"]
    assert "the fund is closed" in reasons["freedom_house_eap"]
    # The older entry points agree with the new one.
    assert ids(match_funds(PROFILE, directory, [], TODAY, 365)) == suggested
    assert [e.fund_id for e in explain_exclusions(PROFILE, directory, [])] == excluded


def test_amount_is_capped_and_the_reason_says_so(directory: list[Fund]) -> None:
    eu = next(s for s in suggest_funds(PROFILE, directory, TODAY).suggestions
              if s.fund_id == "eu_defenders_mechanism")
    assert eu.capped_amount == 10_000
    assert any("cap EUR 10,000" in r for r in eu.reasons)


def test_a_cap_in_another_currency_is_shown_but_never_compared(directory: list[Fund]) -> None:
    women = replace(PROFILE, women_or_trans_led=True)
    uaf = next(s for s in suggest_funds(women, directory, TODAY).suggestions
               if s.fund_id == "women_trans_urgent")
    assert uaf.capped_amount == 12_000
    assert any("cap USD 8,000, not compared with the EUR 12,000" in r for r in uaf.reasons)


def test_eligibility_rules_change_the_match(directory: list[Fund]) -> None:
    women = replace(PROFILE, women_or_trans_led=True)
    assert "women_trans_urgent" in ids(match_funds(women, directory, [], TODAY, 365))
    not_urgent = replace(women, time_urgent=False)
    assert "women_trans_urgent" not in ids(match_funds(not_urgent, directory, [], TODAY, 365))
    exiled = replace(PROFILE, in_exile=True)
    assert "protection_grant" not in ids(match_funds(exiled, directory, [], TODAY, 365))
    assert "protection_grant" in ids(match_funds(PROFILE, directory, [], TODAY, 365))
    group = replace(PROFILE, group_size=3)
    assert "organisations_under_attack" in ids(match_funds(group, directory, [], TODAY, 365))
    assert "organisations_under_attack" not in ids(match_funds(PROFILE, directory, [], TODAY, 365))


def test_refusing_eu_involvement_excludes_the_eu_backed_mechanism(directory: list[Fund]) -> None:
    assert "eu_defenders_mechanism" in ids(suggest_funds(PROFILE, directory, TODAY).suggestions)
    advice = suggest_funds(EU_REFUSED, directory, TODAY)
    assert "eu_defenders_mechanism" not in ids(advice.suggestions)
    reasons = {e.fund_id: e.reasons for e in advice.exclusions}
    assert "the grantee refused EU involvement" in reasons["eu_defenders_mechanism"]
    # Funds that are not EU-backed are not affected by the refusal.
    assert "protection_grant" in ids(advice.suggestions)
    assert not any("EU involvement" in r for e in advice.exclusions if e.fund_id != "eu_defenders_mechanism"
                   for r in e.reasons)


def test_refusing_eu_involvement_in_the_intake_or_at_consent_reaches_matching(
        directory: list[Fund]) -> None:
    data = intake(requested_actions=["emergency_fund"], refused_actions=["eu_delegation"],
                  fund_request={"amount_eur": 5000, "purpose": "legal_fees"})
    for profile in (profile_from_intake(data, "critical", True),
                    profile_from_intake({**data, "refused_actions": []}, "critical", True,
                                        refused=["eu_delegation"])):
        assert profile.refuses_eu_involvement
        advice = suggest_funds(profile, directory, TODAY)
        assert "eu_defenders_mechanism" not in ids(advice.suggestions)
        with pytest.raises(FundChoiceRefused, match="the grantee refused EU involvement"):
            check_fund_choice(["eu_defenders_mechanism"], directory, profile, [],
                              live_sending=False, today=TODAY)
    assert not profile_from_intake({**data, "refused_actions": []}, "critical", True).refuses_eu_involvement


def test_a_grantee_who_refused_emergency_funds_is_suggested_none(directory: list[Fund]) -> None:
    refused = replace(PROFILE, refused_actions=frozenset({"emergency_fund"}))
    advice = suggest_funds(refused, directory, TODAY)
    assert not advice.suggestions
    assert all("the grantee refused applications to emergency funds" in e.reasons
               for e in advice.exclusions)


def test_no_two_funds_for_the_same_purpose(directory: list[Fund]) -> None:
    first = suggest_funds(PROFILE, directory, TODAY).suggestions[0].fund_id
    chosen = [(first, "legal_fees")]
    advice = suggest_funds(PROFILE, directory, TODAY, already_chosen=chosen)
    assert not advice.suggestions
    reasons = {e.fund_id: e.reasons for e in advice.exclusions}
    assert "already chosen for this purpose" in reasons[first]
    others = [r for fund_id, rs in reasons.items() if fund_id != first for r in rs]
    assert f"another fund ({first}) was already chosen for legal fees: no two funds for the same " \
           "purpose" in others
    # Another purpose may still go to the same fund.
    medical = suggest_funds(replace(PROFILE, purpose="medical"), directory, TODAY,
                            already_chosen=chosen)
    assert first in ids(medical.suggestions)
    # Bare fund ids count as chosen for the purpose of this request.
    assert suggest_funds(PROFILE, directory, TODAY, already_chosen=[first]) == advice


def test_unavailable_stale_and_unconfirmed_entries(directory: list[Fund]) -> None:
    suspended = [replace(directory[0], status=FundStatus.SUSPENDED), *directory[1:]]
    advice = suggest_funds(PROFILE, suspended, TODAY)
    assert directory[0].id not in ids(advice.suggestions)
    assert "the fund is suspended" in {e.fund_id: e.reasons for e in advice.exclusions}[directory[0].id]
    stale = suggest_funds(PROFILE, directory, date(2030, 1, 1), max_age_days=365).suggestions
    assert stale and all(s.stale and any("last verified" in w for w in s.warnings) for s in stale)
    # Unconfirmed: suggested with a warning while live sending is off, excluded while it is on.
    off = suggest_funds(PROFILE, directory, TODAY).suggestions
    assert off and all(any("not yet confirmed by staff" in w for w in s.warnings) for s in off)
    on = suggest_funds(PROFILE, directory, TODAY, live_sending=True)
    assert not on.suggestions
    assert all("not confirmed by staff; with live sending on it cannot be used" in e.reasons
               for e in on.exclusions if e.fund_id != "freedom_house_eap")
    live = suggest_funds(PROFILE, confirmed(directory), TODAY, live_sending=True)
    assert ids(live.suggestions) == ids(off)


def test_web_form_funds_say_where_to_apply(directory: list[Fund]) -> None:
    by_id = {f.id: f for f in directory}
    for s in suggest_funds(PROFILE, directory, TODAY).suggestions:
        if s.channel == Channel.WEB_FORM:
            assert any(by_id[s.fund_id].form_url in w for w in s.warnings)


def test_time_urgent_cases_put_funds_that_answer_fast_first(directory: list[Fund]) -> None:
    urgent = replace(PROFILE, time_urgent=True, women_or_trans_led=True)
    order = match_funds(urgent, directory, [], TODAY, 365)
    hours = [s.response_hours for s in order]
    known = [h for h in hours if h is not None]
    assert known and hours[: len(known)] == sorted(known)


# ------------------------------------------------------------------------------- choosing a fund
def test_a_valid_choice_passes(directory: list[Fund]) -> None:
    check_fund_choice(["protection_grant"], directory, PROFILE, [], False, TODAY)
    check_fund_choice(["protection_grant"], confirmed(directory), PROFILE, [], True, TODAY)
    # A chosen fund for another purpose does not stand in the way.
    check_fund_choice(["protection_grant"], directory, PROFILE, [("protection_grant", "medical")],
                      False, TODAY)


@pytest.mark.parametrize(
    ("chosen", "profile", "already", "message"),
    [
        ([], PROFILE, [], "No emergency fund was chosen"),
        (["no_such_fund"], PROFILE, [], "Fund 'no_such_fund' is not in the fund directory."),
        (["protection_grant", "protection_grant"], PROFILE, [], "was chosen twice"),
        (["protection_grant", "eu_defenders_mechanism"], PROFILE, [],
         "Only one fund may be chosen for legal fees: 'protection_grant' and "
         "'eu_defenders_mechanism' were chosen (no two funds for the same purpose)."),
        (["eu_defenders_mechanism"], EU_REFUSED, [],
         "Fund 'eu_defenders_mechanism' cannot be used for this case: the grantee refused EU "
         "involvement."),
        (["eu_defenders_mechanism"], PROFILE, [("protection_grant", "legal_fees")],
         "another fund (protection_grant) was already chosen for legal fees: no two funds for the "
         "same purpose"),
        (["protection_grant"], PROFILE, [("protection_grant", "legal_fees")],
         "already chosen for this purpose"),
        (["freedom_house_eap"], PROFILE, [], "the fund is closed"),
        (["lgbti_defenders"], PROFILE, [], "only for LGBTI defenders"),
    ],
)
def test_a_choice_that_breaks_a_rule_is_refused_with_a_sentence(
        directory: list[Fund], chosen: list[str], profile: FundProfile,
        already: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FundChoiceRefused) as info:
        check_fund_choice(chosen, directory, profile, already, False, TODAY)
    assert message in str(info.value)
    assert isinstance(info.value, CaseRuleError) and info.value.message == str(info.value)


def test_an_unconfirmed_fund_is_refused_while_live_sending_is_on(directory: list[Fund]) -> None:
    with pytest.raises(FundChoiceRefused, match=re.escape(
            "Fund 'protection_grant' is not confirmed by staff; with live sending on it cannot be "
            "used.")):
        check_fund_choice(["protection_grant"], directory, PROFILE, [], True, TODAY)


def test_refusals_name_no_personal_data(directory: list[Fund]) -> None:
    free_text = replace(PROFILE, purpose=f"bail for {DEFENDER_NAME}")
    for chosen in (["protection_grant"], ["protection_grant", "solidarity"]):
        with pytest.raises(FundChoiceRefused) as info:
            check_fund_choice(chosen, directory, free_text, [], False, TODAY)
        assert DEFENDER_NAME not in str(info.value)


# ------------------------------------------------------------------------------------ the profile
def test_the_profile_is_built_from_the_intake_and_the_risk_level() -> None:
    lgbti = CASES["lgbti_organisation"].intake
    profile = profile_from_intake(lgbti, "high", True)
    assert (profile.lgbti, profile.group_size, profile.activism_months) == (True, 3, 48)
    assert (profile.purpose, profile.amount_eur, profile.time_urgent) == ("legal_fees", 5000, True)
    assert profile.causal_link_to_rights_work and not profile.in_exile
    assert profile.refused_actions == {"mfa"} and not profile.refuses_eu_involvement
    # Before verification the intake's urgency counts; without verification there is no causal link.
    early = profile_from_intake({**lgbti, "urgency": "medium"}, None, False)
    assert not early.time_urgent and not early.causal_link_to_rights_work
    woman = profile_from_intake(CASES["woman_defender"].intake, "low", True)
    assert woman.women_or_trans_led and not woman.time_urgent and woman.refuses_eu_involvement
    assert profile_from_intake({}, None, False) == FundProfile(
        women_or_trans_led=False, lgbti=False, group_size=0, in_exile=False,
        costs_already_incurred=False, activism_months=None, causal_link_to_rights_work=False,
        time_urgent=False, purpose="", amount_eur=0)


# --------------------------------------------------------------------------------------- parsing
GOOD = {
    "id": "x", "name": "X", "status": "available", "last_verified": "2026-01-01",
    "purposes": ["medical"], "channel": "email", "address": "apply@fund.example.org",
    "address_source": "the fund's page", "eu_backed": False,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channel": None}, "fund 'x': field 'channel' must be one of: email, web_form"),
        ({"address": None}, "fund 'x': field 'address' is required with channel \"email\""),
        ({"channel": "web_form"}, "fund 'x': field 'address' is only for channel \"email\""),
        ({"channel": "web_form", "address": None},
         "fund 'x': field 'form_url' is required with channel \"web_form\""),
        ({"channel": "web_form", "address": None, "form_url": "http://fund.example.org/apply"},
         "fund 'x': field 'form_url' must be one https:// address"),
        ({"form_url": "https://fund.example.org/"}, "fund 'x': field 'form_url' is only for channel"),
        ({"address_source": None}, "fund 'x': field 'address_source' is required"),
        ({"eu_backed": None}, "fund 'x': field 'eu_backed' must be true or false"),
        ({"confirmed": "yes"}, "fund 'x': field 'confirmed' must be true or false"),
        ({"cap": 8000}, "fund 'x': field 'currency' must be the cap's ISO 4217 currency code"),
        ({"cap": 8000, "currency": "usd"}, "fund 'x': field 'currency' must be the cap's ISO 4217"),
        ({"currency": "EUR"}, "fund 'x': field 'currency' is the currency of 'cap' and needs a 'cap'"),
        ({"cap_eur": 8000}, "fund 'x': field 'cap_eur' is not a known field"),
    ],
)
def test_a_malformed_entry_names_the_entry_and_the_field(
        change: dict[str, object], message: str) -> None:
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(FundDirectoryError) as info:
        parse_fund(raw)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_well_formed_entry_parses_with_safe_defaults() -> None:
    fund = parse_fund({**GOOD, "cap": 8000, "currency": "USD"})
    assert (fund.cap, fund.currency, fund.cap_eur) == (8000, "USD", None)
    assert fund.confirmed is False and fund.eu_backed is False and fund.sendable


def test_a_broken_directory_file_names_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "funds.toml"
    bad.write_text('[[funds]]\nid = "x"\nname = "X"\nstatus = "open"\nlast_verified = 2026-01-01\n'
                   'purposes = ["medical"]\nchannel = "email"\naddress = "a@fund.example.org"\n'
                   'address_source = "page"\neu_backed = false\n')
    with pytest.raises(DirectoryFileError, match=r"funds.toml: fund 'x': field 'status' must be one of"):
        load_fund_directory(bad)
    with pytest.raises(DirectoryFileError, match="cannot be read"):
        load_fund_directory(tmp_path / "missing.toml")
