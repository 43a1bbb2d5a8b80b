"""HTML forms to the workflow's inputs: the intake form and one form per decision.

Field names in the intake form are the intake's own paths (``organisation.name``,
``defenders[0].age``), so an InvalidInput from domain.intake names the form field to mark.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from desk.cases import informable_actions
from domain.errors import InvalidInput
from domain.intake import DEFENDERS_MAX
from domain.rules import CONSENT_CHANNELS, GIVERS
from domain.vocab import Action, Outcome, PublicNaming, Role, Verdict
from workflows.inputs import (
    CheckinInput,
    ClearanceInput,
    CloseInput,
    ConfirmPublicInput,
    ConsentInput,
    ExtensionInput,
    FundChoiceInput,
    FundSubmissionInput,
    InformationInput,
    ReassessInput,
    ResponseInput,
    VerificationInput,
)

# The update names are the same on both workflow types (UrgentCase for cases opened before
# per-action tracks, UrgentCaseTracks since): the tracked type's methods address either.
from workflows.tracks import TrackedCaseWorkflow as CaseWorkflow

MAX_PEOPLE = 100  # consent records read from one form at most
OFFICER, LIAISON, HEAD = Role.CASE_OFFICER.value, Role.MINISTRY_LIAISON.value, Role.HEAD.value
THREAT_QUESTIONS = {
    "facts": "The facts: what happened?",
    "pattern": "Is there a pattern of threats over time?",
    "objective": "What seems to be the objective of the threat?",
    "source_of_threat": "Who is making the threat?",
    "likely_carried_out": "Is the threat likely to be carried out?",
}
_LIST_FIELD = re.compile(r"^(.*?)\[\d+\]$")


class FormError(Exception):
    """A field of a web form that cannot become an input (field name, message for the person)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --------------------------------------------------------------------------------------- intake
