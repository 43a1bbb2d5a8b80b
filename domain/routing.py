"""Which UN Special Procedures mandates an urgent appeal goes to (docs/design.md section 3.1).

Routing follows what happened: the threat types, the rights affected and the at-risk groups of the
case, who the perpetrators are and the defenders' gender. Every defender case goes to the mandate on
human rights defenders, first; the others follow from the rules below, in a fixed order so that the
same case always gives the same subject line. The rules are data (`RULES`) and every routed mandate
carries the triggers that put it there, so that staff see why a mandate is addressed and can argue
with it. `explain_intake` / `route_intake` read those facts from a normalised intake: callers that
route a case should use them, so that the letter's subject and its recipients agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from domain.vocab import AtRiskGroup, Gender, PerpetratorKind, Right, ThreatType


class Mandate(StrEnum):
    """The mandates routing can address. Values are stored and travel: never rename one."""

    HUMAN_RIGHTS_DEFENDERS = "human_rights_defenders"
    EXPRESSION = "freedom_of_expression"
    ASSEMBLY_AND_ASSOCIATION = "assembly_and_association"
    ENFORCED_DISAPPEARANCES = "enforced_disappearances"
    ARBITRARY_DETENTION = "arbitrary_detention"
    TORTURE = "torture"
    EXECUTIONS = "executions"
    # Beyond the seven that docs/design.md section 3.1 routes to, only mandates that a field of the
    # intake points at unambiguously:
    # - women defenders facing sexual or physical violence: gender-based violence is the subject
    #   of the mandate on violence against women and girls;
    VIOLENCE_AGAINST_WOMEN = "violence_against_women"
    # - the at-risk group "indigenous" (land and territory defenders are very often indigenous);
    INDIGENOUS_PEOPLES = "indigenous_peoples"
    # - the at-risk group "lgbti": the Independent Expert on sexual orientation and gender identity;
    SEXUAL_ORIENTATION_GENDER_IDENTITY = "sexual_orientation_gender_identity"
    # - the right to privacy and surveillance of defenders (a threat type of its own).
    PRIVACY = "privacy"
    # Added after the first eleven, so at the end of the subject line (see RULES for the triggers):
    JUDGES_AND_LAWYERS = "independence_of_judges_and_lawyers"
    BUSINESS_AND_HUMAN_RIGHTS = "business_and_human_rights"
    ENVIRONMENT = "environment"
    DISCRIMINATION_AGAINST_WOMEN = "discrimination_against_women_and_girls"
    RELIGION_OR_BELIEF = "freedom_of_religion_or_belief"
    MINORITY_ISSUES = "minority_issues"

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
    Mandate.JUDGES_AND_LAWYERS: "SR Independence of Judges and Lawyers",
    Mandate.BUSINESS_AND_HUMAN_RIGHTS: "WG Business and Human Rights",
    Mandate.ENVIRONMENT: "SR Environment",
    Mandate.DISCRIMINATION_AGAINST_WOMEN: "WG Discrimination against Women and Girls",
    Mandate.RELIGION_OR_BELIEF: "SR Freedom of Religion or Belief",
    Mandate.MINORITY_ISSUES: "SR Minority Issues",
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
    Mandate.JUDGES_AND_LAWYERS: "Special Rapporteur on the independence of judges and lawyers",
    Mandate.BUSINESS_AND_HUMAN_RIGHTS: (
        "Working Group on the issue of human rights and transnational corporations and other "
        "business enterprises"
    ),
    Mandate.ENVIRONMENT: (
        "Special Rapporteur on the human right to a clean, healthy and sustainable environment"
    ),
    Mandate.DISCRIMINATION_AGAINST_WOMEN: "Working Group on discrimination against women and girls",
    Mandate.RELIGION_OR_BELIEF: "Special Rapporteur on freedom of religion or belief",
    Mandate.MINORITY_ISSUES: "Special Rapporteur on minority issues",
}


E = TypeVar("E", bound=StrEnum)


class TriggerKind(StrEnum):
    ALWAYS = "always"
    THREAT_TYPE = "threat_type"
    RIGHT = "right"
    AT_RISK_GROUP = "at_risk_group"
    PERPETRATOR_KIND = "perpetrator_kind"  # the intake's incident.perpetrator_kind
    GENDER = "gender"  # a defender's gender


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
            TriggerKind.PERPETRATOR_KIND: "perpetrators",
            TriggerKind.GENDER: "defender's gender",
        }[self.kind]
        return f"{noun}: {self.value.replace('_', ' ')}"


@dataclass(frozen=True)
class RoutingRule:
    """A mandate is addressed when any listed fact is in the case.

    `only_with_groups`, when set, must all be present too: they narrow the rule (women defenders,
    not every victim of an assault) and are reported among the triggers. `only_with_any`, when set,
    narrows by facts of which at least one must be present (the at-risk group "women" or a defender
    whose gender is "woman"); those present are reported among the triggers too.
    """

    mandate: Mandate
    threat_types: frozenset[ThreatType] = frozenset()
    rights: frozenset[Right] = frozenset()
    at_risk_groups: frozenset[AtRiskGroup] = frozenset()
    perpetrator_kinds: frozenset[PerpetratorKind] = frozenset()
    only_with_groups: frozenset[AtRiskGroup] = frozenset()
    only_with_any: tuple[Trigger, ...] = ()


@dataclass(frozen=True)
class RoutedMandate:
    mandate: Mandate
    triggers: tuple[Trigger, ...]

    @property
    def reasons(self) -> list[str]:
        return [trigger.describe() for trigger in self.triggers]


# In the order of the subject line after the defenders mandate. Comments say why a fact counts
# where docs/design.md section 3.1 does not say so in as many words.
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
    # Lawyers are the mandate's own constituency; fair-trial guarantees are its subject, and
    # judicial harassment (the justice system turned against a defender) is a misuse of them.
    RoutingRule(
        Mandate.JUDGES_AND_LAWYERS,
        threat_types=frozenset({ThreatType.JUDICIAL_HARASSMENT}),
        rights=frozenset({Right.FAIR_TRIAL}),
        at_risk_groups=frozenset({AtRiskGroup.LAWYERS}),
    ),
    # Abuses by a business enterprise or persons acting for it (the intake's perpetrator kind);
    # the working group asks both the state and the company to answer.
    RoutingRule(
        Mandate.BUSINESS_AND_HUMAN_RIGHTS,
        perpetrator_kinds=frozenset({PerpetratorKind.BUSINESS}),
    ),
    # Land and environmental defenders: the mandate on the right to a clean, healthy and
    # sustainable environment treats them as environmental human rights defenders.
    RoutingRule(
        Mandate.ENVIRONMENT,
        rights=frozenset({Right.LAND, Right.ENVIRONMENT}),
        at_risk_groups=frozenset({AtRiskGroup.LAND_ENVIRONMENT}),
    ),
    # Women defenders facing gendered attacks: sexual violence, smear campaigns and online abuse
    # are how women defenders are most often targeted *as women*. Physical assault alone is not
    # taken as gendered (it goes to violence against women, above, when the group is recorded).
    # Women defenders are recognised by the at-risk group or by a defender's gender; a trans woman
    # is recognised by the at-risk group "women", since the gender code "trans" does not say which.
    RoutingRule(
        Mandate.DISCRIMINATION_AGAINST_WOMEN,
        threat_types=frozenset(
            {ThreatType.SEXUAL_ASSAULT, ThreatType.DEFAMATION, ThreatType.ONLINE_ATTACK}
        ),
        only_with_any=(
            Trigger(TriggerKind.AT_RISK_GROUP, AtRiskGroup.WOMEN.value),
            Trigger(TriggerKind.GENDER, Gender.WOMAN.value),
        ),
    ),
    RoutingRule(
        Mandate.RELIGION_OR_BELIEF,
        rights=frozenset({Right.RELIGION}),
        at_risk_groups=frozenset({AtRiskGroup.RELIGIOUS_MINORITY}),
    ),
    # National or ethnic, religious and linguistic minorities (UN Minorities Declaration).
    RoutingRule(
        Mandate.MINORITY_ISSUES,
        at_risk_groups=frozenset({AtRiskGroup.ETHNIC_MINORITY, AtRiskGroup.RELIGIOUS_MINORITY}),
    ),
)


def explain_routing(
    threat_types: Iterable[ThreatType | str],
    rights: Iterable[Right | str],
    at_risk_groups: Iterable[AtRiskGroup | str],
    *,
    perpetrator_kinds: Iterable[PerpetratorKind | str] = (),
    genders: Iterable[Gender | str] = (),
) -> list[RoutedMandate]:
    """The mandates to address, defenders first, each with the facts that triggered it.

    Unknown codes raise ValueError (from the vocabulary), so a typo cannot silently drop a mandate.
    """
    facts = _Facts(
        threats=_as_set(ThreatType, threat_types),
        rights=_as_set(Right, rights),
        groups=_as_set(AtRiskGroup, at_risk_groups),
        perpetrators=_as_set(PerpetratorKind, perpetrator_kinds),
        genders=_as_set(Gender, genders),
    )
    routed = [RoutedMandate(Mandate.HUMAN_RIGHTS_DEFENDERS, (Trigger(TriggerKind.ALWAYS),))]
    for rule in RULES:
        triggers = _triggers(rule, facts)
        if triggers:
            routed.append(RoutedMandate(rule.mandate, triggers))
    return routed


def route_rapporteur(
    threat_types: Iterable[ThreatType | str],
    rights: Iterable[Right | str],
    at_risk_groups: Iterable[AtRiskGroup | str],
    *,
    perpetrator_kinds: Iterable[PerpetratorKind | str] = (),
    genders: Iterable[Gender | str] = (),
) -> list[Mandate]:
    """The mandates to address, in order, without duplicates; the defenders mandate is first."""
    return [routed.mandate for routed in explain_routing(
        threat_types, rights, at_risk_groups, perpetrator_kinds=perpetrator_kinds,
        genders=genders)]


def routing_reasons(
    threat_types: Iterable[ThreatType | str],
    rights: Iterable[Right | str],
    at_risk_groups: Iterable[AtRiskGroup | str],
    *,
    perpetrator_kinds: Iterable[PerpetratorKind | str] = (),
    genders: Iterable[Gender | str] = (),
) -> dict[Mandate, list[str]]:
    """For each routed mandate (in routing order), why it is addressed, in words for staff."""
    return {
        routed.mandate: routed.reasons
        for routed in explain_routing(threat_types, rights, at_risk_groups,
                                      perpetrator_kinds=perpetrator_kinds, genders=genders)
    }


def explain_intake(intake: Mapping[str, Any]) -> list[RoutedMandate]:
    """`explain_routing` over the facts of a normalised intake (domain.intake.parse_intake): its
    threat types and rights, the at-risk groups and genders of all its defenders, and the
    incident's perpetrator kind."""
    defenders = intake.get("defenders") or []
    incident = intake.get("incident") or {}
    kind = incident.get("perpetrator_kind")
    return explain_routing(
        intake.get("threat_types") or [],
        intake.get("rights_affected") or [],
        sorted({g for d in defenders for g in d.get("at_risk_groups") or []}),
        perpetrator_kinds=[kind] if kind else [],
        genders=sorted({d["gender"] for d in defenders if d.get("gender")}),
    )


