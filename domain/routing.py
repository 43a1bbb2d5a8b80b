"""Which UN Special Procedures mandates an urgent appeal goes to (DESIGN.md section 3).

Routing follows what happened: the threat types, the rights affected and the at-risk groups of the
case. Every defender case goes to the mandate on human rights defenders, first; the others follow
from the rules below, in a fixed order so that the same case always gives the same subject line.
The rules are data (`RULES`) and every routed mandate carries the triggers that put it there, so
that staff see why a mandate is addressed and can argue with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from domain.vocab import AtRiskGroup, Right, ThreatType


class Mandate(StrEnum):
    """The mandates routing can address. Values are stored and travel: never rename one."""

    HUMAN_RIGHTS_DEFENDERS = "human_rights_defenders"
    EXPRESSION = "freedom_of_expression"
    ASSEMBLY_AND_ASSOCIATION = "assembly_and_association"
    ENFORCED_DISAPPEARANCES = "enforced_disappearances"
    ARBITRARY_DETENTION = "arbitrary_detention"
    TORTURE = "torture"
    EXECUTIONS = "executions"
    # Beyond the seven that DESIGN.md names, only mandates that a field of the intake points at
    # unambiguously:
    # - women defenders facing sexual or physical violence: gender-based violence is the subject
    #   of the mandate on violence against women and girls;
    VIOLENCE_AGAINST_WOMEN = "violence_against_women"
    # - the at-risk group "indigenous" (land and territory defenders are very often indigenous);
    INDIGENOUS_PEOPLES = "indigenous_peoples"
    # - the at-risk group "lgbti": the Independent Expert on sexual orientation and gender identity;
    SEXUAL_ORIENTATION_GENDER_IDENTITY = "sexual_orientation_gender_identity"
    # - the right to privacy and surveillance of defenders (a threat type of its own).
    PRIVACY = "privacy"

    @property
    def label(self) -> str:
        """Short name for subject lines and lists."""
        return MANDATE_LABELS[self]

    @property
    def full_title(self) -> str:
        """The mandate's full title, for the body of a submission."""
        return MANDATE_TITLES[self]


MANDATE_LABELS: dict[Mandate, str] = {
    Mandate.HUMAN_RIGHTS_DEFENDERS: "SR Human Rights Defenders",
    Mandate.EXPRESSION: "SR Freedom of Expression",
    Mandate.ASSEMBLY_AND_ASSOCIATION: "SR Assembly and Association",
    Mandate.ENFORCED_DISAPPEARANCES: "WG Enforced Disappearances",
    Mandate.ARBITRARY_DETENTION: "WG Arbitrary Detention",
    Mandate.TORTURE: "SR Torture",
    Mandate.EXECUTIONS: "SR Extrajudicial Executions",
    Mandate.VIOLENCE_AGAINST_WOMEN: "SR Violence against Women",
    Mandate.INDIGENOUS_PEOPLES: "SR Indigenous Peoples",
    Mandate.SEXUAL_ORIENTATION_GENDER_IDENTITY: "IE Sexual Orientation and Gender Identity",
    Mandate.PRIVACY: "SR Privacy",
}

MANDATE_TITLES: dict[Mandate, str] = {
    Mandate.HUMAN_RIGHTS_DEFENDERS: "Special Rapporteur on the situation of human rights defenders",
    Mandate.EXPRESSION: (
        "Special Rapporteur on the promotion and protection of the right to freedom of opinion "
        "and expression"
    ),
    Mandate.ASSEMBLY_AND_ASSOCIATION: (
        "Special Rapporteur on the rights to freedom of peaceful assembly and of association"
    ),
    Mandate.ENFORCED_DISAPPEARANCES: "Working Group on Enforced or Involuntary Disappearances",
    Mandate.ARBITRARY_DETENTION: "Working Group on Arbitrary Detention",
    Mandate.TORTURE: (
        "Special Rapporteur on torture and other cruel, inhuman or degrading treatment or "
        "punishment"
    ),
    Mandate.EXECUTIONS: "Special Rapporteur on extrajudicial, summary or arbitrary executions",
    Mandate.VIOLENCE_AGAINST_WOMEN: (
        "Special Rapporteur on violence against women and girls, its causes and consequences"
    ),
    Mandate.INDIGENOUS_PEOPLES: "Special Rapporteur on the rights of Indigenous Peoples",
    Mandate.SEXUAL_ORIENTATION_GENDER_IDENTITY: (
        "Independent Expert on protection against violence and discrimination based on sexual "
        "orientation and gender identity"
    ),
    Mandate.PRIVACY: "Special Rapporteur on the right to privacy",
}


