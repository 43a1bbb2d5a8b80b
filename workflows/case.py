"""The case workflow: one long-lived, durable workflow per urgent case (docs/design.md section 2).

The workflow decides *when* things happen; the aggregate in the store decides *whether* they may.
Every change goes through an activity that records it in the event store, and the summary the
store returns (codes only, no personal data) is the workflow's view of the case. Human decisions
arrive as updates: the validator rejects what the workflow's view can already tell is wrong
(stage, action, four eyes, malformed payload), the handler has an activity check the actor's roles
in the registry and record the command, which the aggregate may still refuse with a named error.

No I/O here, no clock but workflow.now(), no randomness: see the determinism rules in
docs/design.md section 4.3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from domain.case import SUPPLEMENTABLE
    from domain.errors import InvalidInput
    from domain.intake import parse_verification
    from domain.vocab import Outcome, PublicNaming, Role
    from worker.search import CASE_NEXT_DEADLINE, CASE_RISK, CASE_STAGE
    from workflows.inputs import (
        ApplyCommand,
        CaseStart,
        CheckinInput,
        ClearanceInput,
        CloseInput,
        ConsentInput,
        Dispatch,
        DispatchFailure,
        Escalate,
        ExtensionInput,
        FurtherInformation,
        InformationInput,
        OpenCase,
        Remind,
        ResponseInput,
        VerificationInput,
    )

WORKFLOW_NAME = "UrgentCase"
# Stages whose deadline escalates; in follow-up the deadline reminds the case officer instead.
ESCALATING_STAGES = ("verification", "consent", "clearance", "dispatch")
MAX_TEXT = 20_000

OFFICER, LIAISON, HEAD = Role.CASE_OFFICER.value, Role.MINISTRY_LIAISON.value, Role.HEAD.value

@dataclass(frozen=True)
class Options:
    timeout: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None
    schedule_to_close: timedelta | None = None


# Recording is quick and idempotent (command ids); the store may be briefly unavailable.
RECORD = Options(
    timedelta(seconds=30),
    RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1),
                                non_retryable_error_types=["Rejected"]),
)
# Staff notifications (escalations, reminders): recorded first, then mailed; a mail refused for
# good becomes a warning on the case. While SMTP is down they retry for ten minutes at a time and
# release the case in between, so that staff decisions are never held up by staff mail.
NOTIFY = Options(
    timedelta(minutes=2),
    RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=5), non_retryable_error_types=["Rejected"]),
    heartbeat=timedelta(seconds=10),
    schedule_to_close=timedelta(minutes=10),
)
# Sending: transient SMTP failures retry with backoff until the dispatch deadline; then staff are
# alerted (an escalation) and sending goes on, so a consented appeal is never dropped because of
# an outage. A permanent failure (5xx, authentication, a message that cannot be rendered) is
# escalated and recorded as a failed dispatch at once.
SEND = Options(
    timedelta(minutes=2),
    RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=10),
                non_retryable_error_types=["PermanentMailError", "MessageError", "Rejected"]),
    heartbeat=timedelta(seconds=10),
)


def _rejected(message: str) -> ApplicationError:
    return ApplicationError(message, type="Rejected", non_retryable=True)


def _require_payload(req: object, kind: type) -> None:
    if not isinstance(req, kind):
        raise _rejected("The decision's details are missing or malformed; nothing was recorded.")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@workflow.defn(name=WORKFLOW_NAME)
class CaseWorkflow:
    @workflow.init
    def __init__(self, start: CaseStart) -> None:
        self.reference = start.reference
        self.state: dict[str, Any] | None = start.state
        self.handled: list[str] = list(start.handled_updates)
        self.checkin_interval = timedelta(days=start.checkin_interval_days)
        self.next_checkin: datetime | None = start.next_checkin
        # One change at a time: an update, an escalation or a send never interleave, so consent
        # withdrawn while a message is being prepared is seen before the send, never after.
        self.lock = asyncio.Lock()

    # ===================================================================================== run
    @workflow.run
    async def run(self, start: CaseStart) -> str:
        if self.state is None:
            async with self.lock:
                self.state = await self._call(
                    "open_case", OpenCase(self.reference, start.intake, start.actor, workflow.now(),
                                          f"{self.reference}/open",
                                          self._signed(start.assertion)), RECORD)
        self._publish()
        while self.stage != "closed":
            if self.stage == "dispatch" and self._sendable():
                await self._dispatch_all()
                continue
            if self.stage == "follow_up" and self.next_checkin is None:
                self.next_checkin = workflow.now() + self.checkin_interval
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() and not self.lock.locked())
                workflow.continue_as_new(CaseStart(
                    reference=self.reference, intake={}, actor=start.actor,
                    checkin_interval_days=self.checkin_interval.days, state=self.state,
                    handled_updates=self.handled[-500:], next_checkin=self.next_checkin))
            await self._wait_for_change_or_clock()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return str(self.view["outcome"])

    async def _call(self, activity: str, arg: Any, options: Options,
                    schedule_to_close: timedelta | None = None) -> dict[str, Any]:
        """Run an activity that records in the store; it returns the case summary."""
        summary: dict[str, Any] = await workflow.execute_activity(
            activity, arg, result_type=dict, start_to_close_timeout=options.timeout,
            schedule_to_close_timeout=schedule_to_close or options.schedule_to_close,
            heartbeat_timeout=options.heartbeat, retry_policy=options.retry)
        return summary

    @property
    def view(self) -> dict[str, Any]:
        if self.state is None:
            raise _rejected("The case is still being opened; try again in a moment.")
        return self.state

    @property
    def stage(self) -> str:
        return str(self.view["stage"])

    # ============================================================================== the clocks
    def _next_clock(self) -> tuple[datetime | None, str]:
        deadline = _time(self.view["deadline"])
        checkin = self.next_checkin if self.stage == "follow_up" else None
        if checkin is not None and (deadline is None or checkin < deadline):
            return checkin, "checkin"
        return deadline, "deadline"

    async def _wait_for_change_or_clock(self) -> None:
        version = self.view["version"]
        due, kind = self._next_clock()

        def changed() -> bool:
            return self.view["version"] != version or workflow.info().is_continue_as_new_suggested()

        if due is None:
            await workflow.wait_condition(changed)
            return
        delay = (due - workflow.now()).total_seconds()
        if delay > 0:
            try:
                await workflow.wait_condition(changed, timeout=delay)
                return
            except TimeoutError:
                pass
        async with self.lock:
            if self.view["version"] != version:
                return  # a decision arrived meanwhile and set a new clock
            await self._clock_fired(kind, due)
        self._publish()

    async def _clock_fired(self, kind: str, due: datetime) -> None:
        """A clock ran out. The escalation or reminder is dated at the deadline it is for (the
        timer fires a few milliseconds later), so the next deadline does not drift."""
        version = self.view["version"]
        if kind == "checkin":
            await self._remind("checkin", due, f"{self.reference}/remind/checkin/v{version}")
            self.next_checkin = due + self.checkin_interval
        elif self.stage == "follow_up":
            await self._remind("follow_up", due, f"{self.reference}/remind/follow_up/v{version}")
        elif self.stage in ESCALATING_STAGES:
            await self._escalate("deadline", due)

    async def _escalate(self, reason: str, at: datetime | None = None) -> None:
        stage, level = self.stage, int(self.view["escalation_level"]) + 1
        command_id = f"{self.reference}/escalate/{stage}/{level}/v{self.view['version']}"
        try:
            self.state = await self._call(
                "escalate",
                Escalate(self.reference, stage, level, at or workflow.now(), command_id, reason,
                         deadline=_time(self.view["deadline"]), awaited=self._pending()), NOTIFY)
        except ActivityError:
            # Recorded but not mailed yet (SMTP down): the same command id is tried again on the
            # next round of the loop, and records nothing twice.
            workflow.logger.warning("escalation mail not delivered yet; will retry")

    async def _remind(self, kind: str, at: datetime, command_id: str) -> None:
        try:
            self.state = await self._call("remind", Remind(self.reference, kind, at, command_id),
                                          NOTIFY)
        except ActivityError:
            workflow.logger.warning("reminder not delivered yet; will retry")

    def _until_deadline(self) -> timedelta:
        """How long sending may keep retrying before staff must hear of it (at least a minute)."""
        deadline = _time(self.view["deadline"])
        if deadline is None:
            return timedelta(hours=1)
        return max(deadline - workflow.now(), timedelta(minutes=1))

    # ================================================================================ dispatch
    def _sendable(self) -> list[str]:
        """Actions whose message may go now: consented, cleared where needed, not yet sent, and
        not held for missing fields (further information releases those)."""
        held = self.view.get("held", {})
        return [a for a, s in self.view["actions"].items()
                if s["consent"] == "granted" and s["clearance"] in ("not_required", "granted")
                and s["dispatch"] == "pending" and a not in held]

    async def _dispatch_all(self) -> None:
        for action in self._sendable():
            async with self.lock:
                if action not in self._sendable():
                    continue  # consent withdrawn while an earlier message went out
                try:
                    self.state = await self._call(
                        "dispatch", Dispatch(self.reference, action, workflow.now()), SEND,
                        schedule_to_close=self._until_deadline())
                except ActivityError as err:
                    cause = err.cause
                    if isinstance(cause, ActivityTimeoutError) or err.retry_state == RetryState.TIMEOUT:
                        # Still failing transiently at the dispatch deadline: staff are told,
                        # and the action stays pending, so sending goes on (next round).
                        await self._escalate("dispatch_delayed")
                        continue
                    if isinstance(cause, ApplicationError):
                        reason = f"{cause.type or 'SendFailed'}: {cause.message}"
                    else:
                        reason = f"SendFailed: {err.message}"
                    # Escalated while the case is still at the dispatch stage, then recorded.
                    await self._escalate("dispatch_failed")
                    self.state = await self._call(
                        "record_dispatch_failure",
                        DispatchFailure(self.reference, action, reason[:300], workflow.now()), RECORD)
            self._publish()

    # ============================================================================ the decisions
    @staticmethod
    def _signed(assertion: str) -> str:
        """Decisions carry the door's signed assertion to the activity that checks it (a patch:
        histories recorded before it replay without it)."""
        return assertion if workflow.patched("signed-decisions") else ""

    async def _decide(self, command: str, roles: list[str], actor: str, args: dict[str, Any],
                      check: Callable[[], None], new_deadline: datetime | None = None,
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
            if self.stage == "closed":
                raise _rejected("This case is closed; it can be read but not changed.")
            try:
                self.state = await self._call(
                    "apply_command",
                    ApplyCommand(self.reference, command, args, actor, workflow.now(), command_id,
                                 roles, new_deadline, self._signed(assertion)), RECORD)
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError):
                    raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
                raise
            self.handled.append(update_id)
        self._publish()
        return self.status()

    async def _send_further_information(self, information: str) -> None:
        version = self.view["version"]
        for action, s in self.view["actions"].items():
            if s["dispatch"] != "sent":
                continue
            async with self.lock:
                self.state = await self._call(
                    "send_further_information",
                    FurtherInformation(self.reference, action, information, workflow.now(),
                                       f"{self.reference}/further/{action}/v{version}"), SEND)

    def _already_handled(self) -> bool:
        """Temporal deduplicates update ids within a run; across continue-as-new, we do."""
        info = workflow.current_update_info()
        return info is not None and info.id in self.handled

    # -- validators: they see only the workflow's view; the aggregate checks again when recording
    def _check_actor(self, actor: str) -> None:
        if not isinstance(actor, str) or not actor.strip() or len(actor) > 100:
            raise _rejected("actor: the user name of the person deciding is required.")

    def _check_stage(self, stage: str, what: str) -> None:
        if self.stage != stage:
            raise _rejected(f"This case is at the {self.stage} stage; {what} can only be recorded "
                            f"at the {stage} stage.")

    def _check_action(self, action: str) -> dict[str, Any]:
        actions: dict[str, Any] = self.view["actions"]
        if action not in actions:
            proposed = ", ".join(actions) or "none"
            raise _rejected(f"action: {action!s:.40} is not one of the actions proposed for this "
                            f"case ({proposed}).")
        state: dict[str, Any] = actions[action]
        return state

    @staticmethod
    def _check_text(value: str, field: str, *, required: bool = True) -> None:
        if not isinstance(value, str):
            raise _rejected(f"{field}: must be text.")
        if required and not value.strip():
            raise _rejected(f"{field}: is required.")
        if len(value) > MAX_TEXT:
            raise _rejected(f"{field}: is too long (at most {MAX_TEXT} characters).")

    # -- verification
    @workflow.update
    async def record_verification(self, req: VerificationInput) -> dict[str, Any]:
        return await self._decide("record_verification", [OFFICER], req.actor,
                                  {"verification": req.verification},
                                  lambda: self._validate_verification(req), assertion=req.assertion)

    @record_verification.validator
    def _validate_verification(self, req: VerificationInput) -> None:
        _require_payload(req, VerificationInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_stage("verification", "a verification")
        # Verifications accepted before the do-no-harm answer (public_action_advised) was required
        # must still be accepted when their histories replay; the store requires it of new ones.
        legacy = ({"public_action_advised": True, **req.verification}
                  if isinstance(req.verification, dict) else req.verification)
        try:
            parse_verification(legacy)
        except InvalidInput as exc:
            raise _rejected(str(exc)) from None

    # -- consent
    @workflow.update
    async def grant_consent(self, req: ConsentInput) -> dict[str, Any]:
        return await self._decide("grant_consent", [OFFICER], req.actor,
                                  {"action": req.action, "conditions": req.text,
                                   "public_naming": req.public_naming},
                                  lambda: self._validate_consent_decision(req), assertion=req.assertion)

    @workflow.update
    async def refuse_consent(self, req: ConsentInput) -> dict[str, Any]:
        return await self._decide("refuse_consent", [OFFICER], req.actor,
                                  {"action": req.action, "reason": req.text},
                                  lambda: self._validate_consent_decision(req), assertion=req.assertion)

    @grant_consent.validator
    def _validate_grant(self, req: ConsentInput) -> None:
        _require_payload(req, ConsentInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._validate_consent_decision(req)

    @refuse_consent.validator
    def _validate_refuse(self, req: ConsentInput) -> None:
        _require_payload(req, ConsentInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._validate_consent_decision(req)

    def _validate_consent_decision(self, req: ConsentInput) -> None:
        _require_payload(req, ConsentInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_stage("consent", "consent")
        self._check_text(req.text, "text", required=False)
        if req.public_naming not in set(PublicNaming):
            raise _rejected(f"public_naming: must be one of {', '.join(PublicNaming)}.")
        if self._check_action(req.action)["consent"] != "proposed":
            raise _rejected(f"Consent for {req.action} has already been recorded.")

    @workflow.update
    async def withdraw_consent(self, req: ConsentInput) -> dict[str, Any]:
        return await self._decide("withdraw_consent", [OFFICER], req.actor,
                                  {"action": req.action, "reason": req.text},
                                  lambda: self._validate_withdraw(req), assertion=req.assertion)

    @withdraw_consent.validator
    def _validate_withdraw(self, req: ConsentInput) -> None:
        _require_payload(req, ConsentInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_text(req.text, "text", required=False)
        state = self._check_action(req.action)
        if state["dispatch"] == "sent":
            raise _rejected(f"The message for {req.action} has already been sent; consent can no "
                            "longer be withdrawn for it. Record the grantee's wish as further "
                            "information.")
        if state["consent"] != "granted":
            raise _rejected(f"Consent for {req.action} is not granted, so it cannot be withdrawn.")

    # -- clearance
    @workflow.update
    async def record_clearance(self, req: ClearanceInput) -> dict[str, Any]:
        return await self._decide("record_clearance", [LIAISON], req.actor,
                                  {"action": req.action, "granted": req.granted,
                                   "reason": req.reason},
                                  lambda: self._validate_clearance(req), assertion=req.assertion)

    @record_clearance.validator
    def _validate_clearance(self, req: ClearanceInput) -> None:
        _require_payload(req, ClearanceInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_stage("clearance", "a clearance decision")
        if not isinstance(req.granted, bool):
            raise _rejected("granted: must be true or false.")
        self._check_text(req.reason, "reason", required=False)
        state = self._check_action(req.action)
        if req.actor == self.view["verifier"]:
            raise _rejected("The person who verified the threat cannot also clear it; another "
                            "ministry liaison must decide.")
        if state["clearance"] != "pending" or state["consent"] != "granted":
            raise _rejected(f"{req.action} is not waiting for clearance.")

    # -- deadlines
    @workflow.update
    async def extend_deadline(self, req: ExtensionInput) -> dict[str, Any]:
        return await self._decide("extend_deadline", [HEAD], req.actor, {"reason": req.reason},
                                  lambda: self._validate_extension(req), req.new_deadline,
                                  assertion=req.assertion)

    @extend_deadline.validator
    def _validate_extension(self, req: ExtensionInput) -> None:
        _require_payload(req, ExtensionInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_text(req.reason, "reason")
        current = _time(self.view["deadline"])
        if not isinstance(req.new_deadline, datetime) or req.new_deadline.tzinfo is None:
            raise _rejected("new_deadline: must be a date and time with a time zone.")
        if current is None or req.new_deadline <= current:
            raise _rejected("new_deadline: an extension must move the current deadline later.")

    # -- follow-up
    @workflow.update
    async def record_response(self, req: ResponseInput) -> dict[str, Any]:
        return await self._decide("record_response", [OFFICER], req.actor,
                                  {"action": req.action, "summary": req.summary},
                                  lambda: self._validate_response(req), assertion=req.assertion)

    @record_response.validator
    def _validate_response(self, req: ResponseInput) -> None:
        _require_payload(req, ResponseInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_text(req.summary, "summary")
        if self._check_action(req.action)["dispatch"] != "sent":
            raise _rejected(f"No message was sent for {req.action}, so no response to it can be "
                            "recorded.")

    @workflow.update
    async def add_further_information(self, req: InformationInput) -> dict[str, Any]:
        args: dict[str, Any] = {"information": req.information}
        if req.intake_changes:
            args["intake_changes"] = req.intake_changes
        result = await self._decide("add_further_information", [OFFICER], req.actor, args,
                                    lambda: self._validate_information(req), assertion=req.assertion)
        if req.send_to_recipients:
            await self._send_further_information(req.information)
            self._publish()
            result = self.status()
        return result

    @add_further_information.validator
    def _validate_information(self, req: InformationInput) -> None:
        _require_payload(req, InformationInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_text(req.information, "information")
        if req.intake_changes is not None:
            if not isinstance(req.intake_changes, dict):
                raise _rejected("intake_changes: must be an object of intake fields.")
            fixed = sorted(set(req.intake_changes) - SUPPLEMENTABLE)
            if fixed:
                raise _rejected(f"intake_changes.{fixed[0]!s:.40}: cannot be changed after intake.")
        if req.send_to_recipients and not any(
                s["dispatch"] == "sent" for s in self.view["actions"].values()):
            raise _rejected("send_to_recipients: no message has been sent yet, so there is no "
                            "earlier recipient to inform.")

    @workflow.update
    async def record_checkin(self, req: CheckinInput) -> dict[str, Any]:
        result = await self._decide("record_checkin", [OFFICER], req.actor,
                                    {"summary": req.summary, "reprisals": req.reprisals},
                                    lambda: self._validate_checkin(req), assertion=req.assertion)
        self.next_checkin = workflow.now() + self.checkin_interval
        return result

    @record_checkin.validator
    def _validate_checkin(self, req: CheckinInput) -> None:
        _require_payload(req, CheckinInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_text(req.summary, "summary")
        if not isinstance(req.reprisals, bool):
            raise _rejected("reprisals: must be true or false.")
        if self.stage not in ("dispatch", "follow_up"):
            raise _rejected("Defender check-ins are recorded during follow-up.")

    @workflow.update
    async def close(self, req: CloseInput) -> dict[str, Any]:
        return await self._decide("close", [OFFICER, HEAD], req.actor,
                                  {"outcome": req.outcome, "summary": req.summary},
                                  lambda: self._validate_close(req), assertion=req.assertion)

    @close.validator
    def _validate_close(self, req: CloseInput) -> None:
        _require_payload(req, CloseInput)
        if self.state is None or self._already_handled():
            return  # opening (the handler checks once the case exists), or a repeated update
        self._check_actor(req.actor)
        self._check_text(req.summary, "summary", required=False)
        if req.outcome not in set(Outcome):
            raise _rejected(f"outcome: must be one of {', '.join(Outcome)}.")
        if self.stage == "closed":
            raise _rejected("This case is closed; it can be read but not changed.")

    # ================================================================================== queries
    @workflow.query
    def status(self) -> dict[str, Any]:
        """Where the case stands, codes only: what the command line and the web show."""
        if self.state is None:
            return {"reference": self.reference, "stage": "intake", "pending": []}
        s = self.state
        return {
            "reference": self.reference,
            "stage": s["stage"],
            "urgency": s["urgency"],
            "risk_level": s["risk_level"],
            "deadline": s["deadline"],
            "escalation_level": s["escalation_level"],
            "next_checkin": self.next_checkin.isoformat() if self.next_checkin else None,
            "actions": {a: {"consent": v["consent"], "clearance": v["clearance"],
                            "dispatch": v["dispatch"], "message_ids": v["message_ids"]}
                        for a, v in s["actions"].items()},
            "pending": self._pending(),
            "held": s.get("held", {}),
            "outcome": s["outcome"],
            "version": s["version"],
        }

    def _pending(self) -> list[dict[str, Any]]:
        s = self.view
        if s["stage"] == "closed":
            return []
        pending: list[dict[str, Any]] = []

        def add(decision: str, roles: list[str], action: str | None = None,
                not_by: str | None = None) -> None:
            item: dict[str, Any] = {"decision": decision, "roles": roles}
            if action:
                item["action"] = action
            if not_by:
                item["not_by"] = not_by
            pending.append(item)

        if s["stage"] == "verification":
            add("record_verification", [OFFICER])
        for action, a in s["actions"].items():
            if s["stage"] == "consent" and a["consent"] == "proposed":
                add("grant_or_refuse_consent", [OFFICER], action)
            if s["stage"] == "clearance" and a["consent"] == "granted" and a["clearance"] == "pending":
                add("record_clearance", [LIAISON], action, not_by=s["verifier"])
        for action, missing in s.get("held", {}).items():
            pending.append({"decision": "add_further_information", "roles": [OFFICER],
                            "action": action, "missing": missing})
        if s["stage"] == "follow_up":
            add("record_response_or_checkin", [OFFICER])
            add("close", [OFFICER, HEAD])
        if s["deadline"]:
            add("extend_deadline", [HEAD])
        return pending

    # ======================================================================== search attributes
    def _publish(self) -> None:
        s = self.view
        risk = s["risk_level"] or s["urgency"]
        due = _time(s["deadline"])
        workflow.upsert_search_attributes([
            CASE_STAGE.value_set(str(s["stage"])), CASE_RISK.value_set(str(risk)),
            CASE_NEXT_DEADLINE.value_set(due) if due else CASE_NEXT_DEADLINE.value_unset(),
        ])


__all__ = ["CaseWorkflow", "WORKFLOW_NAME"]
