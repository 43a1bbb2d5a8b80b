"""The content of every outgoing message (docs/design.md section 3), composed from the case.

Pure: no I/O but reading the templates, no clock reads (times are passed in). For each message kind
the composer builds a *view* of the case that holds only what that message may say, and the Jinja2
templates in templates/messages/ turn the view into a subject, a plain-text body and, where it
helps, an HTML alternative. What a view leaves out cannot leak through a template:

- the verification's verifying source, do-no-harm note and threat-analysis notes are in no view
  (the MFA brief gets the risk level, probability and impact only);
- the intake's confidential information is only in the view of the letter to OHCHR, in a section
  marked confidential;
- the EU grant request is only in the EU delegation's view, the fund request only in the fund
  application's, and other channels are named only when the grantee consented to them;
- staff messages (escalations, reminders) get codes, roles and the country, never a name or any
  incident text; the notice that a decision is waiting gets codes and roles only.

Every message about a case names each defender as that defender's publicity profile allows
(`MessageCase.publicity_of`: full name, initials, or no name at all). The view never holds the
full name of someone whose profile withholds it, and every text taken from the case (the account,
the perpetrators, conditions, further information...) has each mention of a withheld name, in
full or any part of it, replaced by what the profile allows. The profile is the same for every
message, so no message contradicts another; a public statement is proposed only when the
verification advises public action, every defender agreed to be named in full and no condition
of any consent speaks of publicity.

One-line values are cleaned of control characters (a name with a line break cannot break a
subject line or forge a line in a body); HTML templates are autoescaped. A template that refers to
a missing value fails with MessageError, which names the template and the value, never case data.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import jinja2
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from domain.countries import COUNTRIES
from domain.decisions import WAITING_NOTICES
from domain.funds import Fund, Purpose, RequiredItem, capped_amount
from domain.intake import is_detained_incommunicado, is_disappeared
from domain.policies import EU_GRANT_CAP_EUR
from domain.routing import Mandate, route_intake
from domain.vocab import Action, PublicNaming, ThreatType

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# Message templates live in their own folder beside the minimal templates of activities/case.py.
FOLDER = "messages"
KINDS = ("rapporteur", "mfa", "eu_delegation", "emergency_fund", "escalation", "reminder",
         "further_information")
# Kinds with an HTML alternative: the long, structured letters that outside readers receive.
HTML_KINDS = frozenset({"rapporteur", "eu_delegation"})
WIDTH = 76

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0085\u2028\u2029]")
_BLANK_LINES = re.compile(r"\n{3,}")
# Conditions that speak of publicity: the brief then warns against public statements.
_PUBLICITY = re.compile(r"\b(public\w*|press|media|statement\w*|publish\w*|social)\b", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNDEFINED = (re.compile(r"^'([^']*)' is undefined$"), re.compile(r"has no attribute '([^']*)'$"))


GRANTED = "granted"  # an action's consent state when its message may go


class MessageError(ValueError):
    """A message cannot be composed: names the template and the missing value, never case data."""


class MessageCase(Protocol):
    """What the composer reads of a case. Both aggregates provide it: domain.case.Case (cases
    opened before per-action tracks) and domain.tracked.TrackedCase.

    - `actions`: per proposed action at least "consent" (proposed | granted | refused |
      withdrawn) and "conditions" (the grantee's conditions in words);
    - `publicity_of(index)`: the profile of the defender at that index of intake["defenders"]:
      "full_names" | "initials_only" | "anonymous", already the most restrictive over all
      consents (an unknown value is read as "anonymous");
    - `public_action_advised()`: the verification's do-no-harm answer;
    - `consent_givers(action)`: who consented to the action for whom, each
      {"defender": index, "given_by": "defender" | "relative" | "lawyer", "relationship": str,
      "channel": str, "given_at": ISO datetime}; an empty list for cases whose consent was
      recorded for the whole group without detail.

    A `verification` attribute (dict or None), when the case has one, gives the MFA brief its
    probability and impact; without it the brief states the risk level alone.
    """

    @property
    def reference(self) -> str: ...

    @property
    def intake(self) -> dict[str, Any]: ...

    @property
    def risk_level(self) -> str | None: ...

    @property
    def actions(self) -> dict[str, dict[str, Any]]: ...

    def publicity_of(self, index: int) -> str: ...

    def public_action_advised(self) -> bool: ...

    def consent_givers(self, action: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Composed:
    kind: str  # one of KINDS
    subject: str  # one line, never a CR or LF
    text: str
    html: str | None  # HTML alternative (autoescaped), where the kind has one


# ------------------------------------------------------------------------------ labels (English)
ACTION_LABELS: dict[str, str] = {
    Action.RAPPORTEUR: "UN Special Procedures (urgent appeal through OHCHR)",
    Action.MFA: "Ministry of Foreign Affairs",
    Action.EU_DELEGATION: "EU delegation",
    Action.EMERGENCY_FUND: "emergency fund for defenders",
}
PERPETRATOR_LABELS: dict[str, str] = {
    "state": "State actors",
    "non_state": "Non-state actors",
    "business": "A business enterprise or persons acting for it",
    "unknown": "Unknown",
}
GENDER_LABELS: dict[str, str] = {
    "woman": "woman", "man": "man", "trans": "trans", "non_binary": "non-binary",
    "undisclosed": "not disclosed",
}
THREAT_LABELS: dict[str, str] = {
    ThreatType.TORTURE: "torture or ill-treatment",
    ThreatType.ARBITRARY_DETENTION: "arbitrary arrest or detention",
    ThreatType.DEFAMATION: "defamation or stigmatisation",
    ThreatType.PROPERTY_ATTACK: "vandalism or attack on property",
    ThreatType.ADMINISTRATIVE_MEASURES: "administrative or registration measures",
    ThreatType.RAID: "raid or break-in",
}
RIGHT_LABELS: dict[str, str] = {
    "liberty_and_security": "liberty and security of person",
    "non_discrimination": "non-discrimination",
    "healthy_environment": "a healthy environment",
    "fair_trial": "a fair trial",
    "participation_in_public_affairs": "participation in public affairs",
}
GROUP_LABELS: dict[str, str] = {"lgbti": "LGBTI", "in_exile": "in exile"}
STAGE_LABELS: dict[str, str] = {"follow_up": "follow-up"}
ROLE_LABELS: dict[str, str] = {
    "case_officer": "a case officer",
    "ministry_liaison": "a ministry liaison",
    "head": "the head of secretariat",
    "auditor": "an auditor",
}
DECISION_LABELS: dict[str, str] = {
    "record_verification": "record the threat verification",
    "grant_consent": "record the grantee's consent decision",
    "refuse_consent": "record the grantee's consent decision",
    "record_clearance": "record the ministry's clearance decision",
    "extend_deadline": "extend the deadline or act",
    "record_response": "record the recipients' responses",
    "add_further_information": "send further information",
    "record_checkin": "record a check-in with the defenders",
    "close": "close the case",
}
# The command line that records each decision staff are told is waiting (see `waiting`).
WAITING_COMMANDS: dict[str, str] = {
    "record_verification": "appeals case verify {ref} FILE",
    "grant_or_refuse_consent": "appeals case consent {ref} {action} --grant (or --refuse)",
    "record_clearance": "appeals case clear {ref} {action} --grant (or --deny)",
    "choose_funds": "appeals case choose-funds {ref} FUND... (see appeals case funds {ref})",
    "record_fund_submission": "appeals case fund-submitted {ref} {fund}",
    "close": "appeals case close {ref} --outcome OUTCOME",
}
REQUIRED_ITEM_LABELS: dict[RequiredItem, str] = {
    RequiredItem.INCIDENT_DESCRIPTION: "Description of the incident and the threat",
    RequiredItem.LINK_TO_RIGHTS_WORK: "Link between the danger and the human rights work",
    RequiredItem.BUDGET: "Amount requested and what it pays for",
    RequiredItem.ORGANISATION_DETAILS: "Applicant organisation and contact",
    RequiredItem.ACTIVISM_RECORD: "Record of activism",
    RequiredItem.WOMEN_OR_TRANS_LED: "Women- or trans-led",
    RequiredItem.EXILE_STATUS: "Whether the defenders are in exile",
    RequiredItem.COSTS_INCURRED: "Whether the costs have already been incurred",
    RequiredItem.REFERENCE_CONTACT: "Reference",
    RequiredItem.SECURITY_PLAN: "Security plan",
    RequiredItem.PAYMENT_DETAILS: "Payment details",
}
ON_REQUEST = "to be provided by the applicant organisation directly, on request"

_CHANNELS = frozenset({Action.RAPPORTEUR, Action.MFA, Action.EU_DELEGATION})
_DETENTION = {ThreatType.ARBITRARY_DETENTION}
_JUDICIAL = {ThreatType.ARBITRARY_DETENTION, ThreatType.JUDICIAL_HARASSMENT, ThreatType.FINES}
_LIFE = {ThreatType.KILLING, ThreatType.DEATH_THREAT, ThreatType.ABDUCTION,
         ThreatType.PHYSICAL_ASSAULT, ThreatType.SEXUAL_ASSAULT, ThreatType.TORTURE,
         ThreatType.ENFORCED_DISAPPEARANCE}


# ------------------------------------------------------------------------------------- helpers
def one_line(value: Any) -> str:
    """A value for one line: every run of control characters (CR, LF, tab...) becomes a space."""
    if value is None:
        return ""
    return " ".join(_CONTROL.sub(" ", str(value)).split())


def clean_text(value: Any) -> str:
    """A free text: line breaks kept (as LF), tabs as spaces, other control characters dropped."""
    if value is None:
        return ""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    return _CONTROL_IN_TEXT.sub("", text).strip()


def label(code: Any, table: Mapping[str, str] | None = None) -> str:
    code = one_line(code)
    return (table or {}).get(code, code.replace("_", " "))


def initials(name: str) -> str:
    parts = [p for p in re.split(r"[\s-]+", name) if p]
    return " ".join(f"{p[0].upper()}." for p in parts) or "?"


def long_date(value: Any) -> str:
    """ISO date (or date) as '1 November 2026'."""
    try:
        day = value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        return one_line(value)
    return f"{day.day} {day:%B %Y}"


def stamp(moment: datetime) -> str:
    """A datetime for staff: '2026-11-03 08:00 UTC' (UTC when aware)."""
    if moment.tzinfo is not None:
        offset = moment.utcoffset()
        moment = (moment - offset if offset else moment).replace(tzinfo=None)
        return f"{moment:%Y-%m-%d %H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M}"


def duration(delta: timedelta) -> str:
    """How long, in words: '2 days 3 hours', '45 minutes', 'less than a minute'."""
    minutes = max(int(delta.total_seconds()) // 60, 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{n} {unit}{'' if n == 1 else 's'}"
             for n, unit in ((days, "day"), (hours, "hour"), (mins, "minute")) if n]
    if days:
        parts = parts[:2]
    return " ".join(parts) or "less than a minute"


def eur(amount: Any) -> str:
    return f"EUR {int(amount):,}"


def join_and(items: Iterable[Any]) -> str:
    words = [str(i) for i in items]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def wrap(value: Any, width: int = WIDTH, indent: int = 0, hang: int = 0) -> str:
    """Wrap each paragraph of a text; line breaks and blank lines of the text are kept. `hang`
    indents the continuation lines further (list items)."""
    pad = " " * indent
    lines = []
    for raw in clean_text(value).split("\n"):
        if not raw.strip():
            lines.append("")
            continue
        lines.extend(textwrap.wrap(raw.strip(), width=width, initial_indent=pad,
                                   subsequent_indent=pad + " " * hang, break_long_words=False,
                                   break_on_hyphens=False))
    return "\n".join(lines)


def paragraphs(value: Any) -> Markup:
    """A free text as HTML paragraphs: escaped first, then blank lines split paragraphs."""
    blocks = [b for b in re.split(r"\n\s*\n", clean_text(value)) if b.strip()]
    return Markup("\n").join(
        Markup("<p>") + Markup("<br>\n").join(escape(line) for line in block.split("\n"))
        + Markup("</p>") for block in blocks
    )


def _tidy(text: str) -> str:
    """Plain-text bodies: no trailing spaces, at most one blank line in a row, one final newline."""
    lines = [line.rstrip() for line in text.replace("\r", "").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


def _country_name(code: str) -> str:
    return COUNTRIES.get(code, code)


# Country names that take "the" inside a sentence ("the Government of the Philippines").
_WITH_ARTICLE = frozenset({"BS", "CG", "GM", "KM", "MH", "MV", "NL", "PH", "SB", "VA"})
_ARTICLE_WORDS = re.compile(r"\b(Republic|Kingdom|States|Islands|Emirates|Federation)\b")


def country_in_sentence(code: str) -> str:
    """The country's name for use inside a sentence, with "the" where English needs it (inverted
    ISO names such as "Iran, Islamic Republic of" are left as they are)."""
    name = _country_name(code)
    if "," not in name and (code in _WITH_ARTICLE or _ARTICLE_WORDS.search(name)):
        return f"the {name}"
    return name


# -------------------------------------------------------------------------------------- composer
class Composer:
    def __init__(self, templates: Path = TEMPLATES, *, signatory_name: str = "",
                 signatory_organisation: str = "", signature: str = "The secretariat") -> None:
        """`signatory_name` and `signatory_organisation` sign every letter to outside recipients;
        the organisation is named as the submitting organisation in the letter to OHCHR. Without
        them the letters are signed with `signature` (the older, single-line setting)."""
        self.env = Environment(
            loader=FileSystemLoader(templates),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html", "htm"], default_for_string=False, default=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(wrap=wrap, paragraphs=paragraphs, eur=eur, join_and=join_and,
                                long_date=long_date)
        self.signatory_name = one_line(signatory_name)
        self.signatory_organisation = one_line(signatory_organisation)
        lines = [x for x in (self.signatory_name, self.signatory_organisation) if x]
        self.signature_lines = lines or [one_line(signature) or "The secretariat"]
        self.signature = "\n".join(self.signature_lines)

    # ------------------------------------------------------------------------------- appeals
    def appeal(self, case: MessageCase, action: str, *, mandates: list[Mandate] | None = None,
               fund: Fund | None = None) -> Composed:
        """The message for one consented action of the case."""
        people = _People.of(case)
        view = self._case_view(case, action, people)
        if action == Action.RAPPORTEUR:
            view.update(self._rapporteur_view(case, mandates, people))
        elif action == Action.MFA:
            view.update(self._mfa_view(case))
        elif action == Action.EU_DELEGATION:
            view.update(self._eu_view(case, people))
        elif action == Action.EMERGENCY_FUND:
            if fund is None:
                raise MessageError("emergency_fund: an application needs the fund it goes to")
            view.update(self._fund_view(case, fund, people))
        return self._compose(str(Action(action)), view)

    def further_information(self, case: MessageCase, action: str, information: str) -> Composed:
        """An update to the earlier recipients of one action (threading headers are the caller's)."""
        people = _People.of(case)
        view = self._case_view(case, action, people)
        view["information"] = people.text(information)
        view["kind_of_letter"] = {
            Action.RAPPORTEUR: "urgent appeal",
            Action.MFA: "case brief",
            Action.EU_DELEGATION: "request for intervention",
            Action.EMERGENCY_FUND: "emergency grant application",
        }[Action(action)]
        if not view["information"]:
            raise MessageError("further_information: the information is empty")
        return self._compose("further_information", view)

    # ---------------------------------------------------------------------------- staff mail
    def escalation(self, *, reference: str, country: str, stage: str, level: int,
                   deadline: datetime, now: datetime, awaited: list[dict[str, Any]]) -> Composed:
        """To secretariat staff: codes, roles and the country only (no names, no incident)."""
        decisions = []
        for item in awaited:
            roles = [label(r, ROLE_LABELS) for r in item.get("roles") or []]
            decisions.append({
                "what": label(item.get("decision", ""), DECISION_LABELS),
                "action": label(item["action"], ACTION_LABELS) if item.get("action") else "",
                "by": " or ".join(roles) or "any member of staff",
                "four_eyes": bool(item.get("not_by")),
            })
        view = {
            "reference": one_line(reference),
            "country_name": _country_name(one_line(country)),
            "stage": label(stage, STAGE_LABELS),
            "level": int(level),
            "deadline": stamp(deadline),
            "now": stamp(now),
            "late": duration(now - deadline) if now > deadline else "",
            "awaited": decisions,
        }
        return self._compose("escalation", view)

    def reminder(self, *, reference: str, country: str, kind: str, actions_sent: list[str],
                 due: datetime) -> Composed:
        if kind not in ("follow_up", "checkin"):
            raise MessageError("reminder: kind must be follow_up or checkin")
        view = {
            "reference": one_line(reference),
            "country_name": _country_name(one_line(country)),
            "kind": kind,
            "actions_sent": [label(a, ACTION_LABELS) for a in actions_sent],
            "un_sent": Action.RAPPORTEUR in actions_sent,
            "due": stamp(due),
        }
        return self._compose("reminder", view)

    def held(self, *, reference: str, country: str, action: str, missing: list[str]) -> Composed:
        """To the case officer: which fields a held message waits for (field names, no data)."""
        view = {
            "reference": one_line(reference),
            "country_name": _country_name(one_line(country)),
            "action_label": label(action, ACTION_LABELS),
            "missing": [one_line(field) for field in missing],
        }
        return self._compose("held", view)

    def waiting(self, *, reference: str, decision: str, roles: list[str], action: str = "",
                fund: str = "", four_eyes: bool = False,
                deadline: datetime | None = None) -> Composed:
        """To the staff who may take a decision the case now waits for: which decision, for which
        action, by when and where to act. Codes only: no name, no incident text, no country."""
        if decision not in WAITING_NOTICES:
            raise MessageError("waiting: not a decision staff are told of")
        ref = one_line(reference)
        code = one_line(action)
        view = {
            "reference": ref,
            "label": WAITING_NOTICES[decision],
            "action_label": label(code, ACTION_LABELS) if code else "",
            "fund": one_line(fund),
            "by": " or ".join(label(r, ROLE_LABELS) for r in roles) or "any member of staff",
            "four_eyes": four_eyes,
            "closing": decision == "close",
            "deadline": stamp(deadline) if deadline else "none set",
            "web": f"/cases/{ref}",
            "command": WAITING_COMMANDS[decision].format(ref=ref, action=code or "ACTION",
                                                         fund=one_line(fund) or "FUND"),
        }
        return self._compose("waiting", view)

    def reprisal(self, *, reference: str, level_before: str | None, level: str,
                 held: list[str], at: datetime) -> Composed:
        """To the heads: a check-in reported a reprisal. Codes only (the reference, the risk
        levels, the held channels, where to act): no name, no incident text, no country."""
        ref = one_line(reference)
        view = {
            "reference": ref,
            "level_before": one_line(level_before or "not assessed"),
            "level": one_line(level),
            "held": [label(one_line(a), ACTION_LABELS) for a in held],
            "at": stamp(at),
            "web": f"/cases/{ref}",
            "command": f"appeals case confirm-public {ref} --reason TEXT",
        }
        return self._compose("reprisal", view)

    # ------------------------------------------------------------------------------- views
    def _case_view(self, case: MessageCase, action: str, people: _People) -> dict[str, Any]:
        """What every message about the case may say, for one action whose consent is granted."""
        try:
            state = case.actions[Action(action)]
        except (ValueError, KeyError):
            raise MessageError(f"{one_line(action)[:40]}: not an action of this case") from None
        if state["consent"] != GRANTED:
            raise MessageError(f"{action}: no message without the grantee's consent "
                               f"(consent is {state['consent']})")
        intake = case.intake
        org = intake.get("organisation") or {}
        incident = intake.get("incident") or {}
        conditions = people.text(state.get("conditions"))
        # Conditions of every consent count for publicity: what one channel was told not to make
        # public, no other channel may propose to.
        all_conditions = [clean_text(s.get("conditions")) for s in case.actions.values()
                          if s["consent"] == GRANTED]
        advised = bool(case.public_action_advised())
        publicity_allowed = (advised and people.all_named_in_full
                             and not any(_PUBLICITY.search(c) for c in all_conditions))
        # Channels named to other recipients: the diplomatic and UN ones only. Fund applications
        # are no business of the ministry or the delegation (the EU grant view says what it must).
        granted = [a for a, s in case.actions.items()
                   if s["consent"] == GRANTED and a in _CHANNELS]
        declined = [a for a in intake.get("refused_actions") or [] if a in _CHANNELS]
        declined += [a for a, s in case.actions.items()
                     if s["consent"] != GRANTED and a not in declined and a in _CHANNELS]
        threats = [str(t) for t in intake.get("threat_types") or []]
        country = one_line(intake.get("country"))
        org_name = people.line(org.get("name"))
        statements = _consent_statements(people, case.consent_givers(str(Action(action))),
                                         org_name)
        return {
            "reference": one_line(case.reference),
            "country": country,
            "country_name": _country_name(country),
            "country_the": country_in_sentence(country),
            "signature": self.signature,
            "signature_lines": self.signature_lines,
            "signatory": {"name": self.signatory_name,
                          "organisation": self.signatory_organisation},
            "submitter": self.signatory_organisation or "the secretariat",
            "organisation": {
                "name": org_name,
                "contact_name": people.line(org.get("contact_name")),
                "contact_email": one_line(org.get("contact_email")),
            },
            "defenders": people.views,
            "plural": people.plural,
            "names": people.names,
            "who": people.who,
            "incident": {
                "date": long_date(incident.get("date", "")),
                "time": one_line(incident.get("time")),
                "place": people.line(incident.get("place")),
                "description": people.text(incident.get("description")),
                "perpetrator_kind": label(incident.get("perpetrator_kind") or "unknown",
                                          PERPETRATOR_LABELS),
                "perpetrators": people.text(incident.get("perpetrators")),
                "ongoing_risk": people.text(incident.get("ongoing_risk")),
            },
            "threats": [label(t, THREAT_LABELS) for t in threats],
            "rights": [label(r, RIGHT_LABELS) for r in intake.get("rights_affected") or []],
            "detention": bool(_DETENTION & set(threats)),
            "judicial": bool(_JUDICIAL & set(threats)),
            "life": bool(_LIFE & set(threats)),
            "disappearance": ThreatType.ENFORCED_DISAPPEARANCE in threats,
            "urgency": one_line(intake.get("urgency")),
            "risk_level": one_line(case.risk_level) or "not yet assessed",
            "domestic_steps": people.text(intake.get("domestic_steps")),
            "consent": {
                "conditions": conditions,
                "statements": statements.all,
                "naming_statement": " ".join(statements.all),
                "on_behalf": statements.on_behalf,
                "publicity_allowed": publicity_allowed,
                "publicity": _publicity(people, advised, conditions, all_conditions,
                                        publicity_allowed),
            },
            "other_channels": [ACTION_LABELS[a] for a in granted if a != action],
            "declined": [ACTION_LABELS.get(a, label(a)) for a in declined],
        }

    def _rapporteur_view(self, case: MessageCase, mandates: list[Mandate] | None,
                         people: _People) -> dict[str, Any]:
        intake = case.intake
        if mandates is None:
            mandates = route_intake(intake)
        if not mandates:
            raise MessageError("rapporteur: an urgent appeal needs at least one mandate")
        chosen = [Mandate(m) for m in mandates]
        return {
            "mandates": [{"label": m.label, "title": m.full_title} for m in chosen],
            "mandate_labels": ", ".join(m.label for m in chosen),
            "confidential_information": people.text(intake.get("confidential_information")),
            # The risk level is set by a verified verification only.
            "verified": case.risk_level is not None,
        }

    def _mfa_view(self, case: MessageCase) -> dict[str, Any]:
        v = getattr(case, "verification", None) or {}
        probability, impact = v.get("probability"), v.get("impact")
        risk = None
        if isinstance(probability, int) and isinstance(impact, int):
            risk = {"probability": probability, "impact": impact, "score": probability * impact}
        return {"risk": risk}

    def _eu_view(self, case: MessageCase, people: _People) -> dict[str, Any]:
        grant = case.intake.get("eu_grant")
        view: dict[str, Any] = {"grant": None, "grant_cap": eur(EU_GRANT_CAP_EUR)}
        if grant:
            amount = int(grant["amount_eur"])
            if amount > EU_GRANT_CAP_EUR:
                raise MessageError(f"eu_delegation: an EU emergency grant cannot exceed "
                                   f"{eur(EU_GRANT_CAP_EUR)}")
            view["grant"] = {"amount": eur(amount),
                             "purpose": people.line(_purpose(grant.get("purpose")))}
            fund = case.actions.get(Action.EMERGENCY_FUND)
            request = case.intake.get("fund_request")
            if fund and fund["consent"] == GRANTED and request:
                # Said so that the same costs are not funded twice.
                view["other_funding"] = people.line(_purpose(request.get("purpose")))
        view.setdefault("other_funding", "")
        return view

    def _fund_view(self, case: MessageCase, fund: Fund, people: _People) -> dict[str, Any]:
        intake = case.intake
        request = intake.get("fund_request")
        if not request or not request.get("amount_eur"):
            raise MessageError("emergency_fund: the case has no fund request")
        org = intake.get("organisation") or {}
        asked = int(request["amount_eur"])
        amount = capped_amount(asked, fund.cap_eur)
        purpose = people.line(_purpose(request.get("purpose")))
        defenders = intake.get("defenders") or []
        in_exile = bool(request.get("in_exile"))
        incurred = bool(request.get("costs_already_incurred"))
        months = org.get("activism_months")
        led = bool(org.get("women_or_trans_led"))
        ongoing = people.text((intake.get("incident") or {}).get("ongoing_risk"))
        contact = ", ".join(x for x in (people.line(org.get("contact_name")),
                                        one_line(org.get("contact_email"))) if x)
        submitter = self.signatory_organisation or "the secretariat"
        answers: dict[RequiredItem, str] = {
            RequiredItem.INCIDENT_DESCRIPTION: "see \"What happened\" above",
            RequiredItem.LINK_TO_RIGHTS_WORK: people.targeted_sentence()
            + (f" {ongoing}" if ongoing else ""),
            RequiredItem.BUDGET: f"{eur(amount)} for {purpose}",
            RequiredItem.ORGANISATION_DETAILS: people.line(org.get("name"))
            + (f" (contact: {contact})" if contact else ""),
            RequiredItem.ACTIVISM_RECORD: f"{months} months of documented activism"
            if isinstance(months, int) else ON_REQUEST,
            RequiredItem.WOMEN_OR_TRANS_LED: "yes" if led else "no",
            RequiredItem.EXILE_STATUS: "yes, in exile" if in_exile else "no, not in exile",
            RequiredItem.COSTS_INCURRED: "yes, already incurred" if incurred
            else "no, the costs are still to come",
            RequiredItem.REFERENCE_CONTACT: f"{submitter}, which sends this application on the "
            "grantee's behalf; reply to this message",
            RequiredItem.SECURITY_PLAN: ON_REQUEST,
            RequiredItem.PAYMENT_DETAILS: ON_REQUEST + " (never by unencrypted email)",
        }
        return {
            "fund": {"name": one_line(fund.name), "address": one_line(fund.address),
                     "cap": eur(fund.cap_eur) if fund.cap_eur else ""},
            "request": {
                "asked": eur(asked),
                "amount": eur(amount),
                "capped": amount < asked,
                "purpose": purpose,
                "in_exile": in_exile,
                "costs_incurred": incurred,
            },
            "eligibility": {
                "women_or_trans_led": led,
                "activism_months": months if isinstance(months, int) else None,
                "group_size": len(defenders),
                "lgbti": any("lgbti" in (d.get("at_risk_groups") or []) for d in defenders),
            },
            "required_items": [{"label": REQUIRED_ITEM_LABELS[item], "answer": answers[item]}
                               for item in fund.required_items],
        }

    # ----------------------------------------------------------------------------- rendering
    def _compose(self, kind: str, view: Mapping[str, Any]) -> Composed:
        subject = one_line(self._render(f"{FOLDER}/{kind}.subject.txt", view))
        if not subject:
            raise MessageError(f"template {FOLDER}/{kind}.subject.txt: renders an empty subject")
        text = _tidy(self._render(f"{FOLDER}/{kind}.txt", view))
        html = None
        if kind in HTML_KINDS:
            html = self._render(f"{FOLDER}/{kind}.html", view).strip() + "\n"
        return Composed(kind=kind, subject=subject, text=text, html=html)

    def _render(self, name: str, view: Mapping[str, Any]) -> str:
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound:
            raise MessageError(f"template {name}: not found") from None
        except jinja2.TemplateSyntaxError as exc:
            raise MessageError(f"template {name}: syntax error on line {exc.lineno}") from None
        try:
            return template.render(**view)
        except jinja2.UndefinedError as exc:
            raise MessageError(f"template {name}: missing value "
                               f"{_missing_name(str(exc), template)}") from None
        except jinja2.TemplateError as exc:
            # The text of other errors can quote values: only the kind of error is named.
            raise MessageError(f"template {name}: {type(exc).__name__}") from None


def _missing_name(message: str, template: jinja2.Template) -> str:
    """The undefined name from Jinja's message, only when the template itself spells it (a key
    looked up from case data would otherwise echo that data)."""
    source = ""
    if template.filename:
        try:
            source = Path(template.filename).read_text(encoding="utf-8")
        except OSError:
            source = ""
    for pattern in _UNDEFINED:
        found = pattern.search(message)
        if found and _IDENTIFIER.match(found.group(1)) and found.group(1) in source:
            return repr(found.group(1))
    return "(a value the template looks up from data)"


# --------------------------------------------------------------------------- naming the defenders
_FULL, _INITIALS, _ANONYMOUS = (str(PublicNaming.FULL_NAMES), str(PublicNaming.INITIALS_ONLY),
                                str(PublicNaming.ANONYMOUS))
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
            9: "nine", 10: "ten"}