E = TypeVar("E", bound=StrEnum)


class TriggerKind(StrEnum):
    ALWAYS = "always"
    THREAT_TYPE = "threat_type"
    RIGHT = "right"
    AT_RISK_GROUP = "at_risk_group"


@dataclass(frozen=True)
class Trigger:
    """One fact of the case that put a mandate on the list."""

    kind: TriggerKind
    value: str = ""

    def describe(self) -> str:
        if self.kind is TriggerKind.ALWAYS:
            return "every defender case"
        noun = {
            TriggerKind.THREAT_TYPE: "threat",
            TriggerKind.RIGHT: "right affected",
            TriggerKind.AT_RISK_GROUP: "at-risk group",
        }[self.kind]
        return f"{noun}: {self.value.replace('_', ' ')}"


@dataclass(frozen=True)
class RoutingRule:
    """A mandate is addressed when any listed fact is in the case.

    `only_with_groups`, when set, must all be present too: they narrow the rule (women defenders,
    not every victim of an assault) and are reported among the triggers.
    """

    mandate: Mandate
    threat_types: frozenset[ThreatType] = frozenset()
    rights: frozenset[Right] = frozenset()
    at_risk_groups: frozenset[AtRiskGroup] = frozenset()
    only_with_groups: frozenset[AtRiskGroup] = frozenset()


@dataclass(frozen=True)
class RoutedMandate:
    mandate: Mandate
    triggers: tuple[Trigger, ...]

    @property
    def reasons(self) -> list[str]:
        return [trigger.describe() for trigger in self.triggers]


# In the order of the subject line after the defenders mandate. Comments say why a fact counts
# where DESIGN.md section 3 does not say so in as many words.
RULES: tuple[RoutingRule, ...] = (
    RoutingRule(
        Mandate.EXPRESSION,
        # "Online speech": attacks on defenders online are the threat type closest to it.
        threat_types=frozenset({ThreatType.ONLINE_ATTACK}),
        # Access to information is part of the same article (ICCPR art. 19) and mandate.
        rights=frozenset({Right.EXPRESSION, Right.INFORMATION}),
        at_risk_groups=frozenset({AtRiskGroup.JOURNALISTS}),
    ),
    RoutingRule(
        Mandate.ASSEMBLY_AND_ASSOCIATION,
        # NGO registration measures and foreign-funding restrictions; protests come in through
        # the right of peaceful assembly.
        threat_types=frozenset(
            {ThreatType.ADMINISTRATIVE_MEASURES, ThreatType.FUNDING_RESTRICTIONS}
        ),
        rights=frozenset({Right.ASSEMBLY, Right.ASSOCIATION}),
        # Trade union rights are part of freedom of association and of this mandate.
        at_risk_groups=frozenset({AtRiskGroup.TRADE_UNIONISTS}),
    ),
    # Abduction alone is not routed here: an enforced disappearance needs the involvement or
    # acquiescence of the state, which the case officer records as this threat type.
    RoutingRule(
        Mandate.ENFORCED_DISAPPEARANCES,
        threat_types=frozenset({ThreatType.ENFORCED_DISAPPEARANCE}),
    ),
    # The right to liberty and security alone is not routed here: "security" covers threats
    # without any detention.
    RoutingRule(
        Mandate.ARBITRARY_DETENTION,
        threat_types=frozenset({ThreatType.ARBITRARY_DETENTION}),
    ),
    RoutingRule(Mandate.TORTURE, threat_types=frozenset({ThreatType.TORTURE})),
    RoutingRule(
        Mandate.EXECUTIONS,
        threat_types=frozenset({ThreatType.KILLING, ThreatType.DEATH_THREAT}),
        # The mandate covers every arbitrary deprivation of life, so the right to life counts.
        rights=frozenset({Right.LIFE}),
    ),
    RoutingRule(
        Mandate.VIOLENCE_AGAINST_WOMEN,
        threat_types=frozenset({ThreatType.SEXUAL_ASSAULT, ThreatType.PHYSICAL_ASSAULT}),
        only_with_groups=frozenset({AtRiskGroup.WOMEN}),
    ),
    RoutingRule(
        Mandate.INDIGENOUS_PEOPLES,
        at_risk_groups=frozenset({AtRiskGroup.INDIGENOUS}),
    ),
    RoutingRule(
        Mandate.SEXUAL_ORIENTATION_GENDER_IDENTITY,
        at_risk_groups=frozenset({AtRiskGroup.LGBTI}),
    ),
    RoutingRule(
        Mandate.PRIVACY,
        threat_types=frozenset({ThreatType.SURVEILLANCE}),
        rights=frozenset({Right.PRIVACY}),
    ),
)


