"""The urgent case: an event-sourced aggregate with the secretariat's rules.

Commands are the secretariat's verbs (open, record_verification, grant_consent, ...): each checks its
guards and then triggers one past-tense event, whose method body is the only place state changes
(it is replayed when the case is loaded). Every event carries the actor and the command id.

Eventsourcing stamps events with the wall clock and makes ids, so this class is used only inside
activities, never from workflow code. Time that drives deadlines (`at`) is passed in by the caller,
who takes it from the workflow's clock.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain import errors, rules
from domain.intake import parse_intake, parse_verification
from domain.policies import MAX_ESCALATION_LEVEL, deadline_for, most_restrictive, risk_level
from domain.vocab import Action, Outcome, PublicNaming, Stage, Verdict

CASE_NAMESPACE = uuid5(NAMESPACE_URL, "urn:urgent-appeals:case")

# Per action: consent is proposed | granted | refused | withdrawn; clearance is not_required |
# pending | granted | denied; dispatch is pending | sent | failed.
NOT_REQUIRED, PENDING = "not_required", "pending"
GRANTED, REFUSED, WITHDRAWN, DENIED = "granted", "refused", "withdrawn", "denied"
PROPOSED, SENT, FAILED = "proposed", "sent", "failed"
# The longest reason a head may give for revealing confidential values.
REVEAL_REASON_MAX = 1_000
# Parts of the intake that further information may complete or correct (not the country, the
# actions or the urgency: those decide who is asked and how fast, so they are fixed at intake).
SUPPLEMENTABLE = frozenset({"organisation", "defenders", "incident", "domestic_steps",
                            "confidential_information", "eu_grant", "fund_request",
                            "rights_affected", "threat_types"})


def case_id(reference: str) -> UUID:
    """Ids derive from the reference so that a retried activity finds the same aggregate."""
    return uuid5(CASE_NAMESPACE, reference)


def copied(aggregate: Any) -> Any:
    """A deep copy of an aggregate for each read from the store's aggregate cache. An aggregate is
    a tree of plain data (dicts, lists, dataclasses, datetimes), which a pickle round trip copies
    about four times faster than copy.deepcopy; anything that does not pickle is deep-copied."""
    try:
        return pickle.loads(pickle.dumps(aggregate, protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError):
        state = copy.copy(aggregate)
        state.__dict__ = copy.deepcopy(aggregate.__dict__)
        return state


class Case(Aggregate):
    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copied(self)

    # ----------------------------------------------------------------------------------- opening
    @event("Opened")
    def __init__(
        self,
        reference: str,
        intake: dict[str, Any],
        clearance_required: list[str],
        deadline_table: dict[str, dict[str, int]],
        at: datetime,
        actor: str,
        command_id: str,
    ) -> None:
        self.reference = reference
        self.intake = intake
        self.deadline_table = deadline_table
        self.assignee = actor
        self.opened_by = actor
        self.stage = Stage.VERIFICATION
        self.urgency: str = intake["urgency"]
        self.risk_level: str | None = None
        self.verifier: str | None = None
        self.verification: dict[str, Any] | None = None
        self.escalation_level = 0
        self.deadline: datetime | None = deadline_for(deadline_table, Stage.VERIFICATION,
                                                      self.urgency, at)
        self.actions: dict[str, dict[str, Any]] = {
            a: {
                "consent": PROPOSED,
                "conditions": "",
                "public_naming": None,
                "clearance": PENDING if a in clearance_required else NOT_REQUIRED,
                "dispatch": PENDING,
                "message_ids": [],
                "recipients": [],
                "failures": 0,
            }
            for a in intake["requested_actions"]
        }
        self.responses: list[dict[str, Any]] = []
        self.further_information: list[dict[str, Any]] = []
        self.checkins: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        # Action -> intake fields its message needs and the case lacks (see domain.readiness).
        self.held: dict[str, list[str]] = {}
        self.outcome: str | None = None

    @staticmethod
    def create_id(reference: str) -> UUID:
        return case_id(reference)

    # ------------------------------------------------------------------------------ verification
    def record_verification(self, verification: dict[str, Any], at: datetime, actor: str,
                            command_id: str) -> None:
        self._require_stage(Stage.VERIFICATION, "a verification")
        # Whoever calls, the analysis is checked and normalised before it is recorded.
        verification = parse_verification(verification)
        self._verification_recorded(verification=verification, at=at, actor=actor,
                                    command_id=command_id)
        if verification["verdict"] == Verdict.UNVERIFIED:
            self.close(Outcome.UNVERIFIED, "The threat could not be verified.", at, actor,
                       command_id)

    @event("VerificationRecorded")
    def _verification_recorded(self, verification: dict[str, Any], at: datetime, actor: str,
                               command_id: str) -> None:
        self.verification = verification
        if verification["verdict"] == Verdict.VERIFIED:
            self.verifier = actor
            self.risk_level = risk_level(verification["probability"], verification["impact"]).value
            self._enter(Stage.CONSENT, at)

    # ----------------------------------------------------------------------------------- consent
    def grant_consent(self, action: str, conditions: str, at: datetime, actor: str,
                      command_id: str, public_naming: str = PublicNaming.INITIALS_ONLY) -> None:
        """Consent for one action, with the grantee's conditions in words and how the defenders
        may be named in public reports (initials only unless the grantee says otherwise)."""
        self._require_stage(Stage.CONSENT, "consent")
        self._require_undecided(action)
        if public_naming not in set(PublicNaming):
            raise errors.InvalidInput("public_naming", "must be one of "
                                      + ", ".join(PublicNaming))
        self._consent_granted(action=action, conditions=conditions,
                              public_naming=str(public_naming), at=at, actor=actor,
                              command_id=command_id)

    def refuse_consent(self, action: str, reason: str, at: datetime, actor: str,
                       command_id: str) -> None:
        self._require_stage(Stage.CONSENT, "consent")
        self._require_undecided(action)
        self._consent_refused(action=action, reason=reason, at=at, actor=actor,
                              command_id=command_id)

    def withdraw_consent(self, action: str, reason: str, at: datetime, actor: str,
                         command_id: str) -> None:
        self._require_open()
        state = self._action(action)
        if state["dispatch"] == SENT:
            raise errors.AlreadyDispatched(
                f"The message for {action} has already been sent; consent can no longer be "
                "withdrawn for it. Record the grantee's wish as further information."
            )
        if state["consent"] != GRANTED:
            raise errors.ConsentMissing(f"Consent for {action} is not granted, so it cannot be "
                                        "withdrawn.")
        self._consent_withdrawn(action=action, reason=reason, at=at, actor=actor,
                                command_id=command_id)

    @event("ConsentGranted")
    def _consent_granted(self, action: str, conditions: str, public_naming: str, at: datetime,
                         actor: str, command_id: str) -> None:
        self.actions[action].update(consent=GRANTED, conditions=conditions,
                                    public_naming=public_naming)
        self._advance(at)

    @event("ConsentRefused")
    def _consent_refused(self, action: str, reason: str, at: datetime, actor: str,
                         command_id: str) -> None:
        self.actions[action]["consent"] = REFUSED
        self._advance(at)

    @event("ConsentWithdrawn")
    def _consent_withdrawn(self, action: str, reason: str, at: datetime, actor: str,
                           command_id: str) -> None:
        self.actions[action]["consent"] = WITHDRAWN
        self._advance(at)

    # --------------------------------------------------------------------------------- clearance
    def record_clearance(self, action: str, granted: bool, reason: str, at: datetime, actor: str,
                         command_id: str) -> None:
        self._require_stage(Stage.CLEARANCE, "a clearance decision")
        state = self._action(action)
        if actor == self.verifier:
            raise errors.FourEyesViolation(
                "The person who verified the threat cannot also clear it; another ministry "
                "liaison must decide."
            )
        if state["clearance"] != PENDING or state["consent"] != GRANTED:
            raise errors.ActionAlreadyDecided(f"{action} is not waiting for clearance.")
        if granted:
            self._clearance_granted(action=action, reason=reason, at=at, actor=actor,
                                    command_id=command_id)
        else:
            self._clearance_denied(action=action, reason=reason, at=at, actor=actor,
                                   command_id=command_id)

    @event("ClearanceGranted")
    def _clearance_granted(self, action: str, reason: str, at: datetime, actor: str,
                           command_id: str) -> None:
        self.actions[action]["clearance"] = GRANTED
        self._advance(at)

    @event("ClearanceDenied")
    def _clearance_denied(self, action: str, reason: str, at: datetime, actor: str,
                          command_id: str) -> None:
        self.actions[action]["clearance"] = DENIED
        self._advance(at)

    # ---------------------------------------------------------------------------------- dispatch
    def record_dispatch(self, action: str, kind: str, recipients: list[str], message_id: str,
                        at: datetime, actor: str, command_id: str) -> None:
        self._require_open()
        if self.stage not in (Stage.DISPATCH, Stage.FOLLOW_UP):
            raise errors.StageOrderError(
                f"This case is at the {self.stage} stage; messages go out only after consent "
                "and clearance."
            )
        self.require_sendable(action)
        self._message_dispatched(action=action, kind=kind, recipients=recipients,
                                 message_id=message_id, at=at, actor=actor,
                                 command_id=command_id)

    def record_dispatch_failure(self, action: str, reason: str, at: datetime, actor: str,
                                command_id: str) -> None:
        self._require_open()
        self.require_sendable(action)
        self._dispatch_failed(action=action, reason=reason, at=at, actor=actor,
                              command_id=command_id)

    def require_sendable(self, action: str) -> None:
        """The rule behind every outgoing message: consent granted and, where needed, cleared."""
        state = self._action(action)
        if state["consent"] != GRANTED:
            raise errors.ConsentMissing(
                f"No message may be sent for {action}: the grantee's consent is {state['consent']}."
            )
        if state["clearance"] not in (NOT_REQUIRED, GRANTED):
            raise errors.ClearanceMissing(
                f"No message may be sent for {action}: ministry clearance is {state['clearance']}."
            )

    @event("MessageDispatched")
    def _message_dispatched(self, action: str, kind: str, recipients: list[str],
                            message_id: str, at: datetime, actor: str, command_id: str) -> None:
        state = self.actions[action]
        state["dispatch"] = SENT
        state["message_ids"].append(message_id)
        state["recipients"] = sorted(set(state["recipients"]) | set(recipients))
        self._advance(at)

    @event("DispatchFailed")
    def _dispatch_failed(self, action: str, reason: str, at: datetime, actor: str,
                         command_id: str) -> None:
        state = self.actions[action]
        if state["dispatch"] != SENT:
            state["dispatch"] = FAILED
        state["failures"] += 1
        self._advance(at)

    # -------------------------------------------------------------------------------- deadlines
    def escalate(self, stage: str, level: int, notified: list[str], at: datetime, actor: str,
                 command_id: str) -> None:
        self._require_open()
        if stage != self.stage or level != self.escalation_level + 1:
            raise errors.EscalationOutOfOrder(
                f"Escalation to level {level} of the {stage} stage does not follow level "
                f"{self.escalation_level} of the {self.stage} stage."
            )
        self._deadline_escalated(stage=stage, level=min(level, MAX_ESCALATION_LEVEL + 99),
                                 notified=notified, at=at, actor=actor, command_id=command_id)

    @event("DeadlineEscalated")
    def _deadline_escalated(self, stage: str, level: int, notified: list[str], at: datetime,
                            actor: str, command_id: str) -> None:
        self.escalation_level = level
        self.deadline = deadline_for(self.deadline_table, self.stage, self.clock_level, at)

    def extend_deadline(self, new_deadline: datetime, reason: str, at: datetime, actor: str,
                        command_id: str) -> None:
        self._require_open()
        if self.deadline is None or new_deadline <= self.deadline:
            raise errors.DeadlineNotLater("An extension must move the current deadline later.")
        self._deadline_extended(new_deadline=new_deadline, reason=reason, at=at, actor=actor,
                                command_id=command_id)

    @event("DeadlineExtended")
    def _deadline_extended(self, new_deadline: datetime, reason: str, at: datetime, actor: str,
                           command_id: str) -> None:
        self.deadline = new_deadline

    # -------------------------------------------------------------------------------- follow-up
    def record_response(self, action: str, summary: str, at: datetime, actor: str,
                        command_id: str) -> None:
        self._require_open()
        if self._action(action)["dispatch"] != SENT:
            raise errors.StageOrderError(f"No message was sent for {action}, so no response to it "
                                         "can be recorded.")
        self._response_recorded(action=action, summary=summary, at=at, actor=actor,
                                command_id=command_id)

    @event("ResponseRecorded")
    def _response_recorded(self, action: str, summary: str, at: datetime, actor: str,
                           command_id: str) -> None:
        self.responses.append({"action": action, "summary": summary, "at": at, "by": actor})

    def add_further_information(self, information: str, at: datetime, actor: str,
                                command_id: str, intake_changes: Mapping[str, Any] | None = None
                                ) -> None:
        """New information in words and, optionally, corrections or completions of the intake
        (e.g. the domestic steps a held dispatch was waiting for). The changed intake is
        validated as a whole, as at intake."""
        self._require_open()
        intake = None
        if intake_changes:
            unknown = sorted(set(intake_changes) - SUPPLEMENTABLE)
            if unknown:
                raise errors.InvalidInput(f"intake_changes.{unknown[0]}",
                                          "cannot be changed after intake")
            merged = dict(self.intake)
            for key, value in intake_changes.items():
                old = merged.get(key)
                merged[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) \
                    else value
            intake = parse_intake(merged, today=at.date())
        self._further_information_added(information=information, intake=intake, at=at,
                                        actor=actor, command_id=command_id)

    @event("FurtherInformationAdded")
    def _further_information_added(self, information: str, intake: dict[str, Any] | None,
                                   at: datetime, actor: str, command_id: str) -> None:
        self.further_information.append({"information": information, "at": at, "by": actor})
        if intake is not None:
            self.intake = intake
            self.held = {}  # held dispatches are tried again with the completed intake

    def hold_dispatch(self, action: str, missing: list[str], at: datetime, actor: str,
                      command_id: str) -> None:
        """A message cannot go because fields its channel requires are missing."""
        self._require_open()
        self.require_sendable(action)
        if not missing:
            raise errors.InvalidInput("missing", "names no missing field")
        self._dispatch_held(action=action, missing=sorted(missing), at=at, actor=actor,
                            command_id=command_id)

    @event("DispatchHeld")
    def _dispatch_held(self, action: str, missing: list[str], at: datetime, actor: str,
                       command_id: str) -> None:
        self.held[action] = missing

    def record_checkin(self, summary: str, reprisals: bool, at: datetime, actor: str,
                       command_id: str) -> None:
        self._require_open()
        if self.stage not in (Stage.DISPATCH, Stage.FOLLOW_UP):
            raise errors.StageOrderError("Defender check-ins are recorded during follow-up.")
        self._checkin_recorded(summary=summary, reprisals=reprisals, at=at, actor=actor,
                               command_id=command_id)

    @event("DefenderCheckInRecorded")
    def _checkin_recorded(self, summary: str, reprisals: bool, at: datetime, actor: str,
                          command_id: str) -> None:
        self.checkins.append({"summary": summary, "reprisals": reprisals, "at": at, "by": actor})
        if self.stage == Stage.FOLLOW_UP:
            self.deadline = deadline_for(self.deadline_table, Stage.FOLLOW_UP, self.clock_level, at)

    def record_reminder(self, recipients: list[str], message_id: str, at: datetime, actor: str,
                        command_id: str, kind: str = "follow_up") -> None:
        """A reminder sent to staff: `follow_up` (external answers due) restarts the follow-up
        clock; `checkin` (time to ask the defender about reprisals) does not."""
        self._require_open()
        if kind not in ("follow_up", "checkin"):
            raise errors.InvalidInput("kind", "must be follow_up or checkin")
        self._reminder_sent(recipients=recipients, message_id=message_id, kind=kind, at=at,
                            actor=actor, command_id=command_id)

    @event("ReminderSent")
    def _reminder_sent(self, recipients: list[str], message_id: str, kind: str, at: datetime,
                       actor: str, command_id: str) -> None:
        if self.stage == Stage.FOLLOW_UP and kind == "follow_up":
            self.deadline = deadline_for(self.deadline_table, Stage.FOLLOW_UP, self.clock_level, at)

    def raise_warning(self, warning: str, at: datetime, actor: str, command_id: str) -> None:
        self._require_open()
        self._warning_raised(warning=warning, at=at, actor=actor, command_id=command_id)

    @event("StaffWarningRaised")
    def _warning_raised(self, warning: str, at: datetime, actor: str, command_id: str) -> None:
        self.warnings.append(warning)

    # ------------------------------------------------------------------------------ need to know
    def reveal_confidential(self, reason: str, at: datetime, actor: str, command_id: str) -> None:
        """A head was shown the case's confidential values (desk.redaction) for one view, for this
        reason. The event carries the reason only, never what was shown; it changes nothing else
        and may be recorded on a closed case (audits come later). The door checks the role."""
        reason = rules.text(reason, "reason", limit=REVEAL_REASON_MAX).strip()
        self._confidential_revealed(reason=reason, at=at, actor=actor, command_id=command_id)

    @event("ConfidentialRevealed")
    def _confidential_revealed(self, reason: str, at: datetime, actor: str,
                               command_id: str) -> None:
        pass

    # ------------------------------------------------------------------------------------ close
    def close(self, outcome: str, summary: str, at: datetime, actor: str,
              command_id: str) -> None:
        self._require_open()
        self._closed(outcome=Outcome(outcome).value, summary=summary, at=at, actor=actor,
                     command_id=command_id)

    @event("Closed")
    def _closed(self, outcome: str, summary: str, at: datetime, actor: str,
                command_id: str) -> None:
        self.outcome = outcome
        self.stage = Stage.CLOSED
        self.deadline = None

    # ---------------------------------------------------------------------------------- reading
    @property
    def clock_level(self) -> str:
        """Deadlines follow urgency before verification and the risk level after it."""
        return self.risk_level or self.urgency

    @property
    def is_closed(self) -> bool:
        return self.stage == Stage.CLOSED

    # Read by the message composer (the same surface as domain.tracked.TrackedCase): cases opened
    # before per-person consent recorded one naming choice per action; the person's profile is the
    # most restrictive of those, so that no message contradicts another.
    def publicity_of(self, index: int) -> str:
        return most_restrictive(s["public_naming"] for s in self.actions.values()
                                if s["consent"] == GRANTED)

    def public_action_advised(self) -> bool:
        return bool((self.verification or {}).get("public_action_advised", True))

    def consent_givers(self, action: str) -> list[dict[str, Any]]:
        return []

    def pending_clearance(self) -> list[str]:
        return [a for a, s in self.actions.items()
                if s["consent"] == GRANTED and s["clearance"] == PENDING]

    def sendable_unsent(self) -> list[str]:
        return [a for a, s in self.actions.items()
                if s["consent"] == GRANTED and s["clearance"] in (NOT_REQUIRED, GRANTED)
                and s["dispatch"] == PENDING]

    def summary(self) -> dict[str, Any]:
        """A plain snapshot for callers (workflow, command line, web): no personal data."""
        return {
            "reference": self.reference,
            "version": self.version,
            "stage": str(self.stage),
            "urgency": self.urgency,
            "risk_level": self.risk_level,
            "assignee": self.assignee,
            "verifier": self.verifier,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "escalation_level": self.escalation_level,
            # Codes only: the result is kept unencrypted beside the events (store.schema.commands).
            "actions": {a: {k: v for k, v in s.items() if k != "conditions"}
                        for a, s in self.actions.items()},
            "outcome": self.outcome,
            "country": self.intake["country"],
            "held": {a: list(m) for a, m in self.held.items()},
        }

    # ----------------------------------------------------------------------------------- guards
    def _require_open(self) -> None:
        if self.is_closed:
            raise errors.CaseClosed("This case is closed; it can be read but not changed.")

    def _require_stage(self, stage: Stage, what: str) -> None:
        self._require_open()
        if self.stage != stage:
            raise errors.StageOrderError(
                f"This case is at the {self.stage} stage; {what} can only be recorded at the "
                f"{stage} stage."
            )

    def _action(self, action: str) -> dict[str, Any]:
        try:
            return self.actions[Action(action)]
        except (ValueError, KeyError):
            proposed = ", ".join(self.actions) or "none"
            raise errors.UnknownAction(
                f"{action!s:.40} is not one of the actions proposed for this case ({proposed})."
            ) from None

    def _require_undecided(self, action: str) -> None:
        if self._action(action)["consent"] != PROPOSED:
            raise errors.ActionAlreadyDecided(f"Consent for {action} has already been recorded.")

    # ------------------------------------------------------------------------------- transitions
    def _advance(self, at: datetime) -> None:
        """Move on once the current stage has nothing left to decide (called from event bodies)."""
        acts = self.actions.values()
        if self.stage == Stage.CONSENT and all(s["consent"] != PROPOSED for s in acts):
            self._enter(Stage.CLEARANCE, at)
        if self.stage == Stage.CLEARANCE and not self.pending_clearance():
            self._enter(Stage.DISPATCH, at)
        if self.stage == Stage.DISPATCH and not self.sendable_unsent():
            self._enter(Stage.FOLLOW_UP, at)

    def _enter(self, stage: Stage, at: datetime) -> None:
        self.stage = stage
        self.escalation_level = 0
        self.deadline = deadline_for(self.deadline_table, stage, self.clock_level, at)


def new_case(reference: str, intake: Mapping[str, Any], clearance_required: list[str],
             deadline_table: dict[str, dict[str, int]], at: datetime, actor: str,
             command_id: str) -> Case:
    return Case(reference=reference, intake=dict(intake), clearance_required=clearance_required,
                deadline_table=deadline_table, at=at, actor=actor, command_id=command_id)