# A name part shorter than this, or not capitalised, is not looked for on its own in free texts
# (particles such as "de" or "van", and short words a text may use for something else).
_MIN_NAME_PART = 3
_SENTENCE_END = re.compile(r"(?:[.!?]\s*|\n\s*)$")


def _count(n: int) -> str:
    return _NUMBERS.get(n, str(n))


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _yes_no(value: Any) -> str:
    return {True: "yes", False: "no"}.get(value, "") if isinstance(value, bool) else ""


@dataclass(frozen=True)
class _Person:
    index: int
    naming: str  # a PublicNaming value
    shown: str  # the full name, the initials, or "" when the profile withholds both
    ref: str  # how a sentence names them ("The defender" when there is only one)
    state: str  # why they cannot consent personally ("has been disappeared"), or ""


class _People:
    """The defenders as the messages may name them: the view of each, the phrases that name them
    together, and `line` / `text`, which clean a value from the case and replace every mention of
    a withheld name in it."""

    def __init__(self, defenders: Sequence[Mapping[str, Any]], profiles: Sequence[str]) -> None:
        self.plural = len(defenders) != 1
        self.persons: list[_Person] = []
        names = [one_line(d.get("name")) for d in defenders]
        for i, (name, naming) in enumerate(zip(names, profiles, strict=True)):
            shown = {_FULL: name, _INITIALS: initials(name)}.get(naming, "")
            ref = shown or f"Defender {i + 1} (name withheld)" if self.plural else "The defender"
            state = ("has been disappeared" if is_disappeared(defenders[i])
                     else "is held incommunicado" if is_detained_incommunicado(defenders[i])
                     else "")
            self.persons.append(_Person(i, naming, shown, ref, state))
        self._patterns = _redactions(names, self.persons, self.plural)
        self.views = [self._view(d, p) for d, p in zip(defenders, self.persons, strict=True)]

    @classmethod
    def of(cls, case: MessageCase) -> _People:
        defenders = list(case.intake.get("defenders") or [])
        profiles = []
        for i in range(len(defenders)):
            profile = one_line(case.publicity_of(i))
            profiles.append(profile if profile in (_FULL, _INITIALS) else _ANONYMOUS)
        return cls(defenders, profiles)

    # -- cleaning values from the case
    def line(self, value: Any) -> str:
        return self._redact(one_line(value))

    def text(self, value: Any) -> str:
        return self._redact(clean_text(value))

    def _redact(self, text: str) -> str:
        for pattern, replacement in self._patterns:
            text = pattern.sub(functools.partial(_fitted, replacement), text)
        return text

    # -- naming them together
    @property
    def all_named_in_full(self) -> bool:
        return all(p.naming == _FULL for p in self.persons)

    @property
    def _hidden(self) -> int:
        return sum(1 for p in self.persons if not p.shown)

    @property
    def names(self) -> str:
        """Their names as the profiles allow: "I. S. O. and M. C. B."."""
        named = [p.shown for p in self.persons if p.shown]
        hidden = self._hidden
        if not named:
            return ("a defender whose name is withheld" if hidden == 1
                    else f"{_count(hidden)} defenders whose names are withheld")
        if hidden:
            named.append("one other defender whose name is withheld" if hidden == 1
                         else f"{_count(hidden)} other defenders whose names are withheld")
        return join_and(named)

    @property
    def who(self) -> str:
        """A noun phrase for a sentence: "the human rights defender Tavrin Olloque"."""
        if self._hidden == len(self.persons):
            if not self.plural:
                return "a human rights defender whose name is withheld at their request"
            return (f"{_count(len(self.persons))} human rights defenders whose names are withheld "
                    "at their request")
        return ("the human rights defenders " if self.plural else "the human rights defender ") \
            + self.names

    def targeted_sentence(self) -> str:
        """For fund applications: who is targeted, with their roles."""
        roles = [view["role"] or "defender" for view in self.views]
        named = [f"{p.shown} ({role})" for p, role in zip(self.persons, roles, strict=True)
                 if p.shown]
        hidden = [role for p, role in zip(self.persons, roles, strict=True) if not p.shown]
        verb, whose = ("are", "their") if self.plural else ("is", "the")
        if not hidden:
            subject = join_and(named)
        elif not named:
            subject = (f"The defender ({hidden[0]}), whose name is withheld," if not self.plural
                       else f"The {_count(len(hidden))} defenders ({'; '.join(hidden)}), whose "
                            "names are withheld,")
        else:
            others = ("one other defender whose name is withheld" if len(hidden) == 1
                      else f"{_count(len(hidden))} other defenders whose names are withheld")
            subject = join_and([*named, f"{others} ({'; '.join(hidden)})"])
        return f"{subject} {verb} targeted because of {whose} human rights work."

    # -- one defender
    def _view(self, d: Mapping[str, Any], p: _Person) -> dict[str, Any]:
        age = d.get("age")
        return {
            "name": p.shown or "Name withheld",
            "named": bool(p.shown),
            # For the list of victims: "Y. M. (initials only, at the defender's request)".
            "name_line": {_FULL: p.shown,
                          _INITIALS: f"{p.shown} (initials only, at the defender's request)"}.get(
                p.naming, "withheld at the defender's request"),
            "role": self.line(d.get("role")),
            "gender": label(d.get("gender") or "undisclosed", GENDER_LABELS),
            "age": str(age) if isinstance(age, int) else "",
            "location": self.line(d.get("location")),
            "groups": [label(g, GROUP_LABELS) for g in d.get("at_risk_groups") or []],
            "disappeared": is_disappeared(d),
            "incommunicado": is_detained_incommunicado(d),
            "disappearance": self._rows(d.get("disappearance"), (
                ("Last seen on", "last_seen_date", "date"),
                ("Last seen at", "last_seen_place", "line"),
                ("Nationality", "nationality", "line"),
                ("Date of birth", "date_of_birth", "date"),
                ("Forces believed responsible", "forces_believed_responsible", "text"),
                ("Steps taken by the family", "steps_by_family", "text"),
            )),
            "detention": self._rows(d.get("detention"), (
                ("Arrested on", "arrest_date", "date"),
                ("Arrested or held by", "authority", "line"),
                ("Legal basis and charges", "legal_basis_and_charges", "text"),
                ("Place of detention", "place_of_detention", "line"),
                ("Access to a lawyer", "access_to_lawyer", "flag"),
                ("Access to family", "access_to_family", "flag"),
                ("Held incommunicado", "incommunicado", "flag"),
            )),
        }

    def _rows(self, block: Any, spec: Sequence[tuple[str, str, str]]
              ) -> list[dict[str, str]] | None:
        """The structured facts of a block that are known, as labelled rows (None: no block)."""
        if not isinstance(block, Mapping):
            return None
        rows = []
        for title, key, kind in spec:
            raw = block.get(key)
            value = {"date": lambda v: long_date(v) if v else "", "line": self.line,
                     "text": self.text, "flag": _yes_no}[kind](raw)
            if value:
                rows.append({"label": title, "value": value})
        return rows


