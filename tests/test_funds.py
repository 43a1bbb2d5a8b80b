"""Emergency fund matching (DESIGN.md section 3): pure logic over the shipped directory."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from activities.directories import DirectoryFileError, load_fund_directory
from domain.funds import FundProfile, FundStatus, explain_exclusions, match_funds

TODAY = date(2026, 11, 23)
PROFILE = FundProfile(
    women_or_trans_led=False, lgbti=False, group_size=1, in_exile=False,
    costs_already_incurred=False, activism_months=24, causal_link_to_rights_work=True,
    time_urgent=False, purpose="legal_fees", amount_eur=12_000,
)


@pytest.fixture(scope="module")
def directory():  # type: ignore[no-untyped-def]
    return load_fund_directory()


def ids(suggestions) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.fund_id for s in suggestions]


def test_the_shipped_directory_loads_with_every_entry_dated(directory) -> None:  # type: ignore[no-untyped-def]
    assert len(directory) >= 6
    assert all(f.last_verified <= TODAY for f in directory)


def test_every_fund_is_either_suggested_or_excluded_with_reasons(directory) -> None:  # type: ignore[no-untyped-def]
    suggested = ids(match_funds(PROFILE, directory, [], TODAY, 365))
    excluded = explain_exclusions(PROFILE, directory, [])
    assert sorted(suggested + [e.fund_id for e in excluded]) == sorted(f.id for f in directory)
    assert all(e.reasons for e in excluded)
    # Women- and trans-led and LGBTI funds do not fit this profile, and say so.
    reasons = {e.fund_id: e.reasons for e in excluded}
    assert "only for women- or trans-led defenders and groups" in reasons["women_trans_urgent"]
    assert "only for LGBTI defenders" in reasons["lgbti_defenders"]


def test_amount_is_capped_and_the_reason_says_so(directory) -> None:  # type: ignore[no-untyped-def]
    eu = next(s for s in match_funds(PROFILE, directory, [], TODAY, 365)
              if s.fund_id == "eu_defenders_mechanism")
    assert eu.capped_amount == 10_000
    assert any("cap EUR 10,000" in r for r in eu.reasons)


def test_eligibility_rules_change_the_match(directory) -> None:  # type: ignore[no-untyped-def]
    women = replace(PROFILE, women_or_trans_led=True, time_urgent=True)
    assert "women_trans_urgent" in ids(match_funds(women, directory, [], TODAY, 365))
    exiled = replace(PROFILE, in_exile=True)
    assert "protection_grant" not in ids(match_funds(exiled, directory, [], TODAY, 365))
    assert "protection_grant" in ids(match_funds(PROFILE, directory, [], TODAY, 365))


def test_a_fund_already_approached_for_the_same_purpose_is_not_suggested_again(directory) -> None:  # type: ignore[no-untyped-def]
    first = match_funds(PROFILE, directory, [], TODAY, 365)
    asked = [(first[0].fund_id, "legal_fees")]
    again = match_funds(PROFILE, directory, asked, TODAY, 365)
    assert first[0].fund_id not in ids(again)
    assert all(any("already approached" in w for w in s.warnings) for s in again)
    # Another purpose may still go to the same fund.
    other = match_funds(replace(PROFILE, purpose="medical"), directory, asked, TODAY, 365)
    assert first[0].fund_id in ids(other)


def test_unavailable_and_stale_entries(directory) -> None:  # type: ignore[no-untyped-def]
    suspended = [replace(directory[0], status=FundStatus.SUSPENDED), *directory[1:]]
    assert directory[0].id not in ids(match_funds(PROFILE, suspended, [], TODAY, 365))
    stale = match_funds(PROFILE, directory, [], date(2030, 1, 1), 365)
    assert stale and all(s.stale and s.warnings for s in stale)


def test_time_urgent_cases_put_funds_that_answer_fast_first(directory) -> None:  # type: ignore[no-untyped-def]
    urgent = replace(PROFILE, time_urgent=True, women_or_trans_led=True)
    order = match_funds(urgent, directory, [], TODAY, 365)
    hours = [s.response_hours for s in order]
    known = [h for h in hours if h is not None]
    assert known and hours[: len(known)] == sorted(known)


def test_a_broken_directory_file_names_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "funds.toml"
    bad.write_text('[[funds]]\nid = "x"\nname = "X"\nstatus = "open"\nlast_verified = 2026-01-01\n'
                   'purposes = ["medical"]\n')
    with pytest.raises(DirectoryFileError, match=r"funds.toml: fund 'x': field 'status' must be one of"):
        load_fund_directory(bad)
    with pytest.raises(DirectoryFileError, match="cannot be read"):
        load_fund_directory(tmp_path / "missing.toml")