def explain_routing(
    threat_types: Iterable[ThreatType | str],
    rights: Iterable[Right | str],
    at_risk_groups: Iterable[AtRiskGroup | str],
) -> list[RoutedMandate]:
    """The mandates to address, defenders first, each with the facts that triggered it.

    Unknown codes raise ValueError (from the vocabulary), so a typo cannot silently drop a mandate.
    """
    threats = _as_set(ThreatType, threat_types)
    rights_set = _as_set(Right, rights)
    groups = _as_set(AtRiskGroup, at_risk_groups)
    routed = [RoutedMandate(Mandate.HUMAN_RIGHTS_DEFENDERS, (Trigger(TriggerKind.ALWAYS),))]
    for rule in RULES:
        triggers = _triggers(rule, threats, rights_set, groups)
        if triggers:
            routed.append(RoutedMandate(rule.mandate, triggers))
    return routed


def route_rapporteur(
    threat_types: Iterable[ThreatType | str],
    rights: Iterable[Right | str],
    at_risk_groups: Iterable[AtRiskGroup | str],
) -> list[Mandate]:
    """The mandates to address, in order, without duplicates; the defenders mandate is first."""
    return [routed.mandate for routed in explain_routing(threat_types, rights, at_risk_groups)]


def routing_reasons(
    threat_types: Iterable[ThreatType | str],
    rights: Iterable[Right | str],
    at_risk_groups: Iterable[AtRiskGroup | str],
) -> dict[Mandate, list[str]]:
    """For each routed mandate (in routing order), why it is addressed, in words for staff."""
    return {
        routed.mandate: routed.reasons
        for routed in explain_routing(threat_types, rights, at_risk_groups)
    }


def _triggers(
    rule: RoutingRule,
    threats: frozenset[ThreatType],
    rights: frozenset[Right],
    groups: frozenset[AtRiskGroup],
) -> tuple[Trigger, ...]:
    if not rule.only_with_groups <= groups:
        return ()
    found = (
        [Trigger(TriggerKind.THREAT_TYPE, t.value) for t in _in_order(rule.threat_types, threats)]
        + [Trigger(TriggerKind.RIGHT, r.value) for r in _in_order(rule.rights, rights)]
        + [
            Trigger(TriggerKind.AT_RISK_GROUP, g.value)
            for g in _in_order(rule.at_risk_groups, groups)
        ]
    )
    if not found:
        return ()
    narrowing = [
        Trigger(TriggerKind.AT_RISK_GROUP, g.value)
        for g in _in_order(rule.only_with_groups, groups)
    ]
    return tuple(found + narrowing)


def _in_order(wanted: frozenset[E], present: frozenset[E]) -> list[E]:
    """The members of `wanted` that are present, in vocabulary order (stable reasons)."""
    return sorted(wanted & present, key=_vocab_index)


def _vocab_index(member: StrEnum) -> int:
    return list(type(member)).index(member)


def _as_set(vocabulary: type[E], values: Iterable[E | str]) -> frozenset[E]:
    if isinstance(values, str):
        # A bare string is an iterable of characters: a caller's mistake, not a list of one code.
        raise TypeError(f"{vocabulary.__name__} values must be a collection of codes, not a string")
    return frozenset(vocabulary(value) for value in values)
