"""The rules of a case with per-action tracks, each written once.

The aggregate (domain.tracked) calls them before it records anything, and the workflow's update
validators call the same functions on the same typed view (domain.view) so that a decision that
cannot be recorded is refused before it is accepted, with the same sentence. Each raises one of the
named errors of domain.errors; messages name stages, actions and fields only, never a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from domain import errors
from domain.view import GRANTED, NOT_REQUIRED, PENDING, PROPOSED, SENT, TO_SUBMIT, CaseView, Track
from domain.vocab import PublicNaming

MAX_TEXT = 20_000
GIVERS = ("defender", "relative", "lawyer")
CONSENT_CHANNELS = ("in_person", "phone", "video_call", "secure_message", "email", "letter",
                    "through_grantee")


def require_open(view: CaseView) -> None:
    if view.stage == "closed":
        raise errors.CaseClosed("This case is closed; it can be read but not changed.")


def require_verification_stage(view: CaseView) -> None:
    require_open(view)
    if view.stage != "verification":
        raise errors.StageOrderError(
            "This case has been verified already; a verification can only be recorded once.")


def require_verified(view: CaseView, what: str) -> None:
    require_open(view)
    if view.stage == "verification":
        raise errors.StageOrderError(f"This case is not verified yet; {what} can only be "
                                     "recorded after the verification.")


def track(view: CaseView, action: Any) -> Track:
    """The track of a proposed action, or a clear refusal naming the proposed ones."""
    found = view.tracks.get(action) if isinstance(action, str) else None
    if found is None:
        proposed = ", ".join(view.tracks) or "none"
        raise errors.UnknownAction(
            f"{action!s:.40} is not one of the actions proposed for this case ({proposed}).")
    return found


def require_consent_undecided(view: CaseView, action: str) -> Track:
    require_verified(view, "consent")
    t = track(view, action)
    if t.consent != PROPOSED:
        raise errors.ActionAlreadyDecided(f"Consent for {action} has already been recorded.")
    return t


def require_withdrawable(view: CaseView, action: str) -> Track:
    require_open(view)
    t = track(view, action)
    if t.consent != GRANTED:
        raise errors.ConsentMissing(f"Consent for {action} is not granted, so it cannot be "
                                    "withdrawn.")
    return t


def require_clearance_pending(view: CaseView, action: str, actor: str) -> Track:
    require_verified(view, "a clearance decision")
    t = track(view, action)
    if actor == view.verifier:
        raise errors.FourEyesViolation("The person who verified the threat cannot also clear it; "
                                       "another ministry liaison must decide.")
    if t.clearance != PENDING or t.consent != GRANTED or t.step == "ended":
        raise errors.ActionAlreadyDecided(f"{action} is not waiting for clearance.")
    return t


def require_sendable(view: CaseView, action: str) -> Track:
    """The rule behind every outgoing message: consent granted and, where needed, cleared."""
    require_open(view)
    t = track(view, action)
    if t.consent != GRANTED:
        raise errors.ConsentMissing(
            f"No message may be sent for {action}: the grantee's consent is {t.consent}.")
    if t.clearance not in (NOT_REQUIRED, GRANTED):
        raise errors.ClearanceMissing(
            f"No message may be sent for {action}: ministry clearance is {t.clearance}.")
    return t


def require_fund_choice_open(view: CaseView) -> Track:
    t = require_sendable(view, "emergency_fund")
    if t.step != "fund_choice":
        raise errors.StageOrderError("The emergency fund(s) for this case have been chosen "
                                     "already.")
    return t


def require_submission_pending(view: CaseView, fund_id: str) -> Track:
    t = require_sendable(view, "emergency_fund")
    if t.funds.get(fund_id) != TO_SUBMIT:
        waiting = ", ".join(f for f, s in t.funds.items() if s == TO_SUBMIT) or "none"
        raise errors.StageOrderError(f"fund: {fund_id!s:.40} is not waiting for an application "
                                     f"through its form (waiting: {waiting}).")
    return t


def require_response_allowed(view: CaseView, action: str) -> Track:
    require_open(view)
    t = track(view, action)
    if t.dispatch != SENT:
        raise errors.StageOrderError(f"No message was sent for {action}, so no response to it "
                                     "can be recorded.")
    return t


def require_information_recipients(view: CaseView, actions: Sequence[str]) -> None:
    """Further information goes only to earlier recipients whose consent is still in force."""
    require_open(view)
    if not isinstance(actions, list | tuple) or not all(isinstance(a, str) for a in actions):
        raise errors.InvalidInput("send_to", "must be a list of actions")
    for action in actions:
        t = track(view, action)
        if t.dispatch != SENT:
            raise errors.StageOrderError(f"send_to: nothing was sent for {action} yet, so there "
                                         "is no earlier recipient to inform.")
        if not t.recipients:
            raise errors.StageOrderError(f"send_to: {action} was applied for through a fund's own "
                                         "form, so there is no earlier recipient to email.")
        require_sendable(view, action)


def require_checkin_allowed(view: CaseView) -> None:
    require_verified(view, "a check-in with the defenders")


def require_later(current: datetime | None, new: Any) -> None:
    if not isinstance(new, datetime) or new.tzinfo is None:
        raise errors.InvalidInput("new_deadline", "must be a date and time with a time zone")
    if current is None or new <= current:
        raise errors.DeadlineNotLater("new_deadline: an extension must move the current deadline "
                                      "later.")


def deadline_of(view: CaseView, action: str) -> datetime | None:
    """The deadline an extension moves: the action's, or the verification's when action is ''."""
    if not action:
        return view.verification_deadline
    return track(view, action).deadline


def text(value: Any, name: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise errors.InvalidInput(name, "must be text")
    if required and not value.strip():
        raise errors.InvalidInput(name, "is required")
    if len(value) > limit:
        raise errors.InvalidInput(name, f"is too long (at most {limit} characters)")
    return value


# ------------------------------------------------------------------------------ consent records
def consent_records(view: CaseView, consents: Any, publicity: Any, at: datetime
                    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Check who consented for each defender, how and when, and each person's naming choice.

    Every defender named in the case needs a record; a person who is disappeared or detained
    incommunicado cannot consent personally, so a relative or lawyer does, with the relationship.
    """
    people = len(view.represented)
    if not isinstance(consents, list) or not consents:
        raise errors.InvalidInput("consents", "name who consented for each defender")
    records: dict[int, dict[str, Any]] = {}
    for i, raw in enumerate(consents):
        where = f"consents[{i}]"
        if not isinstance(raw, Mapping):
            raise errors.InvalidInput(where, "must be an object")
        unknown = sorted(set(raw) - {"defender", "given_by", "relationship", "channel",
                                     "given_at"})
        if unknown:
            raise errors.InvalidInput(f"{where}.{unknown[0]!s:.40}", "is not a known field")
        who = raw.get("defender")
        if not isinstance(who, int) or isinstance(who, bool) or not 0 <= who < people:
            raise errors.InvalidInput(f"{where}.defender",
                                      f"must be a defender number from 0 to {people - 1}")
        if who in records:
            raise errors.InvalidInput(f"{where}.defender", "has a consent record already")
        records[who] = _consent_record(where, raw, who, view.represented[who], at)
    missing = [str(i) for i in range(people) if i not in records]
    if missing:
        raise errors.InvalidInput("consents", "no record for defender(s) " + ", ".join(missing))
    return [records[i] for i in range(people)], _publicity(publicity, people)


