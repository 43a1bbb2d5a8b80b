"""The case workflow with one track per proposed action (every case opened now).

After the verification each action moves on its own: its consent, its clearance where it needs
one, the fund choice for emergency funds, its dispatch, its follow-up, each with its own clock and
escalation level. A message goes as soon as its own track allows; a pending decision on another
action never holds it back. Cases opened before this workflow type keep running under
workflows.case (workflow type "UrgentCase"), which stays registered until none is open.

The workflow decides *when*; the aggregate (domain.tracked) decides *whether*, with the rules of
domain.rules, which the update validators here apply to the same typed view first. No I/O, no
clock but workflow.now(), no randomness (see docs/design.md section 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain import rules
    from domain.decisions import DECISIONS, HEAD, LIAISON, OFFICER, WAITING_NOTICES, roles_for
    from domain.errors import CaseRuleError
    from domain.intake import parse_verification
    from domain.view import ESCALATING_STEPS, TO_SUBMIT, CaseView, Delivery
    from domain.vocab import Outcome, PublicNaming
    from worker.search import CASE_NEXT_DEADLINE, CASE_RISK, CASE_STAGE
    from workflows.case import NOTIFY, RECORD, Options
    from workflows.inputs import (
        ApplyCommand,
        CheckinInput,
        ChooseFunds,
        ClearanceInput,
        CloseInput,
        ConfirmPublicInput,
        ConsentInput,
        DispatchFailure,
        ExtensionInput,
        FundChoiceInput,
        FundSubmissionInput,
        FurtherInformation,
        InformationInput,
        OpenCase,
        ReassessInput,
        ResponseInput,
        TrackEvent,
        TracksStart,
        VerificationInput,
        WaitingNotice,
    )

WORKFLOW_NAME = "UrgentCaseTracks"

# One send attempt per activity: the workflow retries transient failures itself, so that each
# track shows how its delivery is going (attempts, since when, the last error's kind) while it
# retries, and a decision on the case is never queued behind a long run of SMTP retries. A worker
# that dies mid-send is noticed by the heartbeat and the send is tried again (same Message-ID).
SEND_ONCE = Options(
    timedelta(minutes=2),
    RetryPolicy(maximum_attempts=1),
    heartbeat=timedelta(seconds=10),
)
PERMANENT = ("PermanentMailError", "MessageError", "Rejected", "NotAuthorised")
FIRST_RETRY, LAST_RETRY = timedelta(seconds=5), timedelta(minutes=10)
# Cases started (or continued as new) from this patch on mail the staff who may take a decision
# as soon as the case comes to wait for it; running cases replay without it until they continue.
WAITING_NOTICES_PATCH = "waiting-notices"
# Cases started (or continued as new) from this patch alert the heads when a check-in reports a
# reprisal (the alert is sent until it is recorded, ReprisalAlertSent); running cases replay
# without it until they continue as new.
REPRISAL_ALERTS_PATCH = "reprisal-alerts"
# Cases started (or continued as new) from this patch record decisions, the opening and a failed
# dispatch as local activities: a short, idempotent write (its command id records it once however
# often it runs) done by the worker that runs the workflow task, without a round trip through the
# task queue. Sends and staff mail stay regular activities (they heartbeat and retry for long).
LOCAL_RECORDS_PATCH = "local-records"


def _rejected(message: str) -> ApplicationError:
    return ApplicationError(message, type="Rejected", non_retryable=True)


def _require_payload(req: object, kind: type) -> None:
    if not isinstance(req, kind):
        raise _rejected("The decision's details are missing or malformed; nothing was recorded.")


def _checked(check: Callable[[], Any]) -> None:
    """Apply a domain rule in a validator: its refusal becomes the update's rejection."""
    try:
        check()
    except CaseRuleError as exc:
        raise _rejected(str(exc)) from None


