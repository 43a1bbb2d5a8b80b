"""The case workflow's activities: every side effect of a case, each idempotent by its command id.

Built once by the worker with its dependencies (store, mailer, address book, renderer, contacts).
The store is synchronous (SQLAlchemy), so its calls run in a thread. Errors a caller must see are
raised as non-retryable ApplicationErrors whose message is the rule's own (no personal data); SMTP
failures are classified as transient (retried by Temporal) or permanent (recorded and escalated).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.mail import Mailer, OutgoingMessage, PermanentMailError, TransientMailError, make_message_id
from activities.messages import Composed, Composer, MessageError
from desk.assertions import OPEN, InvalidAssertion, verify
from domain.addressbook import AddressBook
from domain.case import Case
from domain.dispatch import DispatchPlan, Unsendable, plan_dispatch
from domain.errors import CaseRuleError
from domain.funds import Fund, profile_from_intake, suggest_funds
from domain.policies import clearance_required, deadline_table
from domain.tracked import TrackedCase
from domain.vocab import Action
from store.app import CaseStore, Command, StoreError
from workflows.inputs import (
    ApplyCommand,
    Dispatch,
    DispatchFailure,
    Escalate,
    FurtherInformation,
    OpenCase,
    Remind,
)

T = TypeVar("T")
_log = logging.getLogger(__name__)
SYSTEM = "system"
HEARTBEAT_SECONDS = 2  # the workflow's heartbeat timeout for sending activities is a few times this


@dataclass
class CaseConfig:
    """What the activities need from the settings (the worker fills it in)."""

    mail_from: str
    escalation_contacts: Mapping[int, list[str]]
    rapporteur_requires_clearance: bool = True
    emergency_fund_requires_clearance: bool = False
    deadline_overrides: Mapping[str, Mapping[str, int]] | None = None
    address_max_age_days: int = 365
    # Real outside addresses are mailed only when this is on; then unconfirmed ones are refused.
    live_sending: bool = False
    # Checks the assertion each person's decision carries (desk.assertions); shared with the doors.
    decision_key: bytes = b""

    @property
    def message_id_domain(self) -> str:
        return self.mail_from.rsplit("@", 1)[1]


def _refused(exc: Exception) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


class CaseActivities:
    def __init__(self, store: CaseStore, mailer: Mailer, book: AddressBook, funds: list[Fund],
                 composer: Composer, config: CaseConfig) -> None:
        self.store, self.mailer, self.book, self.funds = store, mailer, book, funds
        self.composer, self.config = composer, config

    def all(self) -> list[Callable[..., Any]]:
        return [self.open_case, self.apply_command, self.dispatch, self.record_dispatch_failure,
                self.escalate, self.remind, self.send_further_information]

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except (CaseRuleError, StoreError) as exc:
            raise _refused(exc) from None

    # ------------------------------------------------------------------------- recording
    @activity.defn(name="open_case")
    async def open_case(self, req: OpenCase) -> dict[str, Any]:
        proof = self._proof(req.assertion, req.reference, *OPEN, req.actor)
        await self._require_role(req.actor, ["case_officer"], "open a case")
        actions = [str(a) for a in req.intake.get("requested_actions") or []]
        needs = clearance_required(actions, rapporteur=self.config.rapporteur_requires_clearance,
                                   emergency_fund=self.config.emergency_fund_requires_clearance)
        table = deadline_table(self.config.deadline_overrides)
        return await self._store(self.store.open_case, req.reference, req.intake, needs, table,
                                 req.at, req.actor, req.command_id, False, proof)

    @activity.defn(name="apply_command")
    async def apply_command(self, req: ApplyCommand) -> dict[str, Any]:
        what = req.command.replace("_", " ")
        prior = await self._store(self.store.prior_result, req.command_id)
        if prior is not None:
            return prior  # recorded before a crash or retry: the first result, nothing new
        proof = self._proof(req.assertion, req.reference, req.command,
                            update_of(req.command_id), req.actor)
        await self._require_role(req.actor, req.roles, what)
        args = {**req.args, "at": req.at}
        if req.new_deadline is not None:
            args["new_deadline"] = req.new_deadline
        return await self._store(self.store.execute, req.reference, req.command, args, req.actor,
                                 req.command_id, proof)

    def _proof(self, token: str, reference: str, decision: str, update: str,
               actor: str) -> dict[str, Any]:
        """Who decided, proven: a valid assertion from a door that signed this person in, for
        exactly this case, decision and update. Checked before the roles; nothing is recorded
        without it. The name in the payload must be the signed-in person's."""
        try:
            signed = verify(token, self.config.decision_key, case=reference, decision=decision,
                            update=update)
        except InvalidAssertion as exc:
            raise ApplicationError(f"Not recorded: {exc}.", type="NotAuthorised",
                                   non_retryable=True) from None
        if signed.user != actor:
            raise ApplicationError("Not recorded: the decision names another person than the one "
                                   "who signed it.", type="NotAuthorised", non_retryable=True)
        return {"assertion_id": signed.id, "username": signed.user, "decision": decision,
                "update_id": update, "expires_at": signed.expires}

    async def _require_role(self, actor: str, roles: list[str], what: str) -> None:
        have = await asyncio.to_thread(self.store.user_roles, actor)
        if not have:
            raise ApplicationError("The acting user is not registered or not active; ask the head "
                                   "of secretariat to add them.", type="NotAuthorised",
                                   non_retryable=True)
        if not have & set(roles):
            needed = " or ".join(r.replace("_", " ") for r in roles)
            raise ApplicationError(f"Only a {needed} may {what}.", type="NotAuthorised",
                                   non_retryable=True)

    @activity.defn(name="record_dispatch_failure")
    async def record_dispatch_failure(self, req: DispatchFailure) -> dict[str, Any]:
        return await self._store(self.store.execute, req.reference, "record_dispatch_failure",
                                 {"action": req.action, "reason": req.reason, "at": req.at}, SYSTEM,
                                 f"{req.reference}/dispatch-failed/{req.action}")

    # --------------------------------------------------------------------------- sending
    @activity.defn(name="dispatch")
    async def dispatch(self, req: Dispatch) -> dict[str, Any]:
        """Send the action's message once: checked against the store before, recorded after.
        The case is read once; the plan (domain.dispatch) says where the message goes and which
        staff warnings go with it (see `_send_planned`)."""
        case = await self._store(self.store.get, req.reference)
        if not isinstance(case, Case):  # cases with tracks are sent by activities.tracks
            raise _refused(CaseRuleError("This case is sent through its action tracks."))
        message_id = make_message_id(req.reference, f"appeal/{req.action}",
                                     self.config.message_id_domain)
        state = case.actions.get(req.action)
        if state is None:
            raise _refused(CaseRuleError(f"{req.action!s:.40} is not an action of this case."))
        if message_id in state["message_ids"]:
            return case.summary()  # sent and recorded before a crash or retry
        try:
            case.require_sendable(req.action)  # consent withdrawn or clearance missing: no send
        except CaseRuleError:
            return case.summary()
        fund = None
        if req.action == Action.EMERGENCY_FUND:
            fund = self._choose_fund(case, req.at)
        plan = self._plan(case, req.action, req.at, fund=fund,
                          needs_fund=req.action == Action.EMERGENCY_FUND)
        if plan.held:
            return await self._hold(case, req, plan.missing)
        return await self._send_planned(case, plan, message_id, req.at, Command(
            "record_dispatch", {"action": req.action, "kind": "appeal",
                                "recipients": plan.recipients, "message_id": message_id,
                                "at": req.at}, f"{req.reference}/dispatch/{req.action}"))

    def _plan(self, case: Case | TrackedCase, action: str, at: datetime, *,
              fund: Fund | None = None, needs_fund: bool = False,
              require_confirmed: bool = False) -> DispatchPlan:
        """The dispatch's plan (domain.dispatch.plan_dispatch) from the loaded case; recipients
        that cannot be used fail for good (nothing is sent)."""
        try:
            return plan_dispatch(case.reference, case.intake, action, book=self.book,
                                 today=at.date(), max_age_days=self.config.address_max_age_days,
                                 fund=fund, needs_fund=needs_fund,
                                 fund_addresses=[f.address for f in self.funds if f.address],
                                 require_confirmed=require_confirmed)
        except Unsendable as exc:
            raise ApplicationError(str(exc), type="PermanentMailError",
                                   non_retryable=True) from None
        except CaseRuleError as exc:
            raise _refused(exc) from None

    async def _send_planned(self, case: Case | TrackedCase, plan: DispatchPlan, message_id: str,
                            at: datetime, record: Command) -> dict[str, Any]:
        """Compose (with the plan's routed mandates), send, then record the plan's staff
        warnings and the dispatch in ONE transaction, applied to the case read before the send
        (read again only when someone wrote to it meanwhile): either both are recorded or
        neither, so a crash or a failed save after the send leaves nothing half-recorded, and
        the retry sends again under the same Message-ID and records both once.

        The warnings are recorded after the send, not before it: on success with the dispatch;
        when composing or sending fails (for good, or for now and retried), on their own before
        the failure reaches the workflow, so that staff see them even when nothing goes out.
        Their command ids are those warnings always had, so one that an older worker recorded
        before its send is not recorded again."""
        warnings = [Command("raise_warning", {"warning": w.warning, "at": at}, w.command_id)
                    for w in plan.warnings]
        try:
            composed = self._compose(lambda: self.composer.appeal(
                case, plan.action, mandates=plan.mandates, fund=plan.fund))
            await self._send(OutgoingMessage(sender=self.config.mail_from, to=plan.recipients,
                                             subject=composed.subject, text=composed.text,
                                             html=composed.html, message_id=message_id,
                                             headers={"X-Appeal-Kind": "appeal",
                                                      "X-Appeal-Action": plan.action}))
        except ApplicationError:
            if warnings:
                await self._record_warnings(case, warnings)
            raise
        return await self._store(functools.partial(
            self.store.execute_all, case.reference, [*warnings, record], SYSTEM, case=case))

    async def _record_warnings(self, case: Case | TrackedCase, warnings: list[Command]) -> None:
        """The staff warnings of a dispatch that failed. The failure is what the workflow must
        hear: a store error here is logged (no case data) and the failure raised all the same."""
        try:
            await asyncio.to_thread(self.store.execute_all, case.reference, warnings, SYSTEM,
                                    case=case)
        except Exception as exc:  # noqa: BLE001 - the send's failure goes on to the workflow
            _log.warning("the staff warnings of a failed dispatch were not recorded: %s",
                         type(exc).__name__)

    async def _hold(self, case: Any, req: Dispatch, missing: list[str]) -> dict[str, Any]:
        """Nothing goes out half-empty: record which fields are missing and tell the officer."""
        command_id = f"{req.reference}/hold/{req.action}/v{case.version}"
        summary = await self._store(functools.partial(
            self.store.execute_all, req.reference,
            [Command("hold_dispatch", {"action": req.action, "missing": missing, "at": req.at},
                     command_id)], SYSTEM, case=case))
        composed = self._compose(lambda: self.composer.held(
            reference=req.reference, country=case.intake["country"], action=req.action,
            missing=missing))
        return await self._notify_staff(req.reference, command_id, summary, OutgoingMessage(
            sender=self.config.mail_from, to=await self._officer(case.assignee),
            subject=composed.subject, text=composed.text,
            message_id=make_message_id(req.reference, command_id, self.config.message_id_domain),
            headers={"X-Appeal-Kind": "dispatch-held"}))

    async def _officer(self, username: str) -> list[str]:
        """The case officer's address, or the first escalation level's when they have none."""
        user = await asyncio.to_thread(self.store.user, username)
        if user is not None and user["active"] and user["email"]:
            return [user["email"]]
        return list(self.config.escalation_contacts[min(self.config.escalation_contacts)])

    @activity.defn(name="send_further_information")
    async def send_further_information(self, req: FurtherInformation) -> dict[str, Any]:
        case = await self._store(self.store.get, req.reference)
        state = case.actions[req.action]
        message_id = make_message_id(req.reference, req.command_id, self.config.message_id_domain)
        if message_id in state["message_ids"]:
            return case.summary()
        composed = self._compose(
            lambda: self.composer.further_information(case, req.action, req.information))
        first = state["message_ids"][0] if state["message_ids"] else None
        await self._send(OutgoingMessage(
            sender=self.config.mail_from, to=list(state["recipients"]), subject=composed.subject,
            text=composed.text, html=composed.html, message_id=message_id, in_reply_to=first,
            references=list(state["message_ids"]),
            headers={"X-Appeal-Kind": "further_information", "X-Appeal-Action": req.action}))
        return await self._store(self.store.execute, req.reference, "record_dispatch",
                                 {"action": req.action, "kind": "further_information",
                                  "recipients": list(state["recipients"]),
                                  "message_id": message_id, "at": req.at},
                                 SYSTEM, req.command_id)

    @activity.defn(name="escalate")
    async def escalate(self, req: Escalate) -> dict[str, Any]:
        """Record the escalation, then tell the level's contacts (only codes, no names)."""
        contacts = list(self.config.escalation_contacts[min(req.level, max(self.config.escalation_contacts))])
        summary = await self._store(self.store.execute, req.reference, "escalate",
                                    {"stage": req.stage, "level": req.level, "notified": contacts,
                                     "at": req.at}, SYSTEM, req.command_id)
        composed = self._compose(lambda: self.composer.escalation(
            reference=req.reference, country=summary["country"], stage=req.stage, level=req.level,
            deadline=req.deadline or req.at, now=req.at, awaited=req.awaited))
        return await self._notify_staff(req.reference, req.command_id, summary, OutgoingMessage(
            sender=self.config.mail_from, to=contacts, subject=composed.subject, text=composed.text,
            message_id=make_message_id(req.reference, req.command_id, self.config.message_id_domain),
            headers={"X-Appeal-Kind": "escalation"}))

    async def _notify_staff(self, reference: str, command_id: str, summary: dict[str, Any],
                            message: OutgoingMessage) -> dict[str, Any]:
        """Mail to staff. A permanent failure must not stop the case: it becomes a staff warning
        on the case (shown in every inbox) instead; transient failures retry."""
        try:
            await self._deliver(message)
        except PermanentMailError as exc:
            return await self._store(self.store.execute, reference, "raise_warning",
                                     {"warning": f"Staff notification could not be sent: {exc}",
                                      "at": activity.info().current_attempt_scheduled_time},
                                     SYSTEM, f"{command_id}/mail-failed")
        except TransientMailError as exc:
            raise ApplicationError(str(exc), type="TransientMailError") from None
        return summary

    @activity.defn(name="remind")
    async def remind(self, req: Remind) -> dict[str, Any]:
        """Remind the case officer (follow-up due, or time to check in with the defenders)."""
        case = await self._store(self.store.get, req.reference)
        to = await self._officer(case.assignee)
        message_id = make_message_id(req.reference, req.command_id, self.config.message_id_domain)
        sent = [a for a, st in case.actions.items() if st["dispatch"] == "sent"]
        composed = self._compose(lambda: self.composer.reminder(
            reference=req.reference, country=case.intake["country"], kind=req.kind,
            actions_sent=sent, due=req.at))
        summary = await self._store(self.store.execute, req.reference, "record_reminder",
                                    {"recipients": to, "message_id": message_id, "kind": req.kind,
                                     "at": req.at}, SYSTEM, req.command_id)
        return await self._notify_staff(req.reference, req.command_id, summary, OutgoingMessage(
            sender=self.config.mail_from, to=to, subject=composed.subject, text=composed.text,
            message_id=message_id, headers={"X-Appeal-Kind": f"reminder-{req.kind}"}))

    async def _deliver(self, message: OutgoingMessage) -> None:
        """Send while heartbeating, so that a worker that dies mid-send is noticed in seconds and
        the send is retried elsewhere (with the same Message-ID)."""

        async def beat() -> None:
            while True:
                activity.heartbeat()
                await asyncio.sleep(HEARTBEAT_SECONDS)

        beating = asyncio.create_task(beat())
        try:
            await self.mailer.send(message)
        finally:
            beating.cancel()

    async def _send(self, message: OutgoingMessage) -> None:
        try:
            await self._deliver(message)
        except PermanentMailError as exc:
            raise ApplicationError(str(exc), type="PermanentMailError", non_retryable=True) from None
        except TransientMailError as exc:
            raise ApplicationError(str(exc), type="TransientMailError") from None

    # ------------------------------------------------------------------------ content
    @staticmethod
    def _compose(make: Callable[[], Composed]) -> Composed:
        """A message that cannot be rendered completely is never sent: the failure is permanent
        for this attempt (recorded and escalated by the workflow), and names no case data."""
        try:
            return make()
        except MessageError as exc:
            raise ApplicationError(str(exc), type="MessageError", non_retryable=True) from None

    def _choose_fund(self, case: Any, at: datetime) -> Fund | None:
        """Cases opened before staff chose funds: the best-matching fund that takes applications
        by email, not yet approached for the same purpose (every case opened now has the fund
        chosen by a case officer instead: see activities.tracks)."""
        profile = profile_from_intake(case.intake, case.risk_level, case.verifier is not None)
        by_address = {f.address.lower(): f.id for f in self.funds if f.address}
        approached = [(by_address[r.lower()], profile.purpose)
                      for r in case.actions.get(Action.EMERGENCY_FUND, {}).get("recipients", [])
                      if r.lower() in by_address]
        advice = suggest_funds(profile, self.funds, at.date(), already_chosen=approached,
                               max_age_days=self.config.address_max_age_days,
                               live_sending=self.config.live_sending)
        funds = {f.id: f for f in self.funds}
        return next((funds[s.fund_id] for s in advice.suggestions if funds[s.fund_id].sendable),
                    None)


def update_of(command_id: str) -> str:
    """The Temporal update id inside a decision's command id (`<reference>/update/<id>`)."""
    return command_id.rsplit("/update/", 1)[-1]
