"""Routing of the rapporteur action to UN Special Procedures mandates (DESIGN.md section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.routing import (
    MANDATE_LABELS,
    MANDATE_TITLES,
    RULES,
    Mandate,
    explain_routing,
    route_rapporteur,
    routing_reasons,
)
from domain.vocab import AtRiskGroup, Right, ThreatType

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
    ("sexual assault on women defenders goes to violence against women",
     [T.SEXUAL_ASSAULT], [], [G.WOMEN], [M.VIOLENCE_AGAINST_WOMEN]),
    ("physical assault on women defenders goes to violence against women",
     [T.PHYSICAL_ASSAULT], [], [G.WOMEN], [M.VIOLENCE_AGAINST_WOMEN]),
    ("assault without women defenders does not", [T.SEXUAL_ASSAULT], [], [], []),
    ("women defenders without violence do not", [T.FINES], [], [G.WOMEN], []),
    ("indigenous defenders go to indigenous peoples", [], [R.LAND], [G.INDIGENOUS],
     [M.INDIGENOUS_PEOPLES]),
    ("LGBTI defenders go to the SOGI expert", [], [], [G.LGBTI],
     [M.SEXUAL_ORIENTATION_GENDER_IDENTITY]),
    ("surveillance goes to privacy", [T.SURVEILLANCE], [], [], [M.PRIVACY]),
    ("privacy right goes to privacy", [], [R.PRIVACY], [], [M.PRIVACY]),
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
    }


def test_explanation_lists_the_same_mandates_as_the_route() -> None:
    routed = explain_routing([T.RAID, T.FUNDING_RESTRICTIONS], [R.PRIVACY], [G.LGBTI])
    assert [r.mandate for r in routed] == route_rapporteur(
        [T.RAID, T.FUNDING_RESTRICTIONS], [R.PRIVACY], [G.LGBTI]
    )


def test_every_mandate_can_be_reached_by_routing() -> None:
    everything = route_rapporteur(list(ThreatType), list(Right), list(AtRiskGroup))
    assert everything == list(Mandate)


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


@given(facts)
def test_defenders_mandate_is_always_present_and_first(
    case: tuple[list[ThreatType], list[Right], list[AtRiskGroup]],
) -> None:
    routed = route_rapporteur(*case)
    assert routed[0] is HRD
    assert HRD not in routed[1:]


@given(facts)
def test_routing_has_no_duplicates_and_follows_the_fixed_order(
    case: tuple[list[ThreatType], list[Right], list[AtRiskGroup]],
) -> None:
    routed = route_rapporteur(*case)
    order = list(Mandate)
    assert len(routed) == len(set(routed))
    assert [order.index(m) for m in routed] == sorted(order.index(m) for m in routed)


@given(facts, st.data())
def test_routing_does_not_depend_on_the_order_of_the_facts(
    case: tuple[list[ThreatType], list[Right], list[AtRiskGroup]], data: st.DataObject
) -> None:
    threats, rights, groups = (data.draw(st.permutations(part)) for part in case)
    assert routing_reasons(threats, rights, groups) == routing_reasons(*case)


@given(facts)
def test_every_routed_mandate_has_at_least_one_reason(
    case: tuple[list[ThreatType], list[Right], list[AtRiskGroup]],
) -> None:
    assert all(reasons for reasons in routing_reasons(*case).values())
