"""The typed view of a case that the aggregate, the workflow, the activities and both doors share.

Codes only: no names, no incident text. The view is what the store keeps unencrypted beside the
events (the command results and the case index), what Temporal carries between activities and
the workflow, and what the status query returns. Standard library only, so that workflow code can
import it inside Temporal's sandbox.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

# Consent: proposed | granted | refused | withdrawn.
PROPOSED, GRANTED, REFUSED, WITHDRAWN = "proposed", "granted", "refused", "withdrawn"
# Clearance: not_required | pending | granted | denied.
NOT_REQUIRED, PENDING, DENIED = "not_required", "pending", "denied"
# Dispatch: pending | held | sent | failed.
HELD, SENT, FAILED = "held", "sent", "failed"
# Per fund chosen for an emergency-fund track: to_send (by email) | to_submit (through the fund's
# own web form, by staff) | sent | submitted.
TO_SEND, TO_SUBMIT, SUBMITTED = "to_send", "to_submit", "submitted"

# The steps of one action's track, in order. `ended`: refused, withdrawn before sending, denied,
# failed for good, or the case closed.
STEPS = ("consent", "clearance", "fund_choice", "dispatch", "follow_up", "ended")
# Steps whose missed deadline escalates to staff; in follow-up a deadline reminds the officer.
ESCALATING_STEPS = ("verification", "consent", "clearance", "fund_choice", "dispatch")


@dataclass
class Delivery:
    """How sending is going, so that staff see an outage before the deadline passes."""

    attempts: int = 0
    retrying_since: datetime | None = None
    last_error: str = ""  # the kind of error only (e.g. TransientMailError), never its text


@dataclass
class Track:
    """One proposed action's own way from consent to follow-up."""

    action: str
    step: str = "consent"
    consent: str = PROPOSED
    clearance: str = NOT_REQUIRED
    dispatch: str = "pending"
    deadline: datetime | None = None
    escalation_level: int = 0
    held: list[str] = field(default_factory=list)  # intake fields the message still lacks
    message_ids: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    funds: dict[str, str] = field(default_factory=dict)  # fund id -> TO_SEND | TO_SUBMIT | ...
    failures: int = 0
    ended: str = ""  # why the track ended
    delivery: Delivery = field(default_factory=Delivery)
    # After a reprisal: the message waits until a case officer confirms public actions may go on.
    public_hold: bool = False

    @property
    def sendable(self) -> bool:
        """Consented, cleared where needed, not ended: a message for it may go now."""
        return (self.consent == GRANTED and self.clearance in (NOT_REQUIRED, GRANTED)
                and self.step != "ended")

    @property
    def ready_to_send(self) -> bool:
        """The system has something to send for this track now (not held, not sent)."""
        if self.step != "dispatch" or not self.sendable or self.held or self.public_hold:
            return False
        if self.funds:
            return any(state == TO_SEND for state in self.funds.values())
        return self.dispatch == "pending"


@dataclass
class CaseView:
    reference: str
    version: int
    stage: str  # verification | consent | clearance | dispatch | follow_up | closed (earliest track)
    stage_detail: str  # e.g. "consent: 1, clearance: 1, follow-up: 2"
    urgency: str
    risk_level: str | None
    assignee: str
    verifier: str | None
    deadline: datetime | None  # the soonest deadline over the case and its tracks
    escalation_level: int  # the highest level over the case and its tracks
    country: str
    tracks: dict[str, Track] = field(default_factory=dict)
    verification_deadline: datetime | None = None
    verification_escalation: int = 0
    public_action_advised: bool | None = None
    # Per defender, in intake order: True where the person cannot consent personally
    # (disappeared, or detained incommunicado): a relative or lawyer consents for them.
    represented: list[bool] = field(default_factory=list)
    outcome: str | None = None
    warnings: int = 0
    tracked: bool = True  # False for cases opened before per-action tracks
    # Risk that moves (domain.tracked): public actions held after a reprisal, the heads still to
    # be alerted of one, and how many reprisals were reported.
    public_hold: bool = False
    reprisal_alert_pending: bool = False
    reprisals: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseView:
        raw = dict(data)
        raw["tracks"] = {a: _track(t) for a, t in raw.get("tracks", {}).items()}
        for key in ("deadline", "verification_deadline"):
            raw[key] = _when(raw.get(key))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _track(data: dict[str, Any]) -> Track:
    raw = dict(data)
    raw["deadline"] = _when(raw.get("deadline"))
    d = dict(raw.get("delivery") or {})
    d["retrying_since"] = _when(d.get("retrying_since"))
    raw["delivery"] = Delivery(**d)
    known = {f.name for f in fields(Track)}
    return Track(**{k: v for k, v in raw.items() if k in known})


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def waiting_for(track: dict[str, Any]) -> str:
    """The decision a track (as JSON) waits for, by name (domain.decisions), or ""."""
    step = track.get("step")
    if step == "consent":
        return "grant_consent"
    if step == "clearance":
        return "record_clearance"
    if step == "fund_choice":
        return "choose_funds"
    if step == "dispatch" and track.get("held"):
        return "add_further_information"
    if step == "dispatch" and track.get("public_hold"):
        return "confirm_public_actions"
    if step == "dispatch" and TO_SUBMIT in (track.get("funds") or {}).values():
        return "record_fund_submission"
    if step == "follow_up":
        return "record_response"
    return ""


def shown_track(track: dict[str, Any], *, closed: bool = False) -> dict[str, Any]:
    """What a door shows for one track (as JSON, of either kind of case): its clearance and
    dispatch in words, and the fields its message is held for.

    An action whose consent was refused or withdrawn before sending is never "pending": its
    clearance is not needed any more and its message is "not sent: consent refused" (or
    withdrawn). A held message is shown as held only while it can still go: never on a closed
    case, an ended track, or an action without consent.
    """
    consent = str(track.get("consent") or "")
    clearance = str(track.get("clearance") or "")
    dispatch = str(track.get("dispatch") or "")
    stopped = consent in (REFUSED, WITHDRAWN) and dispatch != SENT
    if stopped:
        why = f"consent {consent}"
        if clearance == PENDING:
            clearance = f"not needed: {why}"
        dispatch = f"not sent: {why}"
    ended = track.get("step") == "ended" if "step" in track else False
    held = [] if (stopped or closed or ended or consent != GRANTED) else list(
        track.get("held") or [])
    if dispatch == HELD and not held and not stopped:
        dispatch = "not sent" if (closed or ended) else dispatch
    if track.get("public_hold") and not (stopped or closed or ended) and dispatch != SENT:
        dispatch = "held after a reprisal: waits for a case officer's go-ahead"
    return {"clearance": clearance, "dispatch": dispatch, "held": held, "stopped": stopped}
