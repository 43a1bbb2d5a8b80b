"""Routing of the rapporteur action to UN Special Procedures mandates (docs/design.md section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.intake import parse_intake
from domain.routing import (
    MANDATE_LABELS,
    MANDATE_TITLES,
    RULES,
    Mandate,
    explain_intake,
    explain_routing,
    route_intake,
    route_rapporteur,
    routing_reasons,
)
from domain.vocab import AtRiskGroup, Gender, PerpetratorKind, Right, ThreatType
from tests.factories import T0, intake

M = Mandate
T = ThreatType
R = Right
G = AtRiskGroup
HRD = M.HUMAN_RIGHTS_DEFENDERS

CASES = [
    # (behaviour, threat types, rights, at-risk groups, expected mandates after the defenders one)
    ("every defender case goes to the defenders mandate", [], [], [], []),
    ("expression right goes to expression", [], [R.EXPRESSION], [], [M.EXPRESSION]),
    ("journalists go to expression", [], [], [G.JOURNALISTS], [M.EXPRESSION]),
    ("online speech attacked goes to expression", [T.ONLINE_ATTACK], [], [], [M.EXPRESSION]),
    ("access to information goes to expression", [], [R.INFORMATION], [], [M.EXPRESSION]),
    ("protest (assembly right) goes to assembly", [], [R.ASSEMBLY], [],
     [M.ASSEMBLY_AND_ASSOCIATION]),
    ("association right goes to assembly", [], [R.ASSOCIATION], [], [M.ASSEMBLY_AND_ASSOCIATION]),
    ("NGO registration measures go to assembly", [T.ADMINISTRATIVE_MEASURES], [], [],
     [M.ASSEMBLY_AND_ASSOCIATION]),
    ("foreign-funding restrictions go to assembly", [T.FUNDING_RESTRICTIONS], [], [],
     [M.ASSEMBLY_AND_ASSOCIATION]),
    ("trade unionists go to assembly", [], [], [G.TRADE_UNIONISTS], [M.ASSEMBLY_AND_ASSOCIATION]),
    ("disappearance goes to the working group", [T.ENFORCED_DISAPPEARANCE], [], [],
     [M.ENFORCED_DISAPPEARANCES]),
    ("abduction alone is not an enforced disappearance", [T.ABDUCTION], [], [], []),
    ("arbitrary detention goes to the working group", [T.ARBITRARY_DETENTION], [], [],
     [M.ARBITRARY_DETENTION]),
    ("liberty and security alone is not detention", [], [R.LIBERTY], [], []),
    ("torture goes to torture", [T.TORTURE], [], [], [M.TORTURE]),
    ("killing goes to executions", [T.KILLING], [], [], [M.EXECUTIONS]),
    ("death threat goes to executions", [T.DEATH_THREAT], [], [], [M.EXECUTIONS]),
    ("right to life goes to executions", [], [R.LIFE], [], [M.EXECUTIONS]),
    ("sexual assault on women defenders goes to violence against women and discrimination",
     [T.SEXUAL_ASSAULT], [], [G.WOMEN], [M.VIOLENCE_AGAINST_WOMEN, M.DISCRIMINATION_AGAINST_WOMEN]),
    ("physical assault on women defenders goes to violence against women",
     [T.PHYSICAL_ASSAULT], [], [G.WOMEN], [M.VIOLENCE_AGAINST_WOMEN]),
    ("assault without women defenders does not", [T.SEXUAL_ASSAULT], [], [], []),
    ("women defenders without violence do not", [T.FINES], [], [G.WOMEN], []),
    ("indigenous defenders go to indigenous peoples", [], [], [G.INDIGENOUS],
     [M.INDIGENOUS_PEOPLES]),
    ("indigenous land defenders go to indigenous peoples and the environment", [], [R.LAND],
     [G.INDIGENOUS], [M.INDIGENOUS_PEOPLES, M.ENVIRONMENT]),
    ("LGBTI defenders go to the SOGI expert", [], [], [G.LGBTI],
     [M.SEXUAL_ORIENTATION_GENDER_IDENTITY]),
    ("surveillance goes to privacy", [T.SURVEILLANCE], [], [], [M.PRIVACY]),
    ("privacy right goes to privacy", [], [R.PRIVACY], [], [M.PRIVACY]),
    ("lawyers go to judges and lawyers", [], [], [G.LAWYERS], [M.JUDGES_AND_LAWYERS]),
    ("fair-trial right goes to judges and lawyers", [], [R.FAIR_TRIAL], [],
     [M.JUDGES_AND_LAWYERS]),
    ("judicial harassment goes to judges and lawyers", [T.JUDICIAL_HARASSMENT], [], [],
     [M.JUDGES_AND_LAWYERS]),
    ("land and territory right goes to the environment", [], [R.LAND], [], [M.ENVIRONMENT]),
    ("healthy environment right goes to the environment", [], [R.ENVIRONMENT], [],
     [M.ENVIRONMENT]),
    ("land and environment defenders go to the environment", [], [], [G.LAND_ENVIRONMENT],
     [M.ENVIRONMENT]),
    ("smears against women defenders go to discrimination against women", [T.DEFAMATION], [],
     [G.WOMEN], [M.DISCRIMINATION_AGAINST_WOMEN]),
    ("online attacks on women defenders go to expression and discrimination against women",
     [T.ONLINE_ATTACK], [], [G.WOMEN], [M.EXPRESSION, M.DISCRIMINATION_AGAINST_WOMEN]),
    ("smears without women defenders do not go to discrimination against women",
     [T.DEFAMATION], [], [G.JOURNALISTS], [M.EXPRESSION]),
    ("physical assault alone is not a gendered attack", [T.PHYSICAL_ASSAULT], [], [G.WOMEN],
     [M.VIOLENCE_AGAINST_WOMEN]),
    ("freedom of religion or belief goes to religion", [], [R.RELIGION], [],
     [M.RELIGION_OR_BELIEF]),
    ("religious minorities go to religion and minority issues", [], [], [G.RELIGIOUS_MINORITY],
     [M.RELIGION_OR_BELIEF, M.MINORITY_ISSUES]),
    ("ethnic minorities go to minority issues", [], [], [G.ETHNIC_MINORITY], [M.MINORITY_ISSUES]),
    ("facts no mandate covers add nothing", [T.FINES, T.TRAVEL_BAN], [R.WORK], [G.STUDENTS], []),
    ("a journalist detained and tortured goes to four mandates in fixed order",
     [T.TORTURE, T.ARBITRARY_DETENTION], [R.EXPRESSION], [G.JOURNALISTS],
     [M.EXPRESSION, M.ARBITRARY_DETENTION, M.TORTURE]),
    ("a protest leader disappeared after death threats",
     [T.DEATH_THREAT, T.ENFORCED_DISAPPEARANCE], [R.ASSEMBLY], [],
     [M.ASSEMBLY_AND_ASSOCIATION, M.ENFORCED_DISAPPEARANCES, M.EXECUTIONS]),
]


@pytest.mark.parametrize(
    ("threats", "rights", "groups", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_routing(
    threats: list[ThreatType], rights: list[Right], groups: list[AtRiskGroup],
    expected: list[Mandate],
) -> None:
    assert route_rapporteur(threats, rights, groups) == [HRD, *expected]


def test_codes_as_plain_strings_route_like_the_vocabulary() -> None:
    assert route_rapporteur(["torture_or_ill_treatment"], ["freedom_of_expression"], []) == [
        HRD, M.EXPRESSION, M.TORTURE,
    ]


def test_unknown_code_is_refused_rather_than_silently_dropped() -> None:
    with pytest.raises(ValueError):
        route_rapporteur(["torture"], [], [])


def test_a_bare_string_is_refused_as_a_list_of_codes() -> None:
    with pytest.raises(TypeError):
        route_rapporteur("killing", [], [])


def test_reasons_name_the_facts_that_triggered_each_mandate() -> None:
    reasons = routing_reasons(
        [T.DEATH_THREAT, T.KILLING, T.SEXUAL_ASSAULT], [R.EXPRESSION], [G.WOMEN, G.JOURNALISTS]
    )
    assert reasons == {
        HRD: ["every defender case"],
        M.EXPRESSION: ["right affected: freedom of expression", "at-risk group: journalists"],
        M.EXECUTIONS: ["threat: killing", "threat: death threat"],
        M.VIOLENCE_AGAINST_WOMEN: ["threat: sexual assault", "at-risk group: women"],
        M.DISCRIMINATION_AGAINST_WOMEN: ["threat: sexual assault", "at-risk group: women"],
    }


def test_explanation_lists_the_same_mandates_as_the_route() -> None:
    routed = explain_routing([T.RAID, T.FUNDING_RESTRICTIONS], [R.PRIVACY], [G.LGBTI])
    assert [r.mandate for r in routed] == route_rapporteur(
        [T.RAID, T.FUNDING_RESTRICTIONS], [R.PRIVACY], [G.LGBTI]
    )


def test_every_mandate_can_be_reached_by_routing() -> None:
    everything = route_rapporteur(list(ThreatType), list(Right), list(AtRiskGroup),
                                  perpetrator_kinds=list(PerpetratorKind), genders=list(Gender))
    assert everything == list(Mandate)


def test_business_perpetrators_go_to_the_business_working_group() -> None:
    for kind in PerpetratorKind:
        routed = route_rapporteur([T.DEATH_THREAT], [], [], perpetrator_kinds=[kind])
        assert (M.BUSINESS_AND_HUMAN_RIGHTS in routed) == (kind is PerpetratorKind.BUSINESS)
    assert routing_reasons([], [], [], perpetrator_kinds=["business"])[
        M.BUSINESS_AND_HUMAN_RIGHTS] == ["perpetrators: business"]


def test_a_woman_defender_facing_a_gendered_attack_is_recognised_by_her_gender_too() -> None:
    reasons = routing_reasons([T.ONLINE_ATTACK, T.DEFAMATION], [], [], genders=[Gender.WOMAN])
    assert reasons[M.DISCRIMINATION_AGAINST_WOMEN] == [
        "threat: defamation or stigmatisation", "threat: online attack", "defender's gender: woman"]
    both = routing_reasons([T.SEXUAL_ASSAULT], [], [G.WOMEN], genders=[Gender.WOMAN])
    assert both[M.DISCRIMINATION_AGAINST_WOMEN] == [
        "threat: sexual assault", "at-risk group: women", "defender's gender: woman"]
    for gender in set(Gender) - {Gender.WOMAN}:
        assert M.DISCRIMINATION_AGAINST_WOMEN not in route_rapporteur(
            [T.SEXUAL_ASSAULT, T.DEFAMATION, T.ONLINE_ATTACK], [], [], genders=[gender])


def test_the_intake_routes_with_all_its_facts() -> None:
    """The defenders' groups and genders and the incident's perpetrators all count."""
    data = intake(threat_types=["defamation_or_stigmatisation"], rights_affected=["land_and_territory"])
    data["defenders"] = [
        {"name": "A One", "gender": "woman", "at_risk_groups": ["ethnic_minority"]},
        {"name": "B Two", "gender": "man", "at_risk_groups": ["lawyers"]},
    ]
    data["incident"] = {**data["incident"], "perpetrator_kind": "business"}
    clean = parse_intake(data, today=T0.date())
    assert route_intake(clean) == [HRD, M.JUDGES_AND_LAWYERS, M.BUSINESS_AND_HUMAN_RIGHTS,
                                   M.ENVIRONMENT, M.DISCRIMINATION_AGAINST_WOMEN, M.MINORITY_ISSUES]
    explained = {r.mandate: r.reasons for r in explain_intake(clean)}
    assert explained[M.BUSINESS_AND_HUMAN_RIGHTS] == ["perpetrators: business"]
    assert explained[M.DISCRIMINATION_AGAINST_WOMEN] == ["threat: defamation or stigmatisation",
                                                         "defender's gender: woman"]
    # A stored intake from before these facts were read routes as before.
    assert route_intake({"threat_types": ["killing"], "rights_affected": [],
                         "defenders": [{"at_risk_groups": []}], "incident": {}}) == [
        HRD, M.EXECUTIONS]


def test_every_mandate_has_a_short_label_and_a_full_title() -> None:
    assert set(MANDATE_LABELS) == set(Mandate) == set(MANDATE_TITLES)
    assert len(set(MANDATE_LABELS.values())) == len(Mandate)
    assert all(len(m.label) <= 45 for m in Mandate)
    assert M.HUMAN_RIGHTS_DEFENDERS.label == "SR Human Rights Defenders"
    assert M.ENFORCED_DISAPPEARANCES.label == "WG Enforced Disappearances"
    assert M.ARBITRARY_DETENTION.full_title == "Working Group on Arbitrary Detention"


def test_rules_cover_every_mandate_but_defenders_once() -> None:
    ruled = [rule.mandate for rule in RULES]
    assert sorted(ruled) == sorted(set(Mandate) - {HRD})


facts = st.tuples(
    st.lists(st.sampled_from(ThreatType)),
    st.lists(st.sampled_from(Right)),
    st.lists(st.sampled_from(AtRiskGroup)),
)
more_facts = st.tuples(
    facts, st.lists(st.sampled_from(PerpetratorKind)), st.lists(st.sampled_from(Gender))
)


@given(facts)
def test_defenders_mandate_is_always_present_and_first(
    case: tuple[list[ThreatType], list[Right], list[AtRiskGroup]],
) -> None:
    routed = route_rapporteur(*case)
    assert routed[0] is HRD
    assert HRD not in routed[1:]


@given(more_facts)
def test_routing_has_no_duplicates_and_follows_the_fixed_order(
    case: tuple[tuple[list[ThreatType], list[Right], list[AtRiskGroup]], list[PerpetratorKind],
                list[Gender]],
) -> None:
    basic, kinds, genders = case
    routed = route_rapporteur(*basic, perpetrator_kinds=kinds, genders=genders)
    order = list(Mandate)
    assert len(routed) == len(set(routed))
    assert [order.index(m) for m in routed] == sorted(order.index(m) for m in routed)


@given(facts, st.data())
def test_routing_does_not_depend_on_the_order_of_the_facts(
    case: tuple[list[ThreatType], list[Right], list[AtRiskGroup]], data: st.DataObject
) -> None:
    threats, rights, groups = (data.draw(st.permutations(part)) for part in case)
    assert routing_reasons(threats, rights, groups) == routing_reasons(*case)


@given(more_facts)
def test_every_routed_mandate_has_at_least_one_reason(
    case: tuple[tuple[list[ThreatType], list[Right], list[AtRiskGroup]], list[PerpetratorKind],
                list[Gender]],
) -> None:
    basic, kinds, genders = case
    reasons = routing_reasons(*basic, perpetrator_kinds=kinds, genders=genders)
    assert all(reasons.values())
    # Facts only ever add mandates: the perpetrators and genders never take one away.
    assert set(routing_reasons(*basic)) <= set(reasons)


@pytest.mark.parametrize("path", [None, "deploy/address_book.example.toml"])
def test_every_mandate_has_an_address_and_none_is_made_up(path: str | None) -> None:
    """Mandates without a known mailbox are reached through OHCHR's general mailbox for
    individual cases, listed as such; no mandate is silently left without an entry."""
    from pathlib import Path

    from activities.directories import load_address_book

    root = Path(__file__).resolve().parent.parent
    book = load_address_book(root / path if path else None)
    assert book.missing_mandates(list(Mandate)) == []
    general = [e.address for e in book.general()]
    assert general == ["urgent-action@ohchr.org"]
    for mandate in (M.JUDGES_AND_LAWYERS, M.BUSINESS_AND_HUMAN_RIGHTS, M.ENVIRONMENT,
                    M.DISCRIMINATION_AGAINST_WOMEN, M.RELIGION_OR_BELIEF, M.MINORITY_ISSUES):
        assert [e.address for e in book.for_mandate(mandate)] == general
    routed = route_rapporteur([T.JUDICIAL_HARASSMENT], [R.RELIGION], [G.ETHNIC_MINORITY],
                              perpetrator_kinds=["business"])
    assert [e.address for e in book.rapporteur_recipients(routed)] == [
        "urgent-action@ohchr.org", "defenders@ohchr.org"]