def _redactions(names: Sequence[str], persons: Sequence[_Person], plural: bool
                ) -> list[tuple[re.Pattern[str], str]]:
    """Patterns for every mention of a withheld name, the full name first, then each part of it
    (a surname alone is a name too); parts shared with someone named in full are left alone."""
    public_parts = {part for name, p in zip(names, persons, strict=True) if p.naming == _FULL
                    for part in _name_parts(name)}
    whole: list[tuple[re.Pattern[str], str]] = []
    parts: list[tuple[str, str]] = []
    for name, p in zip(names, persons, strict=True):
        if p.naming == _FULL or not name.split():
            continue
        replacement = p.shown or ("one of the defenders" if plural else "the defender")
        body = r"\s+".join(re.escape(word) for word in name.split())
        whole.append((re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE), replacement))
        parts += [(part, replacement) for part in _name_parts(name) if part not in public_parts]
    parts.sort(key=lambda item: -len(item[0]))
    return whole + [(re.compile(rf"(?<!\w){re.escape(part)}(?!\w)"), replacement)
                    for part, replacement in parts]


def _name_parts(name: str) -> list[str]:
    words = name.split()
    pieces = words + [piece for word in words if "-" in word for piece in word.split("-")]
    return [w for w in pieces if len(w) >= _MIN_NAME_PART and w[:1].isupper()]


