"""What crosses the workflow boundary: typed, plain dataclasses (the data converter handles them).

Everything here travels through the encrypting payload codec; still, nothing here is ever used to
build a workflow id, a search attribute or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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


# ----------------------------------------------------------------------------- human decisions
@dataclass
class VerificationInput:
    actor: str
    verification: dict[str, Any]


@dataclass
class ConsentInput:
    """Grant (with `text` as the grantee's conditions), refuse or withdraw (with `text` as why).

    `public_naming` (grants only): how the defenders may be named in public reports."""

    actor: str
    action: str
    text: str = ""
    public_naming: str = "initials_only"


@dataclass
class ClearanceInput:
    actor: str
    action: str
    granted: bool
    reason: str = ""


@dataclass
class ExtensionInput:
    actor: str
    new_deadline: datetime
    reason: str


@dataclass
class ResponseInput:
    actor: str
    action: str
    summary: str


@dataclass
class InformationInput:
    """New information; `intake_changes` completes or corrects parts of the intake (e.g. the
    fields a held dispatch is waiting for), `send_to_recipients` mails it to earlier recipients."""

    actor: str
    information: str
    send_to_recipients: bool = False
    intake_changes: dict[str, Any] | None = None


@dataclass
class CheckinInput:
    actor: str
    summary: str
    reprisals: bool = False


@dataclass
class CloseInput:
    actor: str
    outcome: str
    summary: str = ""


# --------------------------------------------------------------------------------- activities
@dataclass
class OpenCase:
    reference: str
    intake: dict[str, Any]
    actor: str
    at: datetime
    command_id: str


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