def _s(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _int(form: Mapping[str, Any], name: str) -> int | None:
    value = _s(form, name)
    if not value:
        return None
    if not re.fullmatch(r"[0-9]{1,12}", value):
        raise InvalidInput(name, "must be a whole number")
    return int(value)


def _optional(value: str) -> str | None:
    return value or None


_DEFENDER_KEY = re.compile(r"^defenders\[(\d{1,3})\]\.")


def defender_count(form: Any) -> int:
    """How many defender sections the form has (at least one; at most DEFENDERS_MAX)."""
    found = [int(m.group(1)) for key in form if (m := _DEFENDER_KEY.match(str(key)))]
    return max(1, min(DEFENDERS_MAX, max(found, default=0) + 1))


def intake_from_form(form: Any, problems: dict[str, str]) -> dict[str, Any]:
    """The raw intake dict that domain.intake.parse_intake validates. A number that is not one is
    noted in `problems` (field -> reason) and left out, so that every other field is still
    checked."""
    def number(name: str) -> int | None:
        try:
            return _int(form, name)
        except InvalidInput as err:
            problems.setdefault(err.field, err.reason)
            return None

    defenders = []
    for i in range(defender_count(form)):
        p = f"defenders[{i}]"
        slot = {k: _s(form, f"{p}.{k}") for k in ("name", "role", "gender", "location")}
        age = number(f"{p}.age")
        groups = list(form.getlist(f"{p}.at_risk_groups"))
        if not any(slot.values()) and age is None and not groups:
            continue
        defenders.append({"name": slot["name"], "role": slot["role"],
                          "gender": slot["gender"] or None, "age": age,
                          "location": slot["location"], "at_risk_groups": groups})
    requested = [a.value for a in Action if _s(form, f"action.{a.value}") == "requested"]
    refused = [a.value for a in Action if _s(form, f"action.{a.value}") == "refused"]
    eu_amount, eu_purpose = number("eu_grant.amount_eur"), _s(form, "eu_grant.purpose")
    fund_amount, fund_purpose = number("fund_request.amount_eur"), _s(form, "fund_request.purpose")
    return {
        "organisation": {
            "name": _s(form, "organisation.name"),
            "contact_name": _s(form, "organisation.contact_name"),
            "contact_email": _s(form, "organisation.contact_email"),
            "women_or_trans_led": _s(form, "organisation.women_or_trans_led") == "yes",
            "activism_months": number("organisation.activism_months"),
        },
        "defenders": defenders,
        "country": _s(form, "country").upper(),
        "incident": {k: _s(form, f"incident.{k}") for k in (
            "date", "time", "place", "description", "perpetrators", "ongoing_risk")}
        | {"perpetrator_kind": _optional(_s(form, "incident.perpetrator_kind"))},
        "threat_types": list(form.getlist("threat_types")),
        "rights_affected": list(form.getlist("rights_affected")),
        "requested_actions": requested,
        "refused_actions": refused,
        "urgency": _s(form, "urgency"),
        "domestic_steps": _s(form, "domestic_steps"),
        "confidential_information": _s(form, "confidential_information"),
        "eu_grant": ({"amount_eur": eu_amount, "purpose": eu_purpose}
                     if eu_amount is not None or eu_purpose else None),
        "fund_request": ({"amount_eur": fund_amount, "purpose": fund_purpose,
                          "costs_already_incurred": _s(form, "fund_request.costs_already_incurred") == "yes",
                          "in_exile": _s(form, "fund_request.in_exile") == "yes"}
                         if fund_amount is not None or fund_purpose else None),
    }


# The new-case form's fields in plain words (the error summary and each field's message).
FIELD_LABELS = {
    "organisation.name": "Organisation name", "organisation.contact_name": "Contact person",
    "organisation.contact_email": "Contact email",
    "organisation.activism_months": "Months of activism", "country": "Country",
    "incident.date": "Incident date", "incident.time": "Incident time",
    "incident.place": "Incident place", "incident.description": "What happened",
    "incident.perpetrator_kind": "Perpetrator", "incident.perpetrators": "Perpetrators (who)",
    "incident.ongoing_risk": "Ongoing risk", "threat_types": "Threat types",
    "rights_affected": "Rights affected", "actions": "Actions", "urgency": "Urgency",
    "domestic_steps": "Domestic remedies already tried",
    "confidential_information": "Confidential information for OHCHR",
    "eu_grant.amount_eur": "EU emergency grant amount", "eu_grant.purpose": "EU emergency grant purpose",
    "fund_request.amount_eur": "Emergency fund request amount",
    "fund_request.purpose": "Emergency fund request purpose",
}
_DEFENDER_FIELD = re.compile(r"^defenders\[(\d+)\]\.(\w+)")
_DEFENDER_WORDS = {"name": "name", "role": "role", "gender": "gender", "age": "age",
                   "location": "location", "at_risk_groups": "at-risk groups"}


def field_label(field: str) -> str:
    """A form field in plain words: `defenders[1].age` -> `Defender 2 age`."""
    if field in FIELD_LABELS:
        return FIELD_LABELS[field]
    m = _DEFENDER_FIELD.match(field)
    if m:
        return f"Defender {int(m.group(1)) + 1} {_DEFENDER_WORDS.get(m.group(2), m.group(2))}"
    words = " ".join(field.replace("_", " ").replace(".", " ").split())
    return words[:1].upper() + words[1:]


_FORM_ORDER = ("organisation.", "defenders[", "country", "incident.", "threat_types",
               "rights_affected", "actions", "urgency", "domestic_steps",
               "confidential_information", "eu_grant.", "fund_request.")


def form_order(field: str) -> tuple[int, int, str]:
    """Where a field stands on the new-case form (errors are listed in that order)."""
    rank = next((i for i, p in enumerate(_FORM_ORDER) if field.startswith(p)), len(_FORM_ORDER))
    m = _DEFENDER_FIELD.match(field)
    keys = ("name", "role", "gender", "age", "location", "at_risk_groups")
    within = (int(m.group(1)) * 10 + (keys.index(m.group(2)) if m.group(2) in keys else 9)
              if m else 0)
    return rank, within, field if rank == len(_FORM_ORDER) else ""


def intake_error_field(field: str) -> str:
    """The form field an intake error belongs to (list items point at their list)."""
    if field.startswith(("requested_actions", "refused_actions")):
        return "actions"
    if field in ("eu_grant", "fund_request"):
        return f"{field}.amount_eur"
    match = _LIST_FIELD.match(field)
    base = match.group(1) if match else field
    return "defenders[0].name" if base == "defenders" else base


# ------------------------------------------------------------------------------------ decisions
@dataclass(frozen=True)
class Decision:
    """One decision form: who may use it and how its fields become a workflow update."""

    name: str
    roles: tuple[str, ...]
    label: str
    build: Callable[[Mapping[str, Any], str], tuple[Any, Any]]


def _choice(form: Mapping[str, Any], name: str, allowed: Sequence[str]) -> str:
    value = _s(form, name)
    if value not in allowed:
        raise FormError(name, f"choose one of: {', '.join(allowed)}")
    return value


def _score(form: Mapping[str, Any], name: str) -> int:
    value = _s(form, name)
    if value not in {"1", "2", "3", "4", "5"}:
        raise FormError(name, "choose a number from 1 to 5")
    return int(value)


def _action(form: Mapping[str, Any]) -> str:
    return _choice(form, "action", [a.value for a in Action])


def _verification(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    data = {
        "threat_questions": {k: _s(form, f"threat_questions.{k}") for k in THREAT_QUESTIONS},
        "vulnerabilities": _s(form, "vulnerabilities"),
        "capacities": _s(form, "capacities"),
        "probability": _score(form, "probability"),
        "impact": _score(form, "impact"),
        "verdict": _choice(form, "verdict", [v.value for v in Verdict]),
        "verifying_source": _s(form, "verifying_source"),
        "do_no_harm": _s(form, "do_no_harm"),
    }
    # The do-no-harm conclusion: required for a verified threat (domain.intake says so by name).
    if _s(form, "public_action_advised") or data["verdict"] == Verdict.VERIFIED:
        data["public_action_advised"] = _choice(form, "public_action_advised", ["yes", "no"]) == "yes"
    return CaseWorkflow.record_verification, VerificationInput(actor, data)


def _consent(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    answer = _choice(form, "answer", ["grant", "refuse"])
    action = _action(form)
    text = _s(form, "text")
    if answer == "refuse":
        return CaseWorkflow.refuse_consent, ConsentInput(actor, action, text)
    if "consents[0].given_by" not in form:  # a case opened before per-person consent records
        naming = _choice(form, "public_naming", [p.value for p in PublicNaming])
        return CaseWorkflow.grant_consent, ConsentInput(actor, action, text, naming)
    records, publicity = consent_records(form)
    return CaseWorkflow.grant_consent, ConsentInput(actor, action, text, consents=records,
                                                    publicity=publicity)


def consent_records(form: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One record per defender (`consents[N].given_by` ...) and each one's naming (`publicity.N`);
    the workflow applies the rules (every defender, who may consent for whom, not in the future)."""
    records: list[dict[str, Any]] = []
    publicity: dict[str, str] = {}
    namings = [p.value for p in PublicNaming]
    for i in range(MAX_PEOPLE):
        p = f"consents[{i}]"
        if f"{p}.given_by" not in form:
            break
        raw = _s(form, f"{p}.given_at")
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            raise FormError(f"{p}.given_at", "give the date and time consent was given (UTC), "
                            "e.g. 2026-11-03 09:30") from None
        records.append({
            "defender": i,
            "given_by": _choice(form, f"{p}.given_by", GIVERS),
            "relationship": _s(form, f"{p}.relationship"),
            "channel": _choice(form, f"{p}.channel", CONSENT_CHANNELS),
            "given_at": (when.replace(tzinfo=UTC) if when.tzinfo is None else when).isoformat(),
        })
        publicity[str(i)] = _choice(form, f"publicity.{i}", namings)
    return records, publicity


def _withdraw(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    return CaseWorkflow.withdraw_consent, ConsentInput(actor, _action(form), _s(form, "text"))


def _clearance(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    granted = _choice(form, "granted", ["yes", "no"]) == "yes"
    return CaseWorkflow.record_clearance, ClearanceInput(actor, _action(form), granted, _s(form, "reason"))


def _list(form: Mapping[str, Any], name: str) -> list[str]:
    getlist = getattr(form, "getlist", None)
    values = getlist(name) if getlist is not None else [form.get(name)]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def _choose_funds(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    funds = _list(form, "funds")
    if not funds:
        raise FormError("funds", "choose a fund from the suggestions")
    return CaseWorkflow.choose_funds, FundChoiceInput(actor, funds, _s(form, "reason"))


def _fund_submission(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    fund = _s(form, "fund")
    if not fund:
        raise FormError("fund", "which fund's form was the application submitted through?")
    return CaseWorkflow.record_fund_submission, FundSubmissionInput(actor, fund, _s(form, "note"))


def _extension(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    raw = _s(form, "new_deadline")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise FormError("new_deadline", "give a date and time (UTC), e.g. 2026-11-05 18:00") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    action = _s(form, "deadline_of")
    if action:
        _choice(form, "deadline_of", [a.value for a in Action])
    return CaseWorkflow.extend_deadline, ExtensionInput(actor, when, _s(form, "reason"), action)


def _response(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    return CaseWorkflow.record_response, ResponseInput(actor, _action(form), _s(form, "summary"),
                                                       _s(form, "recipient"))


def _information(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    # Cases with tracks name the actions whose earlier recipients get it (none ticked: nobody).
    send_to = _list(form, "send_to") if _s(form, "by_action") == "yes" else None
    return CaseWorkflow.add_further_information, InformationInput(
        actor, _s(form, "information"), _s(form, "send_to_recipients") == "yes", send_to=send_to)


def _checkin(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    """A check-in; with a new probability and impact (both, and the reason) it re-assesses the
    risk as well."""
    reassessment = None
    if any(_s(form, k) for k in ("probability", "impact", "risk_reason")):
        reassessment = _reassessment(form)
    return CaseWorkflow.record_checkin, CheckinInput(actor, _s(form, "summary"),
                                                     _s(form, "reprisals") == "yes",
                                                     reassessment=reassessment)


def _reassessment(form: Mapping[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    scores: dict[str, int] = {}
    for name in ("probability", "impact"):
        try:
            scores[name] = _score(form, name)
        except FormError as err:
            errors[name] = err.message
    reason = _s(form, "risk_reason")
    if not reason:
        errors["reason"] = "say why the risk is re-assessed"
    if errors:
        raise FormErrors(errors)
    return {**scores, "reason": reason}


def _reassess(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    r = _reassessment(form)
    return CaseWorkflow.reassess_risk, ReassessInput(actor, r["probability"], r["impact"],
                                                     r["reason"])


def _confirm_public(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    errors: dict[str, str] = {}
    if not _s(form, "reason"):
        errors["reason"] = "say why public actions may go on after the reprisal"
    if _s(form, "confirm") != "yes":
        errors["confirmation"] = "tick the box to confirm that public actions may go on"
    if errors:
        raise FormErrors(errors)
    return CaseWorkflow.confirm_public_actions, ConfirmPublicInput(actor, _s(form, "reason"))


def _close(form: Mapping[str, Any], actor: str) -> tuple[Any, Any]:
    """Closing ends every action for good: the person chooses the outcome (none is preset),
    says why in a summary and ticks the confirmation; every missing one is named at once."""
    errors: dict[str, str] = {}
    outcome = _s(form, "outcome")
    if outcome not in [o.value for o in Outcome]:
        errors["outcome"] = "choose the outcome of the case"
    summary = _s(form, "summary")
    if not summary:
        errors["summary"] = "write what happened and why the case is closed"
    if _s(form, "confirm") != "yes":
        errors["confirmation"] = ("tick the box to confirm that closing ends every action of the "
                                  "case and cannot be undone")
    if errors:
        raise FormErrors(errors)
    return CaseWorkflow.close, CloseInput(actor, outcome, summary)


DECISIONS: dict[str, Decision] = {d.name: d for d in (
    Decision("verification", (OFFICER,), "Record the threat verification", _verification),
    Decision("consent", (OFFICER,), "Record the grantee's consent", _consent),
    Decision("withdraw", (OFFICER,), "Record a withdrawal of consent", _withdraw),
    Decision("clearance", (LIAISON,), "Record the ministry's clearance", _clearance),
    Decision("choose_funds", (OFFICER,), "Choose the emergency fund", _choose_funds),
    Decision("fund_submission", (OFFICER,), "Record the application made through the fund's form",
             _fund_submission),
    Decision("extend", (HEAD,), "Extend a deadline", _extension),
    Decision("response", (OFFICER,), "Record a response", _response),
    Decision("information", (OFFICER,), "Add further information", _information),
    Decision("checkin", (OFFICER,), "Record a check-in with the defender", _checkin),
    Decision("close", (OFFICER, HEAD), "Close the case", _close),
    Decision("reassess", (OFFICER,), "Re-assess the risk", _reassess),
    Decision("confirm_public", (OFFICER,), "Confirm that public actions may go on",
             _confirm_public),
)}


def available_forms(status: Mapping[str, Any], roles: set[str], username: str) -> list[dict[str, Any]]:
    """The decision forms this user may use now, from the workflow's status: one entry per form,
    with the action (and fund) it is for where there is one, and the id of its HTML form.
    Nothing for auditors or a closed case. Works for both workflow types."""
    stage = status.get("stage")
    if stage in (None, "intake", "closed"):
        return []
    tracked = bool(status.get("tracked"))
    tracks: dict[str, dict[str, Any]] = status.get("tracks") or status.get("actions") or {}
    forms: list[dict[str, Any]] = []

    def add(name: str, action: str | None = None, **extra: Any) -> None:
        if roles & set(DECISIONS[name].roles):
            key = "-".join(str(k) for k in (name, action, extra.get("fund")) if k)
            forms.append({"name": name, "action": action, "label": DECISIONS[name].label,
                          "id": f"form-{key}", **extra})

    for item in status.get("pending") or []:
        decision = item.get("decision")
        if decision == "record_verification":
            add("verification")
        elif decision == "grant_or_refuse_consent":
            add("consent", item.get("action"))
        elif decision == "record_clearance" and item.get("not_by") != username:
            add("clearance", item.get("action"))
        elif decision == "choose_funds":
            add("choose_funds", item.get("action") or Action.EMERGENCY_FUND.value)
        elif decision == "record_fund_submission" and item.get("fund"):
            add("fund_submission", item.get("action") or Action.EMERGENCY_FUND.value,
                fund=item["fund"])
        elif decision == "extend_deadline":
            add("extend", deadlines=_deadlines(status) if tracked else [])
    for action, a in tracks.items():
        granted = a.get("consent") == "granted"
        if granted and (a.get("step") != "ended" if tracked else a.get("dispatch") != "sent"):
            add("withdraw", action)
        if a.get("dispatch") == "sent":
            recipients = [*(a.get("recipients") or []),
                          *(f for f, state in (a.get("funds") or {}).items()
                            if state in ("sent", "submitted"))]
            add("response", action, recipients=sorted(set(recipients)))
    add("information", sent_any=any(a.get("dispatch") == "sent" for a in tracks.values()),
        tracked=tracked, informable=informable_actions(status) if tracked else [],
        recipients={a: list(t.get("recipients") or []) for a, t in tracks.items()})
    # A check-in once the case is verified (tracks), or once messages go out (older cases).
    checkin_open = stage != "verification" if tracked else stage in ("dispatch", "follow_up")
    if status.get("public_hold"):
        add("confirm_public", held=[a for a, t in tracks.items() if t.get("public_hold")])
    if checkin_open:
        add("checkin", reassess=tracked)
    if tracked and checkin_open:
        add("reassess", level=status.get("risk_level") or "")
    add("close")
    return forms


def _deadlines(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The deadlines an extension may move: the verification's, then each running action's."""
    out = []
    if status.get("verification_deadline"):
        out.append({"action": "", "label": "the verification", "when": status["verification_deadline"]})
    for action, t in (status.get("tracks") or {}).items():
        if t.get("deadline") and t.get("step") != "ended":
            out.append({"action": action, "label": f"{action.replace('_', ' ')} "
                        f"({str(t.get('step', '')).replace('_', ' ')})", "when": t["deadline"]})
    return out


# ------------------------------------------------------------------------- held messages
# Plain words for the intake fields a held message may lack (domain.readiness.missing_fields).
HELD_LABELS: dict[str, tuple[str, str]] = {  # path -> (label, input kind)
    "organisation.name": ("Name of the organisation that asks", "text"),
    "organisation.contact_name": ("Contact person at the organisation", "text"),
    "organisation.contact_email": ("Contact e-mail of the organisation", "email"),
    "incident.description": ("What happened", "textarea"),
    "incident.ongoing_risk": ("The risk now: what may happen next", "textarea"),
    "fund_request.amount_eur": ("Emergency fund request: amount in euros", "number"),
    "fund_request.purpose": ("Emergency fund request: what it pays for", "purpose"),
}
_DEFENDER_LABELS: dict[str, tuple[str, str]] = {
    "role": ("role or work", "text"),
    "location": ("where they are now", "text"),
    "disappearance.last_seen_date": ("date last seen", "date"),
    "disappearance.last_seen_place": ("place last seen", "text"),
    "detention.arrest_date": ("date of arrest", "date"),
    "detention.place_of_detention": ("place of detention", "text"),
}
_DEFENDER_PATH = re.compile(r"^defenders\[(\d{1,3})\]\.(.+)$")


def held_field(path: str, intake: Mapping[str, Any]) -> dict[str, Any]:
    """One missing intake field as a form field: its path (the input's name), a label in plain
    words and the kind of input."""
    match = _DEFENDER_PATH.match(path)
    if match and match.group(2) in _DEFENDER_LABELS:
        i = int(match.group(1))
        defenders = intake.get("defenders") or []
        who = defenders[i].get("name") if i < len(defenders) else ""
        label, kind = _DEFENDER_LABELS[match.group(2)]
        return {"path": path, "label": f"Defender {i + 1}{f' ({who})' if who else ''}: {label}",
                "kind": kind}
    label, kind = HELD_LABELS.get(path, (path.replace("_", " ").replace(".", ": "), "text"))
    return {"path": path, "label": label, "kind": kind}


def held_fields(status: Mapping[str, Any], intake: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields the held messages of a case still lack, each once, with the actions waiting for
    it; from the workflow's pending decisions (only tracks that may still send are there)."""
    fields: dict[str, dict[str, Any]] = {}
    for item in status.get("pending") or []:
        if item.get("decision") != "add_further_information" or not item.get("missing"):
            continue
        for path in item["missing"]:
            # A missing fund request is its amount and its purpose.
            for p in (["fund_request.amount_eur", "fund_request.purpose"]
                      if path == "fund_request" else [path]):
                entry = fields.setdefault(p, {**held_field(p, intake), "actions": []})
                if item.get("action") and item["action"] not in entry["actions"]:
                    entry["actions"].append(item["action"])
    return list(fields.values())


class FormErrors(FormError):
    """Several fields of one form are wrong: every one is named (the first is `field`)."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        first, *rest = errors.items()
        super().__init__(first[0], "; ".join(
            [first[1], *(f"{k.replace('_', ' ')}: {m}" for k, m in rest)]))
        self.errors = dict(errors)


def intake_changes_from_form(form: Mapping[str, Any], fields: Sequence[Mapping[str, Any]],
                             intake: Mapping[str, Any]) -> dict[str, Any]:
    """The intake changes (InformationInput.intake_changes) that complete the held fields from
    the form; FormErrors names every field left empty or not a number where one is needed."""
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {}
    defenders: list[dict[str, Any]] | None = None
    for f in fields:
        path, value = f["path"], _s(form, f["path"])
        if not value:
            errors[path] = "is required: the held message cannot go without it"
            continue
        typed: Any = value
        if f["kind"] == "number":
            if not re.fullmatch(r"[0-9]{1,9}", value):
                errors[path] = "must be a whole number of euros"
                continue
            typed = int(value)
        match = _DEFENDER_PATH.match(path)
        if match:
            if defenders is None:
                defenders = [dict(d) for d in intake.get("defenders") or []]
            i = int(match.group(1))
            if i >= len(defenders):
                errors[path] = "names no defender of this case"
                continue
            block, _, key = match.group(2).rpartition(".")
            if block:
                defenders[i][block] = {**(defenders[i].get(block) or {}), key: typed}
            else:
                defenders[i][key] = typed
        else:
            top, _, key = path.partition(".")
            changes.setdefault(top, {})[key] = typed
    if errors:
        raise FormErrors(errors)
    if defenders is not None:
        changes["defenders"] = defenders
    return changes