def _consent_record(where: str, raw: Mapping[str, Any], who: int, represented: bool,
                    at: datetime) -> dict[str, Any]:
    given_by = raw.get("given_by")
    if given_by not in GIVERS:
        raise errors.InvalidInput(f"{where}.given_by", "must be one of " + ", ".join(GIVERS))
    if represented and given_by == "defender":
        raise errors.InvalidInput(f"{where}.given_by", f"defender {who} is disappeared or held "
                                  "incommunicado: a relative or lawyer consents for them")
    relationship = raw.get("relationship", "")
    text(relationship, f"{where}.relationship", required=given_by != "defender", limit=200)
    channel = raw.get("channel")
    if channel not in CONSENT_CHANNELS:
        raise errors.InvalidInput(f"{where}.channel",
                                  "must be one of " + ", ".join(CONSENT_CHANNELS))
    given_at = raw.get("given_at")
    if isinstance(given_at, str):
        try:
            given_at = datetime.fromisoformat(given_at)
        except ValueError:
            given_at = None
    if not isinstance(given_at, datetime) or given_at.tzinfo is None:
        raise errors.InvalidInput(f"{where}.given_at", "must be a date and time with a time zone")
    if given_at > at:
        raise errors.InvalidInput(f"{where}.given_at", "is in the future")
    return {"defender": who, "given_by": given_by, "relationship": relationship.strip(),
            "channel": channel, "given_at": given_at.isoformat()}


