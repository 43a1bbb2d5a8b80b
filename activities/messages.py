"""The content of every outgoing message (DESIGN.md section 3), composed from the case.

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
  incident text.

One-line values are cleaned of control characters (a name with a line break cannot break a
subject line or forge a line in a body); HTML templates are autoescaped. A template that refers to
a missing value fails with MessageError, which names the template and the value, never case data.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from domain.case import GRANTED, Case
from domain.countries import COUNTRIES
from domain.funds import Fund, Purpose, RequiredItem, capped_amount
from domain.policies import EU_GRANT_CAP_EUR
from domain.routing import Mandate, route_rapporteur
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


class MessageError(ValueError):
    """A message cannot be composed: names the template and the missing value, never case data."""


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
    def __init__(self, templates: Path = TEMPLATES, *, signature: str = "The secretariat") -> None:
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
        self.signature = one_line(signature)

    # ------------------------------------------------------------------------------- appeals
    def appeal(self, case: Case, action: str, *, mandates: list[Mandate] | None = None,
               fund: Fund | None = None) -> Composed:
        """The message for one consented action of the case."""
        view = self._case_view(case, action)
        if action == Action.RAPPORTEUR:
            view.update(self._rapporteur_view(case, mandates))
        elif action == Action.MFA:
            view.update(self._mfa_view(case))
        elif action == Action.EU_DELEGATION:
            view.update(self._eu_view(case))
        elif action == Action.EMERGENCY_FUND:
            if fund is None:
                raise MessageError("emergency_fund: an application needs the fund it goes to")
            view.update(self._fund_view(case, fund))
        return self._compose(str(Action(action)), view)

    def further_information(self, case: Case, action: str, information: str) -> Composed:
        """An update to the earlier recipients of one action (threading headers are the caller's)."""
        view = self._case_view(case, action)
        view["information"] = clean_text(information)
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

    # ------------------------------------------------------------------------------- views
    def _case_view(self, case: Case, action: str) -> dict[str, Any]:
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
        defenders = [self._defender(d) for d in intake.get("defenders") or []]
        conditions = clean_text(state.get("conditions"))
        naming = one_line(state.get("public_naming")) or PublicNaming.ANONYMOUS
        publicity_allowed = naming == PublicNaming.FULL_NAMES and not _PUBLICITY.search(conditions)
        # Channels named to other recipients: the diplomatic and UN ones only. Fund applications
        # are no business of the ministry or the delegation (the EU grant view says what it must).
        granted = [a for a, s in case.actions.items()
                   if s["consent"] == GRANTED and a in _CHANNELS]
        declined = [a for a in intake.get("refused_actions") or [] if a in _CHANNELS]
        declined += [a for a, s in case.actions.items()
                     if s["consent"] != GRANTED and a not in declined and a in _CHANNELS]
        threats = [str(t) for t in intake.get("threat_types") or []]
        country = one_line(intake.get("country"))
        return {
            "reference": one_line(case.reference),
            "country": country,
            "country_name": _country_name(country),
            "country_the": country_in_sentence(country),
            "signature": self.signature,
            "organisation": {
                "name": one_line(org.get("name")),
                "contact_name": one_line(org.get("contact_name")),
                "contact_email": one_line(org.get("contact_email")),
            },
            "defenders": defenders,
            "plural": len(defenders) != 1,
            "names": join_and(d["name"] for d in defenders),
            "incident": {
                "date": long_date(incident.get("date", "")),
                "time": one_line(incident.get("time")),
                "place": one_line(incident.get("place")),
                "description": clean_text(incident.get("description")),
                "perpetrator_kind": label(incident.get("perpetrator_kind") or "unknown",
                                          PERPETRATOR_LABELS),
                "perpetrators": clean_text(incident.get("perpetrators")),
                "ongoing_risk": clean_text(incident.get("ongoing_risk")),
            },
            "threats": [label(t, THREAT_LABELS) for t in threats],
            "rights": [label(r, RIGHT_LABELS) for r in intake.get("rights_affected") or []],
            "detention": bool(_DETENTION & set(threats)),
            "judicial": bool(_JUDICIAL & set(threats)),
            "life": bool(_LIFE & set(threats)),
            "disappearance": ThreatType.ENFORCED_DISAPPEARANCE in threats,
            "urgency": one_line(intake.get("urgency")),
            "risk_level": one_line(case.risk_level) or "not yet assessed",
            "domestic_steps": clean_text(intake.get("domestic_steps")),
            "consent": {
                "conditions": conditions,
                "naming": naming,
                "naming_statement": _naming_statement(naming, defenders),
                "publicity_allowed": publicity_allowed,
                "publicity": _publicity(naming, conditions, len(defenders) != 1, publicity_allowed),
            },
            "other_channels": [ACTION_LABELS[a] for a in granted if a != action],
            "declined": [ACTION_LABELS.get(a, label(a)) for a in declined],
        }

    @staticmethod
    def _defender(d: Mapping[str, Any]) -> dict[str, Any]:
        name = one_line(d.get("name"))
        age = d.get("age")
        return {
            "name": name,
            "initials": initials(name),
            "role": one_line(d.get("role")),
            "gender": label(d.get("gender") or "undisclosed", GENDER_LABELS),
            "age": str(age) if isinstance(age, int) else "",
            "location": one_line(d.get("location")),
            "groups": [label(g, GROUP_LABELS) for g in d.get("at_risk_groups") or []],
        }

    def _rapporteur_view(self, case: Case, mandates: list[Mandate] | None) -> dict[str, Any]:
        intake = case.intake
        if mandates is None:
            groups = {g for d in intake.get("defenders") or [] for g in d.get("at_risk_groups") or []}
            mandates = route_rapporteur(intake.get("threat_types") or [],
                                        intake.get("rights_affected") or [], sorted(groups))
        if not mandates:
            raise MessageError("rapporteur: an urgent appeal needs at least one mandate")
        chosen = [Mandate(m) for m in mandates]
        return {
            "mandates": [{"label": m.label, "title": m.full_title} for m in chosen],
            "mandate_labels": ", ".join(m.label for m in chosen),
            "confidential_information": clean_text(intake.get("confidential_information")),
            "verified": case.verification is not None,
        }

    def _mfa_view(self, case: Case) -> dict[str, Any]:
        v = case.verification or {}
        probability, impact = v.get("probability"), v.get("impact")
        risk = None
        if isinstance(probability, int) and isinstance(impact, int):
            risk = {"probability": probability, "impact": impact, "score": probability * impact}
        return {"risk": risk}

    def _eu_view(self, case: Case) -> dict[str, Any]:
        grant = case.intake.get("eu_grant")
        view: dict[str, Any] = {"grant": None, "grant_cap": eur(EU_GRANT_CAP_EUR)}
        if grant:
            amount = int(grant["amount_eur"])
            if amount > EU_GRANT_CAP_EUR:
                raise MessageError(f"eu_delegation: an EU emergency grant cannot exceed "
                                   f"{eur(EU_GRANT_CAP_EUR)}")
            view["grant"] = {"amount": eur(amount), "purpose": _purpose(grant.get("purpose"))}
            fund = case.actions.get(Action.EMERGENCY_FUND)
            request = case.intake.get("fund_request")
            if fund and fund["consent"] == GRANTED and request:
                # Said so that the same costs are not funded twice.
                view["other_funding"] = _purpose(request.get("purpose"))
        view.setdefault("other_funding", "")
        return view

    def _fund_view(self, case: Case, fund: Fund) -> dict[str, Any]:
        intake = case.intake
        request = intake.get("fund_request")
        if not request or not request.get("amount_eur"):
            raise MessageError("emergency_fund: the case has no fund request")
        org = intake.get("organisation") or {}
        asked = int(request["amount_eur"])
        amount = capped_amount(asked, fund.cap_eur)
        purpose = _purpose(request.get("purpose"))
        defenders = intake.get("defenders") or []
        in_exile = bool(request.get("in_exile"))
        incurred = bool(request.get("costs_already_incurred"))
        months = org.get("activism_months")
        led = bool(org.get("women_or_trans_led"))
        roles = join_and(f"{one_line(d.get('name'))} ({one_line(d.get('role')) or 'defender'})"
                         for d in defenders)
        ongoing = clean_text((intake.get("incident") or {}).get("ongoing_risk"))
        contact = ", ".join(x for x in (one_line(org.get("contact_name")),
                                        one_line(org.get("contact_email"))) if x)
        answers: dict[RequiredItem, str] = {
            RequiredItem.INCIDENT_DESCRIPTION: "see \"What happened\" above",
            RequiredItem.LINK_TO_RIGHTS_WORK: f"{roles} {'are' if len(defenders) != 1 else 'is'} "
            f"targeted because of {'their' if len(defenders) != 1 else 'the'} human rights work."
            + (f" {ongoing}" if ongoing else ""),
            RequiredItem.BUDGET: f"{eur(amount)} for {purpose}",
            RequiredItem.ORGANISATION_DETAILS: one_line(org.get("name"))
            + (f" (contact: {contact})" if contact else ""),
            RequiredItem.ACTIVISM_RECORD: f"{months} months of documented activism"
            if isinstance(months, int) else ON_REQUEST,
            RequiredItem.WOMEN_OR_TRANS_LED: "yes" if led else "no",
            RequiredItem.EXILE_STATUS: "yes, in exile" if in_exile else "no, not in exile",
            RequiredItem.COSTS_INCURRED: "yes, already incurred" if incurred
            else "no, the costs are still to come",
            RequiredItem.REFERENCE_CONTACT: "the secretariat, which sends this application on the "
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


def _naming_statement(naming: str, defenders: Sequence[Mapping[str, Any]]) -> str:
    who = "The defenders consent" if len(defenders) != 1 else "The defender consents"
    if naming == PublicNaming.FULL_NAMES:
        return f"{who} to this submission and to being named in full in the public report."
    if naming == PublicNaming.INITIALS_ONLY:
        shown = "; ".join(d["initials"] for d in defenders)
        return (f"{who} to this submission and to being named by initials only in the public "
                f"report ({shown}).")
    return (f"{who} to this submission but not to being named in the public report, neither in "
            "full nor by initials.")


def _publicity(naming: str, conditions: str, plural: bool, allowed: bool) -> str:
    """For diplomats: may the case be made public? Said plainly, because publicity can endanger."""
    who = "The defenders agree" if plural else "The defender agrees"
    if allowed:
        return f"Publicity: {who[0].lower()}{who[1:]} to be named in full in public."
    if naming == PublicNaming.FULL_NAMES:
        why = "The grantee's conditions (above) limit publicity"
    elif naming == PublicNaming.INITIALS_ONLY:
        why = f"{who} to be named by initials only in public reports"
    else:
        who = "The defenders do" if plural else "The defender does"
        why = f"{who} not agree to be named in public at all"
    return (f"PUBLICITY CAN ENDANGER THE DEFENDERS. {why}: no public statement, press contact or "
            "social-media post about the case without the secretariat's confirmation.")


def _purpose(value: Any) -> str:
    text = one_line(value)
    return text.replace("_", " ") if text in set(Purpose) else text