def _fitted(replacement: str, match: re.Match[str]) -> str:
    """The replacement, capitalised where the name began a sentence."""
    before = match.string[:match.start()]
    return _upper_first(replacement) if not before.strip() or _SENTENCE_END.search(before) \
        else replacement


# ------------------------------------------------------------------------- consent and publicity
@dataclass(frozen=True)
class _Statements:
    all: list[str]  # for the letter to OHCHR: consent to the submission and to naming
    on_behalf: list[str]  # for the diplomats: who consented for someone who could not


def _naming_clause(p: _Person) -> str:
    if p.naming == _FULL:
        return "to this submission and to being named in full in the public report"
    if p.naming == _INITIALS:
        return ("to this submission and to being named by initials only in the public report "
                f"({p.shown})")
    return ("to this submission but not to being named in the public report, neither in full "
            "nor by initials")


def _givers(givers: Sequence[Mapping[str, Any]], people: _People) -> str:
    """"a relative (wife)", "relatives (wife; brother) and a lawyer": kinds and relationships,
    never names (the relationship is cleaned of any withheld name all the same)."""
    found = []
    for kind, one, many in (("relative", "a relative", "relatives"), ("lawyer", "a lawyer",
                                                                      "lawyers")):
        group = [g for g in givers if g.get("given_by") == kind]
        if group:
            relationships = [r for r in (people.line(g.get("relationship")) for g in group) if r]
            found.append((one if len(group) == 1 else many)
                         + (f" ({'; '.join(relationships)})" if relationships else ""))
    return join_and(found)