def _publicity(publicity: Any, people: int) -> dict[str, str]:
    """Each person's naming choice; unspecified people are named by initials only."""
    if publicity is None:
        publicity = {}
    if isinstance(publicity, str):
        publicity = {str(i): publicity for i in range(people)}
    if not isinstance(publicity, Mapping):
        raise errors.InvalidInput("publicity", "must map defender numbers to a naming choice")
    choices = {str(i): str(PublicNaming.INITIALS_ONLY) for i in range(people)}
    allowed = ", ".join(PublicNaming)
    for key, value in publicity.items():
        if str(key) not in choices:
            raise errors.InvalidInput(f"publicity.{key!s:.10}", "is not a defender number")
        if value not in set(PublicNaming):
            raise errors.InvalidInput(f"publicity.{key}", f"must be one of {allowed}")
        choices[str(key)] = str(value)
    return choices


def stage_detail(tracks: Iterable[Track]) -> str:
    """How many actions are at each step, e.g. "consent: 1, clearance: 1, follow-up: 2"."""
    return stage_detail_of(t.step for t in tracks)


def stage_detail_of(steps: Iterable[str]) -> str:
    """The same from the tracks' steps alone (the store's track index holds them)."""
    counts: dict[str, int] = {}
    for step in steps:
        counts[step] = counts.get(step, 0) + 1
    return ", ".join(f"{step.replace('_', '-')}: {counts[step]}" for step in
                     ("consent", "clearance", "fund_choice", "dispatch", "follow_up", "ended")
                     if step in counts)


# ------------------------------------------------------------------------------ risk re-assessment
REASON_MAX = 2_000


def reassessment(data: Any) -> dict[str, Any]:
    """A re-assessment of the risk: probability and impact (whole numbers 1-5, as at
    verification) and the reason, required."""
    if not isinstance(data, Mapping):
        raise errors.InvalidInput("reassessment", "must be an object with probability, impact "
                                  "and reason")
    unknown = sorted(set(data) - {"probability", "impact", "reason"})
    if unknown:
        raise errors.InvalidInput(f"reassessment.{unknown[0]!s:.40}", "is not a field of a "
                                  "re-assessment")
    out: dict[str, Any] = {}
    for name in ("probability", "impact"):
        value = data.get(name)
        if value is None:
            raise errors.InvalidInput(name, "is required (a whole number from 1 to 5)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.InvalidInput(name, "must be a whole number")
        if not 1 <= value <= 5:
            raise errors.InvalidInput(name, "must be between 1 and 5")
        out[name] = value
    out["reason"] = text(data.get("reason"), "reason", limit=REASON_MAX).strip()
    return out
