"""The secretariat's vocabularies.

Values are stored in events and travel through Temporal, so they are short, stable, lower-case codes;
renaming one is a data migration, not a refactoring. Labels are for people.
"""

from __future__ import annotations

from enum import StrEnum


class ThreatType(StrEnum):
    KILLING = "killing"
    DEATH_THREAT = "death_threat"
    PHYSICAL_ASSAULT = "physical_assault"
    SEXUAL_ASSAULT = "sexual_assault"
    TORTURE = "torture_or_ill_treatment"
    ARBITRARY_DETENTION = "arbitrary_arrest_or_detention"
    ENFORCED_DISAPPEARANCE = "enforced_disappearance"
    ABDUCTION = "abduction"
    JUDICIAL_HARASSMENT = "judicial_harassment"
    FINES = "fines"
    DEFAMATION = "defamation_or_stigmatisation"
    SURVEILLANCE = "surveillance_or_eavesdropping"
    RAID = "raid_or_break_in"
    PROPERTY_ATTACK = "vandalism_or_attack_on_property"
    TRAVEL_BAN = "travel_ban"
    LOSS_OF_EMPLOYMENT = "loss_of_employment_or_education"
    ADMINISTRATIVE_MEASURES = "administrative_or_registration_measures"
    FUNDING_RESTRICTIONS = "funding_restrictions"
    ONLINE_ATTACK = "online_attack"


class Right(StrEnum):
    LIFE = "life"
    PHYSICAL_INTEGRITY = "physical_integrity"
    LIBERTY = "liberty_and_security"
    FAIR_TRIAL = "fair_trial"
    EXPRESSION = "freedom_of_expression"
    ASSEMBLY = "peaceful_assembly"
    ASSOCIATION = "freedom_of_association"
    PRIVACY = "privacy"
    MOVEMENT = "freedom_of_movement"
    NON_DISCRIMINATION = "non_discrimination"
    WORK = "work"
    PROPERTY = "property"
    PARTICIPATION = "participation_in_public_affairs"
    LAND = "land_and_territory"
    ENVIRONMENT = "healthy_environment"
    RELIGION = "freedom_of_religion_or_belief"
    INFORMATION = "access_to_information"


class AtRiskGroup(StrEnum):
    WOMEN = "women"
    LGBTI = "lgbti"
    INDIGENOUS = "indigenous"
    JOURNALISTS = "journalists"
    LAND_ENVIRONMENT = "land_and_environment"
    TRADE_UNIONISTS = "trade_unionists"
    LAWYERS = "lawyers"
    STUDENTS = "students"
    RELIGIOUS_MINORITY = "religious_minority"
    ETHNIC_MINORITY = "ethnic_minority"
    MIGRANTS = "migrants"
    DISABILITY = "persons_with_disabilities"
    YOUTH = "youth"
    EXILE = "in_exile"


class Gender(StrEnum):
    WOMAN = "woman"
    MAN = "man"
    TRANS = "trans"
    NON_BINARY = "non_binary"
    UNDISCLOSED = "undisclosed"


class PerpetratorKind(StrEnum):
    STATE = "state"
    NON_STATE = "non_state"
    BUSINESS = "business"
    UNKNOWN = "unknown"


class Action(StrEnum):
    """What the secretariat can do for a case; each needs the grantee's consent."""

    RAPPORTEUR = "rapporteur"
    MFA = "mfa"
    EU_DELEGATION = "eu_delegation"
    EMERGENCY_FUND = "emergency_fund"


class Urgency(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


# Risk levels share the urgency scale so that one deadline table serves before and after verification.
RiskLevel = Urgency


class Verdict(StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    NEEDS_MORE_INFORMATION = "needs_more_information"


class Stage(StrEnum):
    VERIFICATION = "verification"
    CONSENT = "consent"
    CLEARANCE = "clearance"
    DISPATCH = "dispatch"
    FOLLOW_UP = "follow_up"
    CLOSED = "closed"


class Outcome(StrEnum):
    RESOLVED = "resolved"
    NO_FURTHER_ACTION = "no_further_action"
    UNVERIFIED = "unverified"
    WITHDRAWN_BY_GRANTEE = "withdrawn_by_grantee"
    DUPLICATE = "duplicate"
    REFERRED_ELSEWHERE = "referred_elsewhere"


class PublicNaming(StrEnum):
    """How the defenders may be named in public reports (e.g. the UN communications report)."""

    FULL_NAMES = "full_names"
    INITIALS_ONLY = "initials_only"
    ANONYMOUS = "anonymous"


class Role(StrEnum):
    CASE_OFFICER = "case_officer"
    MINISTRY_LIAISON = "ministry_liaison"
    HEAD = "head"
    AUDITOR = "auditor"