def _consent_statements(people: _People, givers: Sequence[Mapping[str, Any]],
                        organisation: str) -> _Statements:
    """Who consented, for whom, to what naming. Someone disappeared or held incommunicado never
    "consents" in these words: their relatives or lawyer did, or, where the case recorded no
    detail, consent was obtained on their behalf through the organisation. How and when consent
    was given (channel, time) stays with the secretariat."""
    statements: list[str] = []
    on_behalf: list[str] = []
    poss = "their" if people.plural else "the defender's"
    personal = []
    for p in people.persons:
        mine = [g for g in givers if g.get("defender") == p.index]
        others = [g for g in mine if g.get("given_by") in ("relative", "lawyer")]
        by = _givers(others, people)
        obj = p.ref if people.plural else "the defender"
        if p.state or (others and not any(g.get("given_by") == "defender" for g in mine)):
            intro = f"{p.ref} {p.state} and cannot consent personally. " if p.state else ""
            if by:
                statements.append(f"{intro}{_upper_first(by)} consented on {poss} behalf "
                                  f"{_naming_clause(p)}.")
                on_behalf.append(f"{intro}{_upper_first(by)} consented on behalf of {obj}.")
            else:
                statements.append(f"{intro}Consent on {poss} behalf {_naming_clause(p)} was "
                                  f"obtained through {organisation}.")
                on_behalf.append(f"{intro}Consent on behalf of {obj} was obtained through "
                                 f"{organisation}.")
        else:
            personal.append(p)
            statements.append(f"{p.ref} consents {_naming_clause(p)}.")
    namings = {p.naming for p in people.persons}
    if len(personal) == len(people.persons) and len(namings) == 1:
        # Everyone consented personally to the same naming: one statement for all.
        who = "The defenders consent" if people.plural else "The defender consents"
        naming = namings.pop()
        if naming == _INITIALS:
            shown = "; ".join(p.shown for p in people.persons)
            statements = [f"{who} to this submission and to being named by initials only in the "
                          f"public report ({shown})."]
        else:
            statements = [f"{who} {_naming_clause(people.persons[0])}."]
    return _Statements(statements, on_behalf)


