"""The urgent case with one track per proposed action (the model for every case opened now).

After the verification (one gate for the whole case) each proposed action moves on its own:
consent → clearance where it needs one → fund choice (emergency funds) → dispatch → follow-up.
An action goes out as soon as its own conditions hold; another action's pending decision never
holds it back. Each track has its own deadline and escalation level.

Cases opened before this model are `domain.case.Case` and keep their own events and rules; the
two aggregates share ids (derived from the reference), vocabularies and the typed view.
Events are past tense; their bodies are the only place state changes. Rules live in domain.rules.
Eventsourcing stamps events with the wall clock, so this class is used only inside activities.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import errors, rules
from domain.case import REVEAL_REASON_MAX, SUPPLEMENTABLE, case_id, copied
from domain.intake import (
    cannot_consent_personally,
    merge_changes,
    parse_intake,
    parse_verification,
)
from domain.policies import deadline_for, most_restrictive, risk_level
from domain.view import (
    DENIED,
    FAILED,
    GRANTED,
    HELD,
    NOT_REQUIRED,
    PENDING,
    REFUSED,
    SENT,
    SUBMITTED,
    TO_SEND,
    TO_SUBMIT,
    WITHDRAWN,
    CaseView,
    Track,
)
from domain.vocab import Action, Outcome, Verdict

COMMENT_MAX = 5_000  # characters of one internal comment
# Risk levels from lowest to highest (a reprisal moves one up, at most to critical).
LEVEL_ORDER = ("low", "medium", "high", "critical")
# Channels that may act in public (statements, public reports): after a reprisal their messages
# wait until a case officer confirms. Emergency fund applications are confidential and go on.
PUBLIC_CHANNELS = frozenset({Action.RAPPORTEUR.value, Action.MFA.value, Action.EU_DELEGATION.value})
# The track steps at which the case waits for a person's decision: their deadlines follow the risk.
AWAITED_STEPS = frozenset({"consent", "clearance", "fund_choice"})


def raised(level: str) -> str:
    """One risk level up (critical stays critical)."""
    i = LEVEL_ORDER.index(level) if level in LEVEL_ORDER else 0
    return LEVEL_ORDER[min(i + 1, len(LEVEL_ORDER) - 1)]


class TrackedCase(Aggregate):
    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copied(self)

    # ----------------------------------------------------------------------------------- opening
    @event("Opened")
    def __init__(self, reference: str, intake: dict[str, Any], clearance_required: list[str],
                 deadline_table: dict[str, dict[str, int]], at: datetime, actor: str,
                 command_id: str) -> None:
        self.reference = reference
        self.intake = intake
        self.deadline_table = deadline_table
        self.assignee = actor
        self.urgency: str = intake["urgency"]
        self.risk_level: str | None = None
        self.verifier: str | None = None
        self.verification: dict[str, Any] | None = None
        self.verification_deadline = deadline_for(deadline_table, "verification", self.urgency, at)
        self.verification_escalation = 0
        self.tracks: dict[str, Track] = {
            a: Track(action=a, clearance=PENDING if a in clearance_required else NOT_REQUIRED)
            for a in intake["requested_actions"]
        }
        self.conditions: dict[str, str] = {}
        self.consents: dict[str, list[dict[str, Any]]] = {}
        self.naming: dict[str, list[str]] = {}  # defender number -> every choice recorded
        self.responses: list[dict[str, Any]] = []
        self.further_information: list[dict[str, Any]] = []
        self.checkins: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.outcome: str | None = None
        # Risk that moves (re-assessments, reprisals): each re-assessment, the reprisals reported,
        # whether messages to channels that may act in public wait for an officer's go-ahead, and
        # whether the heads are still to be alerted of a reprisal.
        self.reassessments: list[dict[str, Any]] = []
        self.reprisals = 0
        self.last_reprisal: dict[str, Any] | None = None
        self.public_hold = False
        self.reprisal_alert_pending = False

    @staticmethod
    def create_id(reference: str) -> UUID:
        return case_id(reference)

    # ------------------------------------------------------------------------------ verification
    def record_verification(self, verification: dict[str, Any], at: datetime, actor: str,
                            command_id: str) -> None:
        rules.require_verification_stage(self.view())
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
            self.verification_deadline = None
            for t in self.tracks.values():
                self._enter(t, "consent", at)

    # ----------------------------------------------------------------------------------- consent
    def grant_consent(self, action: str, at: datetime, actor: str, command_id: str,
                      conditions: str = "", consents: Any = None, publicity: Any = None,
                      public_naming: str | None = None) -> None:
        """Consent for one action: who gave it for each defender, how and when, the grantee's
        conditions, and each person's naming choice (`public_naming` applies one to all)."""
        view = self.view()
        rules.require_consent_undecided(view, action)
        rules.text(conditions, "conditions", required=False)
        records, naming = rules.consent_records(view, consents,
                                                publicity if publicity is not None
                                                else public_naming, at)
        self._consent_granted(action=action, conditions=conditions, consents=records,
                              publicity=naming, at=at, actor=actor, command_id=command_id)

    def refuse_consent(self, action: str, at: datetime, actor: str, command_id: str,
                       reason: str = "") -> None:
        rules.require_consent_undecided(self.view(), action)
        rules.text(reason, "reason", required=False)
        self._consent_refused(action=action, reason=reason, at=at, actor=actor,
                              command_id=command_id)

    def withdraw_consent(self, action: str, at: datetime, actor: str, command_id: str,
                         reason: str = "") -> None:
        """Withdrawn before sending: nothing goes out. After sending: no further information."""
        rules.require_withdrawable(self.view(), action)
        rules.text(reason, "reason", required=False)
        self._consent_withdrawn(action=action, reason=reason, at=at, actor=actor,
                                command_id=command_id)

    @event("ConsentGranted")
    def _consent_granted(self, action: str, conditions: str, consents: list[dict[str, Any]],
                         publicity: dict[str, str], at: datetime, actor: str,
                         command_id: str) -> None:
        t = self.tracks[action]
        t.consent = GRANTED
        self.conditions[action] = conditions
        self.consents[action] = consents
        for person, choice in publicity.items():
            self.naming.setdefault(person, []).append(choice)
        self._advance(t, at)

    @event("ConsentRefused")
    def _consent_refused(self, action: str, reason: str, at: datetime, actor: str,
                         command_id: str) -> None:
        t = self.tracks[action]
        t.consent = REFUSED
        self._end(t, "refused")

    @event("ConsentWithdrawn")
    def _consent_withdrawn(self, action: str, reason: str, at: datetime, actor: str,
                           command_id: str) -> None:
        t = self.tracks[action]
        t.consent = WITHDRAWN
        if t.dispatch != SENT:
            self._end(t, "withdrawn")

    # --------------------------------------------------------------------------------- clearance
    def record_clearance(self, action: str, granted: bool, at: datetime, actor: str,
                         command_id: str, reason: str = "") -> None:
        rules.require_clearance_pending(self.view(), action, actor)
        if not isinstance(granted, bool):
            raise errors.InvalidInput("granted", "must be true or false")
        rules.text(reason, "reason", required=False)
        decided = self._clearance_granted if granted else self._clearance_denied
        decided(action=action, reason=reason, at=at, actor=actor, command_id=command_id)

    @event("ClearanceGranted")
    def _clearance_granted(self, action: str, reason: str, at: datetime, actor: str,
                           command_id: str) -> None:
        t = self.tracks[action]
        t.clearance = GRANTED
        self._advance(t, at)

    @event("ClearanceDenied")
    def _clearance_denied(self, action: str, reason: str, at: datetime, actor: str,
                          command_id: str) -> None:
        t = self.tracks[action]
        t.clearance = DENIED
        self._end(t, "denied")

    # ----------------------------------------------------------------------------- fund choice
    def choose_funds(self, funds: dict[str, str], reason: str, at: datetime, actor: str,
                     command_id: str) -> None:
        """The officer's choice among the suggested funds (checked against the directory by the
        caller, who knows it): fund id -> how it is applied to (by email or through its form)."""
        rules.require_fund_choice_open(self.view())
        if not funds or not all(v in (TO_SEND, TO_SUBMIT) for v in funds.values()):
            raise errors.InvalidInput("funds", "choose at least one fund")
        rules.text(reason, "reason", required=False)
        self._funds_chosen(funds=dict(funds), reason=reason, at=at, actor=actor,
                           command_id=command_id)

    @event("FundsChosen")
    def _funds_chosen(self, funds: dict[str, str], reason: str, at: datetime, actor: str,
                      command_id: str) -> None:
        t = self.tracks[Action.EMERGENCY_FUND]
        t.funds = dict(funds)
        self._enter(t, "dispatch", at)

    def record_fund_submission(self, fund: str, note: str, at: datetime, actor: str,
                               command_id: str) -> None:
        """Staff applied through the fund's own web form (the system prepared the text)."""
        rules.require_submission_pending(self.view(), fund)
        rules.text(note, "note", required=False)
        self._fund_application_submitted(fund=fund, note=note, at=at, actor=actor,
                                         command_id=command_id)

    @event("FundApplicationSubmitted")
    def _fund_application_submitted(self, fund: str, note: str, at: datetime, actor: str,
                                    command_id: str) -> None:
        t = self.tracks[Action.EMERGENCY_FUND]
        t.funds[fund] = SUBMITTED
        self._after_delivery(t, at)

    # ---------------------------------------------------------------------------------- dispatch
    def record_dispatch(self, action: str, kind: str, recipients: list[str], message_id: str,
                        at: datetime, actor: str, command_id: str, fund: str = "") -> None:
        t = rules.require_sendable(self.view(), action)
        if kind == "appeal" and t.step != "dispatch":
            raise errors.StageOrderError(f"The message for {action} is not due to be sent.")
        self._message_dispatched(action=action, kind=kind, recipients=recipients,
                                 message_id=message_id, fund=fund, at=at, actor=actor,
                                 command_id=command_id)

    @event("MessageDispatched")
    def _message_dispatched(self, action: str, kind: str, recipients: list[str], message_id: str,
                            fund: str, at: datetime, actor: str, command_id: str) -> None:
        t = self.tracks[action]
        t.message_ids.append(message_id)
        t.recipients = sorted(set(t.recipients) | set(recipients))
        if kind != "appeal":
            return
        if fund:
            t.funds[fund] = SENT
        self._after_delivery(t, at)

    def record_dispatch_failure(self, action: str, reason: str, at: datetime, actor: str,
                                command_id: str) -> None:
        rules.require_sendable(self.view(), action)
        self._dispatch_failed(action=action, reason=reason, at=at, actor=actor,
                              command_id=command_id)

    @event("DispatchFailed")
    def _dispatch_failed(self, action: str, reason: str, at: datetime, actor: str,
                         command_id: str) -> None:
        t = self.tracks[action]
        t.failures += 1
        if t.dispatch != SENT:
            t.dispatch = FAILED
            self._end(t, "failed")

    def hold_dispatch(self, action: str, missing: list[str], at: datetime, actor: str,
                      command_id: str) -> None:
        """The message cannot go because fields its channel requires are missing."""
        rules.require_sendable(self.view(), action)
        if not missing:
            raise errors.InvalidInput("missing", "names no missing field")
        self._dispatch_held(action=action, missing=sorted(missing), at=at, actor=actor,
                            command_id=command_id)

    @event("DispatchHeld")
    def _dispatch_held(self, action: str, missing: list[str], at: datetime, actor: str,
                       command_id: str) -> None:
        t = self.tracks[action]
        t.held = list(missing)
        t.dispatch = HELD

    # -------------------------------------------------------------------------------- deadlines
    def escalate(self, action: str, step: str, level: int, notified: list[str], at: datetime,
                 actor: str, command_id: str) -> None:
        rules.require_open(self.view())
        current_step, current = (("verification", self.verification_escalation) if not action
                                 else (rules.track(self.view(), action).step,
                                       self.tracks[action].escalation_level))
        if step != current_step or level != current + 1:
            raise errors.EscalationOutOfOrder(
                f"Escalation to level {level} of the {step} step does not follow level {current} "
                f"of the {current_step} step.")
        self._deadline_escalated(action=action, step=step, level=level, notified=notified, at=at,
                                 actor=actor, command_id=command_id)

    @event("DeadlineEscalated")
    def _deadline_escalated(self, action: str, step: str, level: int, notified: list[str],
                            at: datetime, actor: str, command_id: str) -> None:
        if not action:
            self.verification_escalation = level
            self.verification_deadline = deadline_for(self.deadline_table, "verification",
                                                      self.clock_level, at)
            return
        t = self.tracks[action]
        t.escalation_level = level
        t.deadline = deadline_for(self.deadline_table, t.step, self.clock_level, at)

    def extend_deadline(self, new_deadline: datetime, reason: str, at: datetime, actor: str,
                        command_id: str, action: str = "") -> None:
        view = self.view()
        rules.require_open(view)
        rules.text(reason, "reason")
        rules.require_later(rules.deadline_of(view, action), new_deadline)
        self._deadline_extended(action=action, new_deadline=new_deadline, reason=reason, at=at,
                                actor=actor, command_id=command_id)

    @event("DeadlineExtended")
    def _deadline_extended(self, action: str, new_deadline: datetime, reason: str, at: datetime,
                           actor: str, command_id: str) -> None:
        if action:
            self.tracks[action].deadline = new_deadline
        else:
            self.verification_deadline = new_deadline

    # -------------------------------------------------------------------------------- follow-up
    def record_response(self, action: str, summary: str, at: datetime, actor: str,
                        command_id: str, recipient: str = "") -> None:
        t = rules.require_response_allowed(self.view(), action)
        rules.text(summary, "summary")
        if recipient and recipient not in t.recipients and recipient not in t.funds:
            raise errors.InvalidInput("recipient", f"is not one of the recipients of {action}")
        self._response_recorded(action=action, recipient=recipient, summary=summary, at=at,
                                actor=actor, command_id=command_id)

    @event("ResponseRecorded")
    def _response_recorded(self, action: str, recipient: str, summary: str, at: datetime,
                           actor: str, command_id: str) -> None:
        self.responses.append({"action": action, "recipient": recipient, "summary": summary,
                               "at": at, "by": actor})

    def add_further_information(self, information: str, at: datetime, actor: str,
                                command_id: str, intake_changes: Mapping[str, Any] | None = None,
                                send_to: list[str] | None = None,
                                reassessment: Mapping[str, Any] | None = None) -> None:
        """New information in words, corrections or completions of the intake (which release
        held messages), and the earlier recipients (by action) who are to receive it."""
        view = self.view()
        rules.require_open(view)
        rules.text(information, "information")
        if send_to:
            rules.require_information_recipients(view, send_to)
        intake = None
        if intake_changes:
            unknown = sorted(set(intake_changes) - SUPPLEMENTABLE)
            if unknown:
                raise errors.InvalidInput(f"intake_changes.{unknown[0]!s:.40}",
                                          "cannot be changed after intake")
            intake = parse_intake(merge_changes(self.intake, intake_changes), today=at.date())
        checked = None
        if reassessment is not None:
            rules.require_verified(view, "a re-assessment of the risk")
            checked = rules.reassessment(reassessment)
        self._further_information_added(information=information, intake=intake,
                                        send_to=list(send_to or []), at=at, actor=actor,
                                        command_id=command_id)
        if checked is not None:
            self._reassess(checked, at, actor, command_id)

    @event("FurtherInformationAdded")
    def _further_information_added(self, information: str, intake: dict[str, Any] | None,
                                   send_to: list[str], at: datetime, actor: str,
                                   command_id: str) -> None:
        self.further_information.append({"information": information, "send_to": send_to,
                                         "at": at, "by": actor})
        if intake is not None:
            self.intake = intake
            for t in self.tracks.values():  # held messages are tried again with the new intake
                if t.dispatch == HELD:
                    t.held, t.dispatch = [], "pending"

    def record_checkin(self, summary: str, reprisals: bool, at: datetime, actor: str,
                       command_id: str, reassessment: Mapping[str, Any] | None = None) -> None:
        """A check-in with the defenders. A reprisal reported raises the risk one level, moves
        the deadlines of what waits, holds every message to a channel that may act in public
        until a case officer confirms, and has the heads alerted; a re-assessment given with it
        is recorded after it."""
        rules.require_checkin_allowed(self.view())
        rules.text(summary, "summary")
        if not isinstance(reprisals, bool):
            raise errors.InvalidInput("reprisals", "must be true or false")
        checked = rules.reassessment(reassessment) if reassessment is not None else None
        self._checkin_recorded(summary=summary, reprisals=reprisals, at=at, actor=actor,
                               command_id=command_id)
        if reprisals:
            level = raised(self.risk_level or self.urgency)
            self._reprisal_reported(level_before=self.risk_level, level=level,
                                    held=self._public_tracks(), at=at, actor=actor,
                                    command_id=command_id)
        if checked is not None:
            self._reassess(checked, at, actor, command_id)

    # -------------------------------------------------------------------------- risk that moves
    def reassess_risk(self, probability: Any, impact: Any, reason: Any, at: datetime, actor: str,
                      command_id: str) -> None:
        """Probability × impact again, with the reason: the risk level follows, and so do the
        deadlines of the decisions the case waits for."""
        rules.require_verified(self.view(), "a re-assessment of the risk")
        checked = rules.reassessment({"probability": probability, "impact": impact,
                                      "reason": reason})
        self._reassess(checked, at, actor, command_id)

    def _reassess(self, checked: dict[str, Any], at: datetime, actor: str,
                  command_id: str) -> None:
        level = risk_level(checked["probability"], checked["impact"]).value
        self._risk_reassessed(probability=checked["probability"], impact=checked["impact"],
                              reason=checked["reason"], level_before=self.risk_level,
                              level=level, at=at, actor=actor, command_id=command_id)

    @event("RiskReassessed")
    def _risk_reassessed(self, probability: int, impact: int, reason: str,
                         level_before: str | None, level: str, at: datetime, actor: str,
                         command_id: str) -> None:
        self.reassessments.append({"probability": probability, "impact": impact,
                                   "reason": reason, "level": level, "at": at, "by": actor})
        self._move_risk(level, at)

    @event("ReprisalReported")
    def _reprisal_reported(self, level_before: str | None, level: str, held: list[str],
                           at: datetime, actor: str, command_id: str) -> None:
        self.reprisals += 1
        self.last_reprisal = {"level_before": level_before, "level": level, "held": list(held),
                              "at": at}
        self.public_hold = True
        self.reprisal_alert_pending = True
        self._move_risk(level, at)

    def record_reprisal_alert(self, notified: list[str], at: datetime, actor: str,
                              command_id: str) -> None:
        """The heads were told of the reprisal (their user names; the mail holds codes only)."""
        if not self.reprisal_alert_pending:
            return  # told already (a retry after a crash): nothing new
        self._reprisal_alert_sent(notified=list(notified), at=at, actor=actor,
                                  command_id=command_id)

    @event("ReprisalAlertSent")
    def _reprisal_alert_sent(self, notified: list[str], at: datetime, actor: str,
                             command_id: str) -> None:
        self.reprisal_alert_pending = False

    def confirm_public_actions(self, reason: str, at: datetime, actor: str,
                               command_id: str) -> None:
        """A case officer confirms, after a reprisal, that messages to channels that may act
        in public may go on (with the reason)."""
        view = self.view()
        rules.require_open(view)
        if not self.public_hold:
            raise errors.CaseRuleError("No public action of this case is held: there is "
                                       "nothing to confirm.")
        rules.text(reason, "reason")
        self._public_actions_resumed(reason=reason, at=at, actor=actor, command_id=command_id)

    @event("PublicActionsResumed")
    def _public_actions_resumed(self, reason: str, at: datetime, actor: str,
                                command_id: str) -> None:
        self.public_hold = False

    def _public_tracks(self) -> list[str]:
        """The actions whose messages wait while public actions are held: channels that may act
        in public, not sent yet and not ended."""
        return sorted(a for a, t in self.tracks.items()
                      if a in PUBLIC_CHANNELS and t.step != "ended" and t.dispatch != SENT)

    def _move_risk(self, level: str, at: datetime) -> None:
        """The new risk level; each decision still awaited gets the new level's time from now,
        but a higher risk never moves a deadline later and a lower one never earlier."""
        before = self.risk_level or self.urgency
        self.risk_level = level
        rose = LEVEL_ORDER.index(level) > LEVEL_ORDER.index(before)
        for t in self.tracks.values():
            if t.step not in AWAITED_STEPS or t.deadline is None:
                continue
            new = deadline_for(self.deadline_table, t.step, level, at)
            if new is None:
                continue
            t.deadline = min(t.deadline, new) if rose else max(t.deadline, new)

    @event("DefenderCheckInRecorded")
    def _checkin_recorded(self, summary: str, reprisals: bool, at: datetime, actor: str,
                          command_id: str) -> None:
        self.checkins.append({"summary": summary, "reprisals": reprisals, "at": at, "by": actor})

    def record_reminder(self, recipients: list[str], message_id: str, at: datetime, actor: str,
                        command_id: str, kind: str = "follow_up", action: str = "") -> None:
        """A reminder to staff: `follow_up` (answers due for an action) restarts that action's
        follow-up clock; `checkin` (time to ask the defenders about reprisals) does not."""
        rules.require_open(self.view())
        if kind not in ("follow_up", "checkin"):
            raise errors.InvalidInput("kind", "must be follow_up or checkin")
        self._reminder_sent(recipients=recipients, message_id=message_id, kind=kind,
                            action=action, at=at, actor=actor, command_id=command_id)

    @event("ReminderSent")
    def _reminder_sent(self, recipients: list[str], message_id: str, kind: str, action: str,
                       at: datetime, actor: str, command_id: str) -> None:
        t = self.tracks.get(action)
        if kind == "follow_up" and t is not None and t.step == "follow_up":
            t.deadline = deadline_for(self.deadline_table, "follow_up", self.clock_level, at)

    def raise_warning(self, warning: str, at: datetime, actor: str, command_id: str) -> None:
        rules.require_open(self.view())
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

    # ---------------------------------------------------------------------------------- comments
    def comment(self, text: str, at: datetime, actor: str, command_id: str) -> None:
        """An internal note by a member of staff on the case: never sent anywhere, shown in the
        case's activity and trail to the staff who may see the case. Changes no step, so it may
        be added to a closed case too. The door checks the role."""
        text = rules.text(text, "comment", limit=COMMENT_MAX).strip()
        self._comment_added(comment=text, at=at, actor=actor, command_id=command_id)

    @event("CommentAdded")
    def _comment_added(self, comment: str, at: datetime, actor: str, command_id: str) -> None:
        pass

    # ------------------------------------------------------------------------------------ holder
    def claim(self, at: datetime, actor: str, command_id: str) -> None:
        """A case officer takes the case: they hold it from now on (decisions an officer takes
        wait for its holder; reminders go to them). Recorded by a door directly (no workflow:
        it changes no step), after checking that the actor is an active case officer."""
        rules.require_open(self.view())
        if self.assignee == actor:
            raise errors.CaseRuleError(f"{actor} holds this case already; nothing was recorded.")
        self._claimed(previous=self.assignee, at=at, actor=actor, command_id=command_id)

    @event("CaseClaimed")
    def _claimed(self, previous: str, at: datetime, actor: str, command_id: str) -> None:
        self.assignee = actor

    def reassign(self, holder: str, at: datetime, actor: str, command_id: str) -> None:
        """A head (or the holder) hands the case to another case officer (checked by the door:
        an active case officer)."""
        rules.require_open(self.view())
        if not isinstance(holder, str) or not holder.strip():
            raise errors.InvalidInput("holder", "name the case officer who is to hold the case")
        if holder == self.assignee:
            raise errors.CaseRuleError(f"{holder} holds this case already; nothing was recorded.")
        self._reassigned(holder=holder, previous=self.assignee, at=at, actor=actor,
                         command_id=command_id)

    @event("CaseReassigned")
    def _reassigned(self, holder: str, previous: str, at: datetime, actor: str,
                    command_id: str) -> None:
        self.assignee = holder

    # ------------------------------------------------------------------------------------ close
    def close(self, outcome: str, summary: str, at: datetime, actor: str,
              command_id: str) -> None:
        rules.require_open(self.view())
        if outcome not in set(Outcome):
            raise errors.InvalidInput("outcome", "must be one of " + ", ".join(Outcome))
        rules.text(summary, "summary", required=False)
        self._closed(outcome=str(outcome), summary=summary, at=at, actor=actor,
                     command_id=command_id)

    @event("Closed")
    def _closed(self, outcome: str, summary: str, at: datetime, actor: str,
                command_id: str) -> None:
        self.outcome = outcome
        self.verification_deadline = None
        for t in self.tracks.values():
            if t.step != "ended":
                self._end(t, "closed")

    # ---------------------------------------------------------------------------------- reading
    @property
    def clock_level(self) -> str:
        """Deadlines follow urgency before verification and the risk level after it."""
        return self.risk_level or self.urgency

    @property
    def is_closed(self) -> bool:
        return self.outcome is not None

    # What the message composer reads (the same surface as the older domain.case.Case).
    @property
    def actions(self) -> dict[str, dict[str, Any]]:
        return {a: {"consent": t.consent, "clearance": t.clearance, "dispatch": t.dispatch,
                    "conditions": self.conditions.get(a, ""), "message_ids": t.message_ids,
                    "recipients": t.recipients}
                for a, t in self.tracks.items()}

    def publicity_of(self, index: int) -> str:
        return most_restrictive(self.naming.get(str(index), []))

    def public_action_advised(self) -> bool:
        return bool((self.verification or {}).get("public_action_advised", False))

    def consent_givers(self, action: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.consents.get(action, [])]

    def view(self) -> CaseView:
        held_public = set(self._public_tracks()) if self.public_hold else set()
        tracks = {a: Track(**{**t.__dict__, "held": list(t.held),
                              "message_ids": list(t.message_ids),
                              "recipients": list(t.recipients), "funds": dict(t.funds),
                              "public_hold": a in held_public})
                  for a, t in self.tracks.items()}
        live = [t for t in tracks.values() if t.step != "ended"]
        deadlines = [d for d in [self.verification_deadline, *(t.deadline for t in live)] if d]
        return CaseView(
            reference=self.reference, version=self.version, stage=self._stage(),
            stage_detail=rules.stage_detail(tracks.values()), urgency=self.urgency,
            risk_level=self.risk_level, assignee=self.assignee, verifier=self.verifier,
            deadline=min(deadlines) if deadlines else None,
            escalation_level=max([self.verification_escalation,
                                  *(t.escalation_level for t in live)]),
            country=self.intake["country"], tracks=tracks,
            verification_deadline=self.verification_deadline,
            verification_escalation=self.verification_escalation,
            public_action_advised=(None if self.verification is None
                                   else self.public_action_advised()),
            represented=[cannot_consent_personally(d) for d in self.intake.get("defenders", [])],
            outcome=self.outcome, warnings=len(self.warnings),
            public_hold=self.public_hold, reprisal_alert_pending=self.reprisal_alert_pending,
            reprisals=self.reprisals)

    def summary(self) -> dict[str, Any]:
        """The view as plain JSON: what the store keeps beside the events (codes only)."""
        return self.view().to_json()

    def _stage(self) -> str:
        if self.outcome is not None:
            return "closed"
        if self.verifier is None:
            return "verification"
        steps = {t.step for t in self.tracks.values()}
        for step, stage in (("consent", "consent"), ("clearance", "clearance"),
                            ("fund_choice", "dispatch"), ("dispatch", "dispatch")):
            if step in steps:
                return stage
        return "follow_up"

    # ------------------------------------------------------------------------------- transitions
    def _advance(self, t: Track, at: datetime) -> None:
        """Move one track on once its own step has nothing left to decide."""
        if t.consent != GRANTED:
            return
        if t.clearance == PENDING:
            self._enter(t, "clearance", at)
        elif t.action == Action.EMERGENCY_FUND and not t.funds:
            self._enter(t, "fund_choice", at)
        else:
            self._enter(t, "dispatch", at)

    def _after_delivery(self, t: Track, at: datetime) -> None:
        """Sent (or submitted through a form): follow-up starts once nothing is left to send."""
        if t.funds and any(s in (TO_SEND, TO_SUBMIT) for s in t.funds.values()):
            return
        t.dispatch, t.held = SENT, []
        if t.step != "ended":
            self._enter(t, "follow_up", at)

    def _enter(self, t: Track, step: str, at: datetime) -> None:
        t.step = step
        t.escalation_level = 0
        t.deadline = deadline_for(self.deadline_table, step, self.clock_level, at)

    @staticmethod
    def _end(t: Track, why: str) -> None:
        t.step, t.ended, t.deadline = "ended", why, None


def open_tracked_case(reference: str, intake: Mapping[str, Any], clearance_required: list[str],
                      deadline_table: dict[str, dict[str, int]], at: datetime, actor: str,
                      command_id: str) -> TrackedCase:
    return TrackedCase(reference=reference, intake=dict(intake),
                       clearance_required=clearance_required, deadline_table=deadline_table,
                       at=at, actor=actor, command_id=command_id)