def route_intake(intake: Mapping[str, Any]) -> list[Mandate]:
    """The mandates a normalised intake's rapporteur action goes to, in order."""
    return [routed.mandate for routed in explain_intake(intake)]


@dataclass(frozen=True)
class _Facts:
    threats: frozenset[ThreatType]
    rights: frozenset[Right]
    groups: frozenset[AtRiskGroup]
    perpetrators: frozenset[PerpetratorKind]
    genders: frozenset[Gender]

    def has(self, trigger: Trigger) -> bool:
        present: frozenset[StrEnum] = {
            TriggerKind.THREAT_TYPE: self.threats,
            TriggerKind.RIGHT: self.rights,
            TriggerKind.AT_RISK_GROUP: self.groups,
            TriggerKind.PERPETRATOR_KIND: self.perpetrators,
            TriggerKind.GENDER: self.genders,
        }.get(trigger.kind, frozenset())
        return any(member.value == trigger.value for member in present)


def _triggers(rule: RoutingRule, facts: _Facts) -> tuple[Trigger, ...]:
    if not rule.only_with_groups <= facts.groups:
        return ()
    any_of = [t for t in rule.only_with_any if facts.has(t)]
    if rule.only_with_any and not any_of:
        return ()
    found = (
        [Trigger(TriggerKind.THREAT_TYPE, t.value)
         for t in _in_order(rule.threat_types, facts.threats)]
        + [Trigger(TriggerKind.RIGHT, r.value) for r in _in_order(rule.rights, facts.rights)]
        + [
            Trigger(TriggerKind.AT_RISK_GROUP, g.value)
            for g in _in_order(rule.at_risk_groups, facts.groups)
        ]
        + [
            Trigger(TriggerKind.PERPETRATOR_KIND, p.value)
            for p in _in_order(rule.perpetrator_kinds, facts.perpetrators)
        ]
    )
    if not found:
        return ()
    narrowing = [
        Trigger(TriggerKind.AT_RISK_GROUP, g.value)
        for g in _in_order(rule.only_with_groups, facts.groups)
    ]
    return tuple(found + narrowing + any_of)


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