def _publicity(people: _People, advised: bool, own: str, conditions: Sequence[str],
               allowed: bool) -> str:
    """For diplomats and funds: may the case be made public? Said plainly, because publicity can
    endanger; never worded as a proposal when it is not allowed."""
    if allowed:
        who = "the defenders agree" if people.plural else "the defender agrees"
        return f"Publicity: {who} to be named in full in public."
    reasons = []
    if not advised:
        reasons.append("The secretariat's risk assessment advises against any public action")
    namings = {p.naming for p in people.persons}
    if namings != {_FULL}:
        if len(namings) == 1:
            if namings == {_INITIALS}:
                who = "The defenders agree" if people.plural else "The defender agrees"
                reasons.append(f"{who} to be named by initials only in public reports")
            else:
                who = "The defenders do" if people.plural else "The defender does"
                reasons.append(f"{who} not agree to be named in public at all")
        else:
            for p in people.persons:
                if p.naming == _INITIALS:
                    reasons.append(f"{p.ref} agrees to be named by initials only in public reports")
                elif p.naming == _ANONYMOUS:
                    reasons.append(f"{p.ref} does not agree to be named in public at all")
    if _PUBLICITY.search(own):
        reasons.append("The grantee's conditions limit publicity")
    elif any(_PUBLICITY.search(c) for c in conditions):
        # Another channel's conditions are not quoted here: only that they exist.
        reasons.append("Conditions the grantee set for another channel limit publicity")
    said = "; ".join(r if i == 0 or not r.startswith(("The ", "Conditions ")) else r[:1].lower() + r[1:]
                     for i, r in enumerate(reasons))
    return (f"PUBLICITY CAN ENDANGER THE DEFENDERS. {said}: nothing about the case may be said "
            "to the public or the press, or posted on social media, without the secretariat's "
            "confirmation.")


def _purpose(value: Any) -> str:
    text = one_line(value)
    return text.replace("_", " ") if text in set(Purpose) else text
