"""What crosses the workflow boundary: typed, plain dataclasses (the data converter handles them).

Everything here travels through the encrypting payload codec; still, nothing here is ever used to
build a workflow id, a search attribute or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.view import CaseView


@dataclass
class CaseStart:
    """Starts a case workflow. `state` is set only when the workflow continues as new."""

    reference: str
    intake: dict[str, Any]
    actor: str
    checkin_interval_days: int = 14
    state: dict[str, Any] | None = None
    handled_updates: list[str] = field(default_factory=list)
    next_checkin: datetime | None = None
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class TracksStart:
    """Starts a case with per-action tracks. `view` is set only when it continues as new."""

    reference: str
    intake: dict[str, Any]
    actor: str
    checkin_interval_seconds: int = 14 * 24 * 3600
    view: CaseView | None = None
    handled_updates: list[str] = field(default_factory=list)
    next_checkin: datetime | None = None
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""
    # The pending decisions whose takers were told already (keys of workflows.tracks' waiting
    # notices), carried over continue-as-new; None from a run that sent no such notices.
    notified: list[str] | None = None


# ----------------------------------------------------------------------------- human decisions
@dataclass
class VerificationInput:
    actor: str
    verification: dict[str, Any]
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class ConsentInput:
    """Grant (with `text` as the grantee's conditions), refuse or withdraw (with `text` as why).

    `public_naming` (grants only): how the defenders may be named in public reports."""

    actor: str
    action: str
    text: str = ""
    public_naming: str = "initials_only"
    # Cases with per-action tracks: who consented for each defender, how and when
    # ([{defender, given_by, relationship, channel, given_at}]), and each defender's naming
    # choice ({"0": "initials_only", ...}; `public_naming` applies to everyone when absent).
    consents: list[dict[str, Any]] | None = None
    publicity: dict[str, str] | None = None
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class ClearanceInput:
    actor: str
    action: str
    granted: bool
    reason: str = ""
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class ExtensionInput:
    actor: str
    new_deadline: datetime
    reason: str
    action: str = ""  # cases with tracks: the action whose deadline moves ("" = verification)
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class ResponseInput:
    actor: str
    action: str
    summary: str
    recipient: str = ""  # cases with tracks: which recipient of the action answered
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class InformationInput:
    """New information; `intake_changes` completes or corrects parts of the intake (e.g. the
    fields a held dispatch is waiting for), `send_to_recipients` mails it to earlier recipients."""

    actor: str
    information: str
    send_to_recipients: bool = False
    intake_changes: dict[str, Any] | None = None
    # Cases with tracks: the actions whose earlier recipients receive it (each still consented).
    send_to: list[str] | None = None
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""
    # Cases with tracks: a re-assessment of the risk with it ({probability, impact, reason}).
    reassessment: dict[str, Any] | None = None


@dataclass
class FundChoiceInput:
    """The officer's choice among the suggested emergency funds (ids from the directory)."""

    actor: str
    funds: list[str]
    reason: str = ""
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class FundSubmissionInput:
    """Staff applied through a fund's own web form, with the text the system prepared."""

    actor: str
    fund: str
    note: str = ""
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


@dataclass
class CheckinInput:
    actor: str
    summary: str
    reprisals: bool = False
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""
    # Cases with tracks: a re-assessment of the risk with it ({probability, impact, reason}).
    reassessment: dict[str, Any] | None = None


@dataclass
class ReassessInput:
    """Probability and impact again (1-5 each), with the reason (cases with tracks)."""

    actor: str
    probability: int
    impact: int
    reason: str
    assertion: str = ""


@dataclass
class ConfirmPublicInput:
    """A case officer's go-ahead for public actions held after a reprisal, with the reason."""

    actor: str
    reason: str
    assertion: str = ""


@dataclass
class CloseInput:
    actor: str
    outcome: str
    summary: str = ""
    # Signed by the door that signed the person in (desk.signing); checked by the worker.
    assertion: str = ""


# --------------------------------------------------------------------------------- activities
@dataclass
class OpenCase:
    reference: str
    intake: dict[str, Any]
    actor: str
    at: datetime
    command_id: str
    assertion: str = ""


@dataclass
class ChooseFunds:
    reference: str
    funds: list[str]
    reason: str
    actor: str
    at: datetime
    command_id: str
    assertion: str = ""


@dataclass
class TrackEvent:
    """A system step on one track (send, escalate, remind); `action` "" is the case itself."""

    reference: str
    action: str
    at: datetime
    command_id: str = ""
    step: str = ""
    level: int = 0
    reason: str = ""
    kind: str = ""
    deadline: datetime | None = None
    awaited: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WaitingNotice:
    """A decision the case has come to wait for: the staff who may take it are mailed once.

    Codes only: the decision's name in the pending list, the action (and fund) it is for, the roles
    that may take it and the deadline; `not_by` is who may not (four eyes on a clearance)."""

    reference: str
    decision: str
    roles: list[str]
    assignee: str
    at: datetime
    command_id: str
    action: str = ""
    fund: str = ""
    not_by: str | None = None
    deadline: datetime | None = None


@dataclass
class ApplyCommand:
    """One command for the store, by an actor whose roles the activity checks first."""

    reference: str
    command: str
    args: dict[str, Any]
    actor: str
    at: datetime
    command_id: str
    roles: list[str]
    new_deadline: datetime | None = None
    assertion: str = ""


@dataclass
class Dispatch:
    reference: str
    action: str
    at: datetime


@dataclass
class DispatchFailure:
    reference: str
    action: str
    reason: str
    at: datetime


@dataclass
class Escalate:
    reference: str
    stage: str
    level: int
    at: datetime
    command_id: str
    reason: str = "deadline"
    deadline: datetime | None = None  # the deadline that was missed
    awaited: list[dict[str, Any]] = field(default_factory=list)  # pending decisions, codes only


@dataclass
class Remind:
    reference: str
    kind: str  # "follow_up" or "checkin"
    at: datetime
    command_id: str


@dataclass
class FurtherInformation:
    reference: str
    action: str
    information: str
    at: datetime
    command_id: str