@workflow.defn(name=WORKFLOW_NAME)
class TrackedCaseWorkflow:
    @workflow.init
    def __init__(self, start: TracksStart) -> None:
        self.reference = start.reference
        self.state: CaseView | None = start.view
        self.handled: list[str] = list(start.handled_updates)
        self.checkin_interval = timedelta(seconds=start.checkin_interval_seconds)
        self.next_checkin: datetime | None = start.next_checkin
        self.delivery: dict[str, Delivery] = {}
        self.sending: set[str] = set()
        # Waiting notices (see _tell_waiting): the pending decisions whose takers were told (or
        # are being told), and the notices still being sent. None until the run knows whether it
        # sends them; from an earlier run that sent none, what is pending now counts as told.
        self.notices = False
        self.notified: set[str] | None = (None if start.notified is None
                                          else set(start.notified))
        self.noticing: dict[str, asyncio.Task[None]] = {}
        # Reprisal alerts to the heads (see _alert_heads): whether this run sends them, and
        # whether one is being sent.
        self.alerts = False
        self.alerting = False
        # Whether this run records as local activities (LOCAL_RECORDS_PATCH); set first in run,
        # before any handler can record.
        self.local = False
        # One change at a time: an update, an escalation or a send attempt never interleave, so
        # consent withdrawn while a message is being prepared is seen before the send.
        self.lock = asyncio.Lock()

    # ===================================================================================== run
    @workflow.run
    async def run(self, start: TracksStart) -> str:
        self.local = workflow.patched(LOCAL_RECORDS_PATCH)
        self.notices = workflow.patched(WAITING_NOTICES_PATCH)
        self.alerts = workflow.patched(REPRISAL_ALERTS_PATCH)
        if self.notices and self.notified is None:
            # Continued from a run without notices: what it waited for was never mailed, but it
            # is not new either; only decisions that become pending from here on are.
            self.notified = set(self._awaited()) if self.state is not None else set()
        if self.state is None:
            async with self.lock:
                self.state = await self._call("open_tracked_case", OpenCase(
                    self.reference, start.intake, start.actor, workflow.now(),
                    f"{self.reference}/open", assertion=start.assertion), RECORD, local=True)
        self._publish()
        while self.view.stage != "closed":
            if self.notices:
                self._tell_new_waits()
            for action, t in self.view.tracks.items():
                if t.ready_to_send and action not in self.sending:
                    self.sending.add(action)
                    asyncio.ensure_future(self._send_track(action))
            if self.alerts and self.view.reprisal_alert_pending and not self.alerting:
                self.alerting = True
                asyncio.ensure_future(self._alert_heads())
            if self.next_checkin is None and any(t.step == "follow_up"
                                                 for t in self.view.tracks.values()):
                self.next_checkin = workflow.now() + self.checkin_interval
            if (workflow.info().is_continue_as_new_suggested() and not self.sending
                    and not self.noticing and not self.alerting):
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() and not self.lock.locked())
                workflow.continue_as_new(TracksStart(
                    reference=self.reference, intake={}, actor=start.actor,
                    checkin_interval_seconds=int(self.checkin_interval.total_seconds()),
                    view=self.view, handled_updates=self.handled[-500:],
                    next_checkin=self.next_checkin,
                    notified=sorted(self.notified) if self.notices and self.notified is not None
                    else None))
            await self._wait_for_change_or_clock()
        for task in list(self.noticing.values()):
            task.cancel()  # closed: nothing waits any more
        await workflow.wait_condition(lambda: workflow.all_handlers_finished()
                                      and not self.sending and not self.noticing
                                      and not self.alerting)
        return str(self.view.outcome)

    async def _call(self, activity: str, arg: Any, options: Options, *,
                    local: bool = False) -> CaseView:
        """Run an activity that records in the store; it returns the case view. `local`: a
        recording that runs as a local activity in runs that took LOCAL_RECORDS_PATCH."""
        if local and self.local:
            recorded: CaseView = await workflow.execute_local_activity(
                activity, arg, result_type=CaseView, start_to_close_timeout=options.timeout,
                schedule_to_close_timeout=options.schedule_to_close, retry_policy=options.retry)
            return recorded
        view: CaseView = await workflow.execute_activity(
            activity, arg, result_type=CaseView, start_to_close_timeout=options.timeout,
            schedule_to_close_timeout=options.schedule_to_close,
            heartbeat_timeout=options.heartbeat, retry_policy=options.retry)
        return view

    @property
    def view(self) -> CaseView:
        if self.state is None:
            raise _rejected("The case is still being opened; try again in a moment.")
        return self.state

    # ============================================================================== the clocks
    def _next_clock(self) -> tuple[datetime | None, str, str]:
        """The soonest clock: (when, what, action); action "" is the case itself."""
        v = self.view
        clocks: list[tuple[datetime, str, str]] = []
        if v.verification_deadline:
            clocks.append((v.verification_deadline, "escalate", ""))
        for action, t in v.tracks.items():
            if t.deadline and t.step != "ended":
                clocks.append((t.deadline, "escalate" if t.step in ESCALATING_STEPS else "remind",
                               action))
        if self.next_checkin is not None:
            clocks.append((self.next_checkin, "checkin", ""))
        if not clocks:
            return None, "", ""
        return min(clocks, key=lambda c: c[0])

    async def _wait_for_change_or_clock(self) -> None:
        version = self.view.version
        due, kind, action = self._next_clock()

        def changed() -> bool:
            # Continue-as-new waits until no track is sending and no notice is being sent (their
            # tasks would be lost).
            return (self.view.version != version
                    or any(t.ready_to_send and a not in self.sending
                           for a, t in self.view.tracks.items())
                    or (workflow.info().is_continue_as_new_suggested() and not self.sending
                        and not self.noticing and not self.alerting))

        if due is not None:
            delay = (due - workflow.now()).total_seconds()
            try:
                await workflow.wait_condition(changed, timeout=max(delay, 0.001))
                return
            except TimeoutError:
                pass
        else:
            await workflow.wait_condition(changed)
            return
        async with self.lock:
            if self.view.version != version:
                return  # a decision arrived meanwhile and set new clocks
            await self._clock_fired(kind, action, due)
        self._publish()

    async def _clock_fired(self, kind: str, action: str, due: datetime) -> None:
        """Dated at the deadline it is for (the timer fires a little later), so nothing drifts."""
        v = self.view
        if kind == "checkin":
            await self._notify("remind_track", TrackEvent(
                self.reference, "", due, f"{self.reference}/remind/checkin/v{v.version}",
                kind="checkin"))
            self.next_checkin = due + self.checkin_interval
        elif kind == "remind":
            await self._notify("remind_track", TrackEvent(
                self.reference, action, due,
                f"{self.reference}/remind/follow_up/{action}/v{v.version}", kind="follow_up"))
        else:
            await self._escalate(action, "deadline", due)

    async def _escalate(self, action: str, reason: str, at: datetime) -> None:
        v = self.view
        if action:
            step, level, deadline = (v.tracks[action].step, v.tracks[action].escalation_level + 1,
                                     v.tracks[action].deadline)
        else:
            step, level, deadline = ("verification", v.verification_escalation + 1,
                                     v.verification_deadline)
        await self._notify("escalate_track", TrackEvent(
            self.reference, action, at,
            f"{self.reference}/escalate/{action or 'case'}/{step}/{level}/v{v.version}",
            step=step, level=level, reason=reason, deadline=deadline,
            awaited=[p for p in self._pending() if p.get("action", "") == action]))

    async def _notify(self, activity: str, event: TrackEvent) -> None:
        try:
            self.state = await self._call(activity, event, NOTIFY)
        except ActivityError:
            # Recorded but not mailed yet (SMTP down): the same command id is tried again on the
            # next round of the loop, and records nothing twice.
            workflow.logger.warning("staff notification not delivered yet; will retry")

    # ========================================================================= waiting notices
    def _awaited(self) -> dict[str, dict[str, Any]]:
        """The pending decisions staff are told of (domain.decisions.WAITING_NOTICES), by a key
        that names the decision and what it is for: closing counts only once every action has
        ended, when the case waits for nothing else."""
        v = self.view
        live = any(t.step != "ended" for t in v.tracks.values())
        out: dict[str, dict[str, Any]] = {}
        for item in self._pending():
            name = item["decision"]
            if name not in WAITING_NOTICES or (name == "close" and live):
                continue
            key = "/".join(k for k in (name, item.get("action", ""), item.get("fund", "")) if k)
            out[key] = item
        return out

    def _tell_new_waits(self) -> None:
        """One notice for each decision the case has come to wait for since the last look: not
        again while it stays pending (nor after continue-as-new, which carries the keys over),
        again only if it is taken and later awaited anew."""
        awaited = self._awaited()
        told = self.notified if self.notified is not None else set()
        self.notified = {k for k in told if k in awaited or k in self.noticing}
        v = self.view
        for key, item in awaited.items():
            if key in self.notified:
                continue
            self.notified.add(key)
            action = item.get("action", "")
            deadline = (v.tracks[action].deadline if action in v.tracks
                        else v.verification_deadline if item["decision"] == "record_verification"
                        else None)
            notice = WaitingNotice(
                reference=self.reference, decision=item["decision"], roles=list(item["roles"]),
                assignee=v.assignee, at=workflow.now(),
                command_id=f"{self.reference}/waiting/{key}/v{v.version}", action=action,
                fund=item.get("fund", ""), not_by=item.get("not_by"), deadline=deadline)
            self.noticing[key] = asyncio.ensure_future(self._tell_waiting(key, notice))

    async def _tell_waiting(self, key: str, notice: WaitingNotice) -> None:
        """Mail one notice in the background: never under the case's lock, so a decision is not
        held up by staff mail. While SMTP is down it retries (ten minutes at a time, as the other
        staff notices) for as long as the decision is still awaited."""
        try:
            while True:
                try:
                    result: dict[str, Any] = await workflow.execute_activity(
                        "notify_waiting", notice, result_type=dict,
                        start_to_close_timeout=NOTIFY.timeout,
                        schedule_to_close_timeout=NOTIFY.schedule_to_close,
                        heartbeat_timeout=NOTIFY.heartbeat, retry_policy=NOTIFY.retry)
                except ActivityError as err:
                    cause = err.cause
                    if isinstance(cause, ApplicationError) and (cause.non_retryable
                                                                or cause.type in PERMANENT):
                        workflow.logger.warning("waiting notice not sent: %s", cause.type)
                        return
                    workflow.logger.warning("waiting notice not delivered yet; will retry")
                    try:
                        await workflow.wait_condition(
                            lambda: self.view.stage == "closed" or key not in self._awaited(),
                            timeout=LAST_RETRY)
                        return  # decided (or closed) meanwhile: the notice has no purpose left
                    except TimeoutError:
                        continue
                if result:  # refused for good: a staff warning was recorded on the case
                    view = CaseView.from_json(result)
                    async with self.lock:
                        # Taken only when the warning is all that is new: a view refreshed past
                        # an escalation recorded but not yet mailed would lose that mail's retry.
                        if view.version == self.view.version + 1:
                            self.state = view
                return
        except asyncio.CancelledError:
            return  # the case closed
        finally:
            self.noticing.pop(key, None)

    # ========================================================================= reprisal alerts
    async def _alert_heads(self) -> None:
        """Tell the heads of a reprisal (activity alert_reprisal), under the case's lock: it
        records ReprisalAlertSent once the mail went. While mail fails it is tried again (ten
        minutes at a time) for as long as the case is open."""
        try:
            while True:
                async with self.lock:
                    v = self.view
                    if v.stage == "closed" or not v.reprisal_alert_pending:
                        return
                    try:
                        self.state = await self._call("alert_reprisal", TrackEvent(
                            self.reference, "", workflow.now(),
                            f"{self.reference}/reprisal-alert/v{v.version}"), NOTIFY)
                    except ActivityError:
                        workflow.logger.warning("reprisal alert not delivered yet; will retry")
                if not self.view.reprisal_alert_pending:
                    self._publish()
                    return
                try:
                    await workflow.wait_condition(lambda: self.view.stage == "closed",
                                                  timeout=LAST_RETRY)
                    return
                except TimeoutError:
                    continue
        finally:
            self.alerting = False

    # ================================================================================ dispatch
    async def _send_track(self, action: str) -> None:
        """Send what the track has to send, retrying transient failures with backoff."""
        try:
            pause = FIRST_RETRY
            while True:
                async with self.lock:
                    if self.view.stage == "closed" or not self.view.tracks[action].ready_to_send:
                        return
                    try:
                        self.state = await self._call("dispatch_track", TrackEvent(
                            self.reference, action, workflow.now()), SEND_ONCE)
                        self.delivery.pop(action, None)
                        pause = FIRST_RETRY
                    except ActivityError as err:
                        cause = err.cause
                        kind = (cause.type if isinstance(cause, ApplicationError) and cause.type
                                else type(cause).__name__ if cause else "SendFailed")
                        if kind in PERMANENT:
                            await self._give_up(action, kind, err)
                            return
                        d = self.delivery.setdefault(action, Delivery())
                        d.attempts += 1
                        d.retrying_since = d.retrying_since or workflow.now()
                        d.last_error = kind
                self._publish()
                if action in self.delivery:
                    await workflow.sleep(pause)
                    pause = min(pause * 2, LAST_RETRY)
        finally:
            self.sending.discard(action)

    async def _give_up(self, action: str, kind: str, err: ActivityError) -> None:
        """A permanent failure: staff are told at once, and the failure is recorded."""
        self.delivery.pop(action, None)
        await self._escalate(action, "dispatch_failed", workflow.now())
        cause = err.cause
        text = cause.message if isinstance(cause, ApplicationError) else str(err.message)
        self.state = await self._call("record_dispatch_failure", DispatchFailure(
            self.reference, action, f"{kind}: {text}"[:300], workflow.now()), RECORD, local=True)

    # ============================================================================ the decisions
    async def _decide(self, command: str, actor: str, args: dict[str, Any],
                      check: Callable[[], None], *, activity: str = "apply_command",
                      arg: Any = None, new_deadline: datetime | None = None,
                      assertion: str = "") -> dict[str, Any]:
        # An update that arrives while the case is being opened waits for it, then is checked.
        await workflow.wait_condition(lambda: self.state is not None)
        if self._already_handled():
            return self.status()  # the same update again after continue-as-new: nothing new
        check()
        info = workflow.current_update_info()
        update_id = info.id if info else ""
        command_id = f"{self.reference}/update/{update_id}"
        async with self.lock:
            _checked(lambda: rules.require_open(self.view))
            try:
                self.state = await self._call(activity, arg(command_id) if arg else ApplyCommand(
                    self.reference, command, args, actor, workflow.now(), command_id,
                    roles_for(command), new_deadline, assertion), RECORD, local=True)
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError):
                    raise ApplicationError(cause.message, type=cause.type,
                                           non_retryable=True) from None
                raise
            self.handled.append(update_id)
        self._publish()
        return self.status()

    def _already_handled(self) -> bool:
        info = workflow.current_update_info()
        return info is not None and info.id in self.handled

    def _ready(self, req: object, kind: type) -> bool:
        """Whether a validator should check now: not while opening, not for a repeated update."""
        _require_payload(req, kind)
        if self.state is None or self._already_handled():
            return False
        _checked(lambda: rules.text(getattr(req, "actor", None), "actor", limit=100))
        return True

    # -- verification
    @workflow.update
    async def record_verification(self, req: VerificationInput) -> dict[str, Any]:
        return await self._decide("record_verification", req.actor,
                                  {"verification": req.verification},
                                  lambda: self._validate_verification(req), assertion=req.assertion)

    @record_verification.validator
    def _validate_verification(self, req: VerificationInput) -> None:
        if self._ready(req, VerificationInput):
            _checked(lambda: rules.require_verification_stage(self.view))
            _checked(lambda: parse_verification(req.verification))

    # -- consent
    @workflow.update
    async def grant_consent(self, req: ConsentInput) -> dict[str, Any]:
        return await self._decide("grant_consent", req.actor, {
            "action": req.action, "conditions": req.text, "consents": req.consents,
            "publicity": req.publicity, "public_naming": req.public_naming,
        }, lambda: self._validate_grant(req), assertion=req.assertion)

    @grant_consent.validator
    def _validate_grant(self, req: ConsentInput) -> None:
        if self._ready(req, ConsentInput):
            _checked(lambda: rules.require_consent_undecided(self.view, req.action))
            _checked(lambda: rules.text(req.text, "text", required=False))
            if req.publicity is None and req.public_naming not in set(PublicNaming):
                raise _rejected(f"public_naming: must be one of {', '.join(PublicNaming)}.")
            _checked(lambda: rules.consent_records(
                self.view, req.consents,
                req.publicity if req.publicity is not None else req.public_naming,
                workflow.now()))

    @workflow.update
    async def refuse_consent(self, req: ConsentInput) -> dict[str, Any]:
        return await self._decide("refuse_consent", req.actor,
                                  {"action": req.action, "reason": req.text},
                                  lambda: self._validate_refuse(req), assertion=req.assertion)

    @refuse_consent.validator
    def _validate_refuse(self, req: ConsentInput) -> None:
        if self._ready(req, ConsentInput):
            _checked(lambda: rules.require_consent_undecided(self.view, req.action))
            _checked(lambda: rules.text(req.text, "text", required=False))

    @workflow.update
    async def withdraw_consent(self, req: ConsentInput) -> dict[str, Any]:
        return await self._decide("withdraw_consent", req.actor,
                                  {"action": req.action, "reason": req.text},
                                  lambda: self._validate_withdraw(req), assertion=req.assertion)

    @withdraw_consent.validator
    def _validate_withdraw(self, req: ConsentInput) -> None:
        if self._ready(req, ConsentInput):
            _checked(lambda: rules.require_withdrawable(self.view, req.action))
            _checked(lambda: rules.text(req.text, "text", required=False))

    # -- clearance
    @workflow.update
    async def record_clearance(self, req: ClearanceInput) -> dict[str, Any]:
        return await self._decide("record_clearance", req.actor,
                                  {"action": req.action, "granted": req.granted,
                                   "reason": req.reason},
                                  lambda: self._validate_clearance(req), assertion=req.assertion)

    @record_clearance.validator
    def _validate_clearance(self, req: ClearanceInput) -> None:
        if self._ready(req, ClearanceInput):
            if not isinstance(req.granted, bool):
                raise _rejected("granted: must be true or false.")
            _checked(lambda: rules.text(req.reason, "reason", required=False))
            _checked(lambda: rules.require_clearance_pending(self.view, req.action, req.actor))

    # -- emergency funds
    @workflow.update
    async def choose_funds(self, req: FundChoiceInput) -> dict[str, Any]:
        return await self._decide(
            "choose_funds", req.actor, {}, lambda: self._validate_funds(req),
            activity="choose_funds",
            arg=lambda command_id: ChooseFunds(self.reference, list(req.funds), req.reason,
                                               req.actor, workflow.now(), command_id,
                                               req.assertion))

    @choose_funds.validator
    def _validate_funds(self, req: FundChoiceInput) -> None:
        if self._ready(req, FundChoiceInput):
            _checked(lambda: rules.require_fund_choice_open(self.view))
            _checked(lambda: rules.text(req.reason, "reason", required=False))
            if (not isinstance(req.funds, list) or not req.funds
                    or not all(isinstance(f, str) for f in req.funds)):
                raise _rejected("funds: choose at least one fund from the suggestions.")

    @workflow.update
    async def record_fund_submission(self, req: FundSubmissionInput) -> dict[str, Any]:
        return await self._decide("record_fund_submission", req.actor,
                                  {"fund": req.fund, "note": req.note},
                                  lambda: self._validate_submission(req), assertion=req.assertion)

    @record_fund_submission.validator
    def _validate_submission(self, req: FundSubmissionInput) -> None:
        if self._ready(req, FundSubmissionInput):
            _checked(lambda: rules.require_submission_pending(self.view, req.fund))
            _checked(lambda: rules.text(req.note, "note", required=False))

    # -- deadlines
    @workflow.update
    async def extend_deadline(self, req: ExtensionInput) -> dict[str, Any]:
        # The deadline travels typed (ApplyCommand.new_deadline), not inside the plain args.
        return await self._decide("extend_deadline", req.actor,
                                  {"reason": req.reason, "action": req.action},
                                  lambda: self._validate_extension(req),
                                  new_deadline=req.new_deadline, assertion=req.assertion)

    @extend_deadline.validator
    def _validate_extension(self, req: ExtensionInput) -> None:
        if self._ready(req, ExtensionInput):
            _checked(lambda: rules.require_open(self.view))
            _checked(lambda: rules.text(req.reason, "reason"))
            _checked(lambda: rules.require_later(rules.deadline_of(self.view, req.action),
                                                 req.new_deadline))

    # -- follow-up
    @workflow.update
    async def record_response(self, req: ResponseInput) -> dict[str, Any]:
        return await self._decide("record_response", req.actor,
                                  {"action": req.action, "summary": req.summary,
                                   "recipient": req.recipient},
                                  lambda: self._validate_response(req), assertion=req.assertion)

    @record_response.validator
    def _validate_response(self, req: ResponseInput) -> None:
        if self._ready(req, ResponseInput):
            _checked(lambda: rules.text(req.summary, "summary"))
            _checked(lambda: rules.require_response_allowed(self.view, req.action))

    @workflow.update
    async def add_further_information(self, req: InformationInput) -> dict[str, Any]:
        args: dict[str, Any] = {"information": req.information, "send_to": self._send_to(req)}
        if req.intake_changes:
            args["intake_changes"] = req.intake_changes
        if req.reassessment is not None:
            args["reassessment"] = req.reassessment
        result = await self._decide("add_further_information", req.actor, args,
                                    lambda: self._validate_information(req), assertion=req.assertion)
        info = workflow.current_update_info()
        for action in args["send_to"]:
            async with self.lock:
                try:
                    self.state = await self._call("send_further_information", FurtherInformation(
                        self.reference, action, req.information, workflow.now(),
                        f"{self.reference}/further/{action}/{info.id if info else ''}"),
                        SEND_RETRY)
                except ActivityError:
                    # The information is recorded; the message could not go for good (e.g. the
                    # address was refused): staff are told, and the other recipients still get it.
                    await self._escalate(action, "further_information_failed", workflow.now())
        if args["send_to"]:
            self._publish()
            result = self.status()
        return result

    def _send_to(self, req: InformationInput) -> list[str]:
        """The chosen actions; `send_to_recipients` alone means every action sent so far."""
        if req.send_to is not None:
            return list(req.send_to)
        if req.send_to_recipients and self.state is not None:
            return [a for a, t in self.view.tracks.items()
                    if t.dispatch == "sent" and t.recipients and t.consent == "granted"
                    and t.clearance in ("not_required", "granted")]
        return []

    @add_further_information.validator
    def _validate_information(self, req: InformationInput) -> None:
        if self._ready(req, InformationInput):
            _checked(lambda: rules.require_open(self.view))
            _checked(lambda: rules.text(req.information, "information"))
            if req.intake_changes is not None and not isinstance(req.intake_changes, dict):
                raise _rejected("intake_changes: must be an object of intake fields.")
            send_to = self._send_to(req)
            if req.send_to_recipients and req.send_to is None and not send_to:
                raise _rejected("send_to_recipients: no message has been sent yet, so there is "
                                "no earlier recipient to inform.")
            _checked(lambda: rules.require_information_recipients(self.view, send_to))
            if req.reassessment is not None:
                _checked(lambda: rules.require_verified(self.view, "a re-assessment of the risk"))
                _checked(lambda: rules.reassessment(req.reassessment))

    @workflow.update
    async def record_checkin(self, req: CheckinInput) -> dict[str, Any]:
        args: dict[str, Any] = {"summary": req.summary, "reprisals": req.reprisals}
        if req.reassessment is not None:
            args["reassessment"] = req.reassessment
        result = await self._decide("record_checkin", req.actor, args,
                                    lambda: self._validate_checkin(req), assertion=req.assertion)
        self.next_checkin = workflow.now() + self.checkin_interval
        return result

    @record_checkin.validator
    def _validate_checkin(self, req: CheckinInput) -> None:
        if self._ready(req, CheckinInput):
            _checked(lambda: rules.text(req.summary, "summary"))
            if not isinstance(req.reprisals, bool):
                raise _rejected("reprisals: must be true or false.")
            _checked(lambda: rules.require_checkin_allowed(self.view))
            if req.reassessment is not None:
                _checked(lambda: rules.reassessment(req.reassessment))

    # -- risk that moves
    @workflow.update
    async def reassess_risk(self, req: ReassessInput) -> dict[str, Any]:
        return await self._decide("reassess_risk", req.actor,
                                  {"probability": req.probability, "impact": req.impact,
                                   "reason": req.reason},
                                  lambda: self._validate_reassessment(req),
                                  assertion=req.assertion)

    @reassess_risk.validator
    def _validate_reassessment(self, req: ReassessInput) -> None:
        if self._ready(req, ReassessInput):
            _checked(lambda: rules.require_verified(self.view, "a re-assessment of the risk"))
            _checked(lambda: rules.reassessment({"probability": req.probability,
                                                 "impact": req.impact, "reason": req.reason}))

    @workflow.update
    async def confirm_public_actions(self, req: ConfirmPublicInput) -> dict[str, Any]:
        return await self._decide("confirm_public_actions", req.actor, {"reason": req.reason},
                                  lambda: self._validate_confirmation(req),
                                  assertion=req.assertion)

    @confirm_public_actions.validator
    def _validate_confirmation(self, req: ConfirmPublicInput) -> None:
        if self._ready(req, ConfirmPublicInput):
            _checked(lambda: rules.require_open(self.view))
            if not self.view.public_hold:
                raise _rejected("No public action of this case is held: there is nothing to "
                                "confirm.")
            _checked(lambda: rules.text(req.reason, "reason"))

    @workflow.update
    async def close(self, req: CloseInput) -> dict[str, Any]:
        return await self._decide("close", req.actor,
                                  {"outcome": req.outcome, "summary": req.summary},
                                  lambda: self._validate_close(req), assertion=req.assertion)

    @close.validator
    def _validate_close(self, req: CloseInput) -> None:
        if self._ready(req, CloseInput):
            _checked(lambda: rules.text(req.summary, "summary", required=False))
            if req.outcome not in set(Outcome):
                raise _rejected(f"outcome: must be one of {', '.join(Outcome)}.")
            _checked(lambda: rules.require_open(self.view))

    # ================================================================================== queries
    @workflow.query
    def status(self) -> dict[str, Any]:
        """Where the case stands, codes only: what the command line and the web show."""
        if self.state is None:
            return {"reference": self.reference, "stage": "intake", "pending": [],
                    "tracked": True}
        v = self.state.to_json()
        for action, t in v["tracks"].items():
            d = self.delivery.get(action)
            if d is not None:
                t["delivery"] = {"attempts": d.attempts, "last_error": d.last_error,
                                 "retrying_since": d.retrying_since.isoformat()
                                 if d.retrying_since else None}
        v["actions"] = v["tracks"]  # the name earlier clients read
        v["held"] = {a: t["held"] for a, t in v["tracks"].items() if t["held"]}
        v["pending"] = self._pending()
        v["next_checkin"] = self.next_checkin.isoformat() if self.next_checkin else None
        return v

    def _pending(self) -> list[dict[str, Any]]:
        """The decisions the case waits for, with who may take them (from domain.decisions)."""
        v = self.view
        if v.stage == "closed":
            return []
        pending: list[dict[str, Any]] = []

        def add(decision: str, roles: tuple[str, ...] | list[str], action: str = "",
                **extra: Any) -> None:
            item: dict[str, Any] = {"decision": decision, "roles": list(roles), **extra}
            if action:
                item["action"] = action
            pending.append(item)

        if v.stage == "verification":
            add("record_verification", DECISIONS["record_verification"].roles)
        for action, t in v.tracks.items():
            if v.stage == "verification" or t.step == "ended":
                continue
            if t.step == "consent":
                add("grant_or_refuse_consent", DECISIONS["grant_consent"].roles, action)
            elif t.step == "clearance":
                add("record_clearance", DECISIONS["record_clearance"].roles, action,
                    not_by=v.verifier)
            elif t.step == "fund_choice":
                add("choose_funds", DECISIONS["choose_funds"].roles, action)
            elif t.step == "dispatch" and t.held:
                add("add_further_information", (OFFICER,), action, missing=list(t.held))
            elif t.step == "dispatch":
                for fund, state in t.funds.items():
                    if state == TO_SUBMIT:
                        add("record_fund_submission", DECISIONS["record_fund_submission"].roles,
                            action, fund=fund)
        if v.public_hold:
            add("confirm_public_actions", DECISIONS["confirm_public_actions"].roles)
        if any(t.step == "follow_up" for t in v.tracks.values()):
            add("record_response_or_checkin", (OFFICER,))
        if v.stage != "verification":
            add("close", (OFFICER, HEAD))
        if v.deadline:
            add("extend_deadline", DECISIONS["extend_deadline"].roles)
        return pending

    # ======================================================================== search attributes
    def _publish(self) -> None:
        v = self.view
        workflow.upsert_search_attributes([
            CASE_STAGE.value_set(v.stage), CASE_RISK.value_set(v.risk_level or v.urgency),
            CASE_NEXT_DEADLINE.value_set(v.deadline) if v.deadline
            else CASE_NEXT_DEADLINE.value_unset(),
        ])


# Further information goes to earlier recipients: transient failures retry (same Message-ID).
SEND_RETRY = Options(
    timedelta(minutes=2),
    RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=10),
                non_retryable_error_types=list(PERMANENT)),
    heartbeat=timedelta(seconds=10),
)

__all__ = ["TrackedCaseWorkflow", "WORKFLOW_NAME", "LIAISON"]
