"""Five fictional cases for the message tests (tests/test_messages.py) and their golden files.

Every name, place, organisation and address is invented; email addresses are at example.org.
Each case is walked through the aggregate as staff would: opened from a raw intake, verified,
consented action by action (with the grantee's conditions and naming preference), cleared by a
second person. The verification texts carry markers (VERISRC-, DNH-, NOTE-) so that tests can
prove that none of them reaches any outgoing message.

The aggregate is the older domain.case.Case: each defender's publicity profile is the most
restrictive naming over the granted actions, and it records no detail of who gave consent. A case
with `consent_givers` is wrapped so that it answers them as a tracked case does (the trade
unionist, disappeared, for whom his wife consented).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from activities.messages import Composer
from domain.case import Case, new_case
from domain.intake import parse_intake, parse_verification
from domain.policies import clearance_required, deadline_table

TODAY = date(2026, 11, 5)
T0 = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=3)
T2 = T0 + timedelta(hours=6)
T3 = T0 + timedelta(hours=9)

SIGNATORY_NAME = "Hedda Quillmarsh"
SIGNATORY_ORGANISATION = "Secretariat of the Tallowmere Fund for Defenders at Risk"


def composer() -> Composer:
    """The composer as the worker configures it, with an invented signatory."""
    return Composer(signatory_name=SIGNATORY_NAME, signatory_organisation=SIGNATORY_ORGANISATION)


@dataclass(frozen=True)
class Consent:
    public_naming: str = "initials_only"
    conditions: str = ""
    refused: str = ""  # a reason: the grantee refused this action


@dataclass(frozen=True)
class MessageCase:
    key: str
    reference: str
    intake: dict[str, Any]
    verification: dict[str, Any]
    consents: dict[str, Consent]
    fund_id: str | None = None
    further_information: dict[str, str] = field(default_factory=dict)
    # Action -> who consented for whom (the shape of MessageCase.consent_givers).
    consent_givers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def build(self) -> Any:
        """The case as it stands at dispatch: verified, consented, cleared."""
        case = self.build_case()
        return WithConsentGivers(case, self.consent_givers) if self.consent_givers else case

    def build_case(self) -> Case:
        intake = parse_intake(self.intake, today=TODAY)
        case = new_case(self.reference, intake, clearance_required(intake["requested_actions"]),
                        deadline_table(), T0, "olga", f"{self.reference}:open")
        case.record_verification(verification=parse_verification(self.verification), at=T1,
                                 actor="olga", command_id="v1")
        for i, (action, consent) in enumerate(self.consents.items()):
            if consent.refused:
                case.refuse_consent(action=action, reason=consent.refused, at=T2, actor="olga",
                                    command_id=f"c{i}")
            else:
                case.grant_consent(action=action, conditions=consent.conditions, at=T2,
                                   actor="olga", command_id=f"c{i}",
                                   public_naming=consent.public_naming)
        for i, action in enumerate(case.pending_clearance()):
            case.record_clearance(action=action, granted=True, reason="", at=T3, actor="lina",
                                  command_id=f"k{i}")
        return case

    @property
    def granted(self) -> list[str]:
        return [a for a, c in self.consents.items() if not c.refused]

    def verification_texts(self) -> list[str]:
        """Every internal text of the verification: none may appear in any message."""
        v = self.verification
        return [*v["threat_questions"].values(), v["vulnerabilities"], v["capacities"],
                v["verifying_source"], v["do_no_harm"]]


class WithConsentGivers:
    """A real Case that answers `consent_givers` from the fixture (the older Case records none)."""

    def __init__(self, case: Case, givers: dict[str, list[dict[str, Any]]]) -> None:
        self._case = case
        self._givers = givers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._case, name)

    def consent_givers(self, action: str) -> list[dict[str, Any]]:
        return [dict(g) for g in self._givers.get(action, [])]


def _verification(tag: str, probability: int, impact: int, advised: bool) -> dict[str, Any]:
    return {
        "threat_questions": {
            "facts": f"NOTE-{tag}-facts: confirmed by two independent contacts",
            "pattern": f"NOTE-{tag}-pattern: third incident this year",
            "objective": f"NOTE-{tag}-objective: to stop the work",
            "source_of_threat": f"NOTE-{tag}-source: as the grantee says",
            "likely_carried_out": f"NOTE-{tag}-likely: yes, given the precedents",
        },
        "vulnerabilities": f"NOTE-{tag}-vulnerabilities: lives alone, known address",
        "capacities": f"NOTE-{tag}-capacities: lawyers and a strong network",
        "probability": probability,
        "impact": impact,
        "verdict": "verified",
        "verifying_source": f"VERISRC-{tag} Brother Anselm Quobrick of the diocesan office",
        "do_no_harm": f"DNH-{tag}: loud publicity could harden the authorities' position",
        "public_action_advised": advised,
    }


JOURNALIST = MessageCase(
    key="journalist",
    reference="UA-2026-0101",
    intake={
        "organisation": {"name": "Orvask Independent Media Centre", "contact_name": "Ilse Brannoch",
                         "contact_email": "desk@orvask-media.example.org", "activism_months": 96},
        "defenders": [{"name": "Tavrin Olloque", "role": "investigative journalist", "gender": "man",
                       "age": 41, "location": "Orvask", "at_risk_groups": ["journalists"],
                       "detention": {
                           "arrest_date": "2026-10-28",
                           "authority": "State Committee for National Security, Orvask branch",
                           "legal_basis_and_charges": ("Charged on 29 October 2026 with \"calls to "
                                                       "mass unrest\" (article 278 of the Criminal "
                                                       "Code)."),
                           "place_of_detention": "Orvask pre-trial detention centre",
                           "access_to_family": False,
                           "incommunicado": False,
                       }}],
        "country": "KG",
        "incident": {
            "date": "2026-10-28", "time": "about 06:30", "place": "his home in Orvask",
            "description": (
                "Six officers of the State Committee for National Security searched the home of "
                "Tavrin Olloque at dawn, seized his laptop and notebooks and took him away without "
                "showing a warrant. The next day he was charged with \"calls to mass unrest\" over "
                "his reporting on the Kumbel mine tenders.\n\nHe is held in the Orvask pre-trial "
                "detention centre and has seen his lawyer once, for ten minutes, with an "
                "investigator present."
            ),
            "perpetrator_kind": "state",
            "perpetrators": ("Officers of the State Committee for National Security, Orvask branch; "
                             "the investigator in charge is known to the family."),
            "ongoing_risk": ("A court hearing on extending his pre-trial detention is set for "
                             "10 November 2026. If convicted he faces up to eight years in prison. "
                             "Two journalists who reported on the same tenders were beaten in "
                             "custody in 2025."),
        },
        "threat_types": ["arbitrary_arrest_or_detention", "judicial_harassment",
                         "surveillance_or_eavesdropping"],
        "rights_affected": ["freedom_of_expression", "liberty_and_security", "fair_trial"],
        "requested_actions": ["rapporteur", "mfa", "eu_delegation"],
        "refused_actions": ["emergency_fund"],
        "urgency": "critical",
        "domestic_steps": ("His lawyer appealed against the detention order on 30 October 2026; the "
                           "appeal is pending. A complaint about the search was filed with the "
                           "prosecutor's office."),
        "confidential_information": ("CONF-journalist: the family keeps copies of his notes at a "
                                     "relative's house; this must not reach the authorities."),
        "eu_grant": {"amount_eur": 6000,
                     "purpose": "legal fees and the family's living costs during the detention"},
    },
    verification=_verification("journalist", 4, 5, advised=True),
    consents={
        "rapporteur": Consent("full_names"),
        "mfa": Consent("full_names", "Please tell the family before any visit to the detention "
                                     "centre."),
        "eu_delegation": Consent("full_names"),
    },
    further_information={"rapporteur": ("On 10 November 2026 the court extended Tavrin Olloque's "
                                        "pre-trial detention by two months. His lawyer was not "
                                        "allowed to speak.")},
)

WOMAN_DEFENDER = MessageCase(
    key="woman_defender",
    reference="UA-2026-0102",
    intake={
        "organisation": {"name": "Colectiva Lunaria de Defensoras", "contact_name": "Maribel Quintavo",
                         "contact_email": "enlace@lunaria.example.org", "women_or_trans_led": True,
                         "activism_months": 60},
        "defenders": [{"name": "Yolotli Marrasquín",
                       "role": "women's rights defender and spokesperson of the collective",
                       "gender": "woman", "age": 36, "location": "Villa Serrana",
                       "at_risk_groups": ["women"]}],
        "country": "MX",
        "incident": {
            "date": "2026-10-20", "place": "online and in Villa Serrana",
            "description": (
                "Since 20 October 2026 social-media accounts have posted doctored photos of Yolotli "
                "Marrasquín, her home address and claims that she \"recruits girls for abortions\". "
                "On 24 October posters with her face and the word \"traitor\" appeared outside the "
                "collective's office. Her daughter's school received an anonymous letter about her."
            ),
            "perpetrator_kind": "non_state",
            "perpetrators": ("Anonymous accounts, several of which share content with the press "
                             "office of the municipality; the posters were put up at night by "
                             "unidentified men."),
            "ongoing_risk": ("In the region, smear campaigns against women defenders have twice in "
                             "the last year been followed by physical attacks. Her home address is "
                             "now public."),
        },
        "threat_types": ["defamation_or_stigmatisation", "online_attack"],
        "rights_affected": ["privacy", "non_discrimination", "freedom_of_expression"],
        "requested_actions": ["rapporteur", "mfa", "emergency_fund"],
        "refused_actions": ["eu_delegation"],
        "urgency": "high",
        "domestic_steps": ("A complaint for gender-based political violence was filed with the state "
                           "prosecutor on 25 October 2026. She applied to the federal protection "
                           "mechanism for human rights defenders, which has not yet answered."),
        "confidential_information": ("CONF-woman_defender: she moved on 26 October 2026; her new "
                                     "address must stay confidential."),
        "fund_request": {"amount_eur": 3500, "purpose": "digital_security",
                         "costs_already_incurred": False, "in_exile": False},
    },
    verification=_verification("woman_defender", 3, 4, advised=False),
    consents={
        "rapporteur": Consent("initials_only", "Initials only in public reports; no press "
                                               "statements."),
        "mfa": Consent("initials_only", "No public statements by the embassy."),
        "emergency_fund": Consent("initials_only"),
    },
    fund_id="women_trans_urgent",
)

LAND_DEFENDER = MessageCase(
    key="land_defender",
    reference="UA-2026-0103",
    intake={
        "organisation": {"name": "Consejo Comunitario Chelaj", "contact_name": "Baltasar Tzununquel",
                         "contact_email": "consejo@chelaj.example.org", "activism_months": 144},
        "defenders": [
            {"name": "Ixmukané Sactic Oxlajuj", "role": "community leader and land-rights defender",
             "gender": "woman", "age": 52, "location": "Chelaj village, San Pedro Yaxbal",
             "at_risk_groups": ["indigenous", "land_and_environment", "women"]},
            {"name": "Mateo Coyoy Batzibal", "role": "community radio presenter", "gender": "man",
             "age": 29, "location": "Chelaj village, San Pedro Yaxbal",
             "at_risk_groups": ["indigenous", "land_and_environment"]},
        ],
        "country": "GT",
        "incident": {
            "date": "2026-10-15", "time": "about 21:00",
            "place": "the road between Chelaj and the Yaxbal river",
            "description": (
                "Four armed guards of the private security company working for the Rio Yaxbal "
                "hydroelectric project stopped the two defenders on their way home, pointed guns at "
                "them and told them they would \"end up in the river\" if the community did not drop "
                "its legal action against the dam. The next day a voice message to the community "
                "radio's phone repeated the threat."
            ),
            "perpetrator_kind": "business",
            "perpetrators": ("Guards of Seguridad Ortel, the security company of the Rio Yaxbal "
                             "hydroelectric project; one of them is a former soldier known in the "
                             "area."),
            "ongoing_risk": ("The community's challenge to the dam's licence will be heard on "
                             "18 November 2026. Two leaders of neighbouring communities who opposed "
                             "the project were killed in 2024; no one has been convicted."),
        },
        "threat_types": ["death_threat"],
        "rights_affected": ["life", "land_and_territory", "healthy_environment"],
        "requested_actions": ["rapporteur", "mfa", "eu_delegation", "emergency_fund"],
        "urgency": "critical",
        "domestic_steps": ("The threat was reported to the Public Prosecutor's office in Cobán on "
                           "16 October 2026 (complaint registered). The community asked the Human "
                           "Rights Ombudsman for protective measures."),
        "confidential_information": ("CONF-land_defender: the witness who noted the guards' licence "
                                     "plate must not be named."),
        "eu_grant": {"amount_eur": 10000,
                     "purpose": "security measures for the community radio and safe transport for "
                                "the two leaders"},
        "fund_request": {"amount_eur": 12000, "purpose": "relocation",
                         "costs_already_incurred": False, "in_exile": False},
    },
    verification=_verification("land_defender", 4, 5, advised=True),
    consents={
        "rapporteur": Consent("initials_only", "The community asks to be consulted before any "
                                               "public statement."),
        "mfa": Consent("full_names"),
        "eu_delegation": Consent("full_names", "Visits only with the community's prior agreement."),
        "emergency_fund": Consent("full_names"),
    },
    fund_id="protection_grant",
)

LGBTI_ORGANISATION = MessageCase(
    key="lgbti_organisation",
    reference="UA-2026-0104",
    intake={
        "organisation": {"name": "Nsanvu Rainbow Alliance", "contact_name": "Okello Pemberwa",
                         "contact_email": "safety@nsanvu.example.org", "activism_months": 48},
        "defenders": [
            {"name": "Tendo Marvulu", "role": "director", "gender": "trans", "age": 31,
             "location": "Nsanvu", "at_risk_groups": ["lgbti"]},
            {"name": "Sabiiti Quorrel", "role": "programme officer", "gender": "man", "age": 27,
             "location": "Nsanvu", "at_risk_groups": ["lgbti"]},
            {"name": "Amani Velloko", "role": "outreach worker", "gender": "non_binary", "age": 24,
             "location": "Nsanvu", "at_risk_groups": ["lgbti", "youth"]},
        ],
        "country": "UG",
        "incident": {
            "date": "2026-10-30", "time": "14:00", "place": "the Alliance's office in Nsanvu",
            "description": (
                "Police and officials of the NGO Bureau raided the office, took computers and "
                "membership files and arrested three staff, who were released on police bond after "
                "48 hours. On 2 November 2026 the NGO Bureau revoked the Alliance's registration for "
                "\"promoting homosexuality\"."
            ),
            "perpetrator_kind": "state",
            "perpetrators": ("Officers of the Nsanvu police division and officials of the National "
                             "Bureau for NGOs."),
            "ongoing_risk": ("The confiscated files hold the names of about 200 members. The three "
                             "staff must report to the police every week and fear re-arrest; a "
                             "newspaper has published their photos."),
        },
        "threat_types": ["raid_or_break_in", "administrative_or_registration_measures",
                         "arbitrary_arrest_or_detention"],
        "rights_affected": ["freedom_of_association", "privacy", "non_discrimination"],
        "requested_actions": ["rapporteur", "eu_delegation", "emergency_fund"],
        "refused_actions": ["mfa"],
        "urgency": "high",
        "domestic_steps": ("The Alliance's lawyers applied to the High Court for judicial review of "
                           "the de-registration on 3 November 2026."),
        "confidential_information": ("CONF-lgbti_organisation: where the staff now sleep and the "
                                     "lawyers' names must stay confidential."),
        "fund_request": {"amount_eur": 5000, "purpose": "legal_fees",
                         "costs_already_incurred": False, "in_exile": False},
    },
    verification=_verification("lgbti_organisation", 4, 3, advised=False),
    consents={
        "rapporteur": Consent("anonymous", "Do not publish names, initials or the organisation's "
                                           "name."),
        "eu_delegation": Consent("anonymous", "No public statements."),
        "emergency_fund": Consent("anonymous"),
    },
    fund_id="lgbti_defenders",
    further_information={"emergency_fund": ("The High Court will hear the application for judicial "
                                            "review on 20 November 2026; the lawyers' fee estimate "
                                            "is unchanged.")},
)

TRADE_UNIONIST = MessageCase(
    key="trade_unionist",
    reference="UA-2026-0105",
    intake={
        "organisation": {"name": "Federation of Kalinaw Estate Workers",
                         "contact_name": "Rosalind Dumagpiray",
                         "contact_email": "info@kalinaw-workers.example.org", "activism_months": 200},
        "defenders": [{"name": "Emiliano Bantayog-Quirre",
                       "role": "general secretary of the estate workers' union", "gender": "man",
                       "age": 47, "location": "Kalinaw estate", "at_risk_groups": ["trade_unionists"],
                       "disappearance": {
                           "last_seen_date": "2026-11-01",
                           "last_seen_place": "the gate of the Kalinaw banana estate, about 17:45",
                           "nationality": "Philippine",
                           "date_of_birth": "1979-03-14",
                           "forces_believed_responsible": ("Members of the army's local "
                                                           "intelligence unit, with the Kalinaw "
                                                           "police."),
                           "steps_by_family": ("His wife asked for him at the Kalinaw police "
                                               "station on 1 and 2 November 2026 and at the army "
                                               "camp on 3 November 2026; both denied holding him."),
                       }}],
        "country": "PH",
        "incident": {
            "date": "2026-11-01", "time": "about 17:45", "place": "the gate of the Kalinaw banana estate",
            "description": (
                "Witnesses saw three men in civilian clothes force Emiliano Bantayog-Quirre into a "
                "white van without number plates as he left a meeting with workers about unpaid "
                "wages. The Kalinaw police station first told his wife he was \"being questioned\", "
                "then denied holding him. His whereabouts are unknown."
            ),
            "perpetrator_kind": "state",
            "perpetrators": ("Three men in civilian clothes; witnesses recognised one as a member of "
                             "the army's local intelligence unit. The police first confirmed, then "
                             "denied, that he was in their custody."),
            "ongoing_risk": ("Each day without news increases the risk of torture or killing. Two "
                             "other union organisers on the estate were publicly labelled as "
                             "communist rebels in September 2026."),
        },
        "threat_types": ["enforced_disappearance", "abduction", "defamation_or_stigmatisation"],
        "rights_affected": ["liberty_and_security", "life", "freedom_of_association"],
        "requested_actions": ["rapporteur", "mfa", "eu_delegation"],
        "urgency": "critical",
        "domestic_steps": ("His wife petitioned the regional trial court for writs of amparo and "
                           "habeas corpus on 3 November 2026 and reported the disappearance to the "
                           "Commission on Human Rights."),
        "confidential_information": ("CONF-trade_unionist: the names of the witnesses at the gate "
                                     "must stay confidential."),
    },
    verification=_verification("trade_unionist", 5, 5, advised=True),
    consents={
        "rapporteur": Consent("full_names", "The family asks to be told before any public "
                                            "statement."),
        "mfa": Consent("full_names"),
        "eu_delegation": Consent(refused="The family fears that EU involvement would be used to "
                                         "call him a foreign agent."),
    },
    further_information={"mfa": ("Emiliano Bantayog-Quirre was seen alive on 6 November 2026 at "
                                 "the army camp near Kalinaw, according to a released detainee.")},
    consent_givers={action: [{"defender": 0, "given_by": "relative", "relationship": "wife",
                              "channel": "in person, at the union office",
                              "given_at": "2026-11-05T11:00:00+00:00"}]
                    for action in ("rapporteur", "mfa")},
)

CASES: dict[str, MessageCase] = {c.key: c for c in (JOURNALIST, WOMAN_DEFENDER, LAND_DEFENDER,
                                                   LGBTI_ORGANISATION, TRADE_UNIONIST)}



def awaited(mc: MessageCase) -> list[dict[str, Any]]:
    """The workflow's pending decisions at an escalation of the clearance stage (no names: codes
    and roles only): clearance of each consented diplomatic action."""
    return [{"decision": "record_clearance", "roles": ["ministry_liaison"], "action": action,
             "not_by": "olga"}
            for action in mc.granted if action in ("mfa", "eu_delegation")]


ESCALATION_DEADLINE = T3 + timedelta(hours=12)
ESCALATION_NOW = ESCALATION_DEADLINE + timedelta(hours=5, minutes=30)
REMINDER_DUE = T3 + timedelta(days=3)
