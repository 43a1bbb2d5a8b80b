"""Activities of cases with per-action tracks (workflows.tracks): opening, the fund choice, one
send per call, escalations and reminders per action. Recording decisions and further information
reuse the activities of activities.case, which work for both kinds of case.

Each is idempotent by its command id or Message-ID, as in activities.case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.case import SYSTEM, CaseActivities, _refused, update_of
from activities.mail import OutgoingMessage, make_message_id
from desk.assertions import OPEN
from domain.decisions import HEAD, OFFICER
from domain.errors import CaseRuleError
from domain.funds import (
    Fund,
    FundAdvice,
    FundProfile,
    check_fund_choice,
    profile_from_intake,
    suggest_funds,
)
from domain.policies import clearance_required, deadline_table
from domain.tracked import TrackedCase
from domain.view import TO_SEND, TO_SUBMIT
from domain.vocab import Action
from store.app import Command
from workflows.inputs import ChooseFunds, OpenCase, TrackEvent, WaitingNotice


class TrackActivities(CaseActivities):
    def all(self) -> list[Callable[..., Any]]:
        return [*super().all(), self.open_tracked_case, self.choose_funds, self.dispatch_track,
                self.escalate_track, self.remind_track, self.notify_waiting,
                self.alert_reprisal]

    async def _tracked(self, reference: str) -> TrackedCase:
        case = await self._store(self.store.get, reference)
        if not isinstance(case, TrackedCase):
            raise _refused(CaseRuleError("This case was opened before per-action tracks."))
        return case

    # ------------------------------------------------------------------------- recording
    @activity.defn(name="open_tracked_case")
    async def open_tracked_case(self, req: OpenCase) -> dict[str, Any]:
        proof = self._proof(req.assertion, req.reference, *OPEN, req.actor)
        await self._require_role(req.actor, ["case_officer"], "open a case")
        actions = [str(a) for a in req.intake.get("requested_actions") or []]
        needs = clearance_required(actions, rapporteur=self.config.rapporteur_requires_clearance,
                                   emergency_fund=self.config.emergency_fund_requires_clearance)
        table = deadline_table(self.config.deadline_overrides)
        return await self._store(self.store.open_case, req.reference, req.intake, needs, table,
                                 req.at, req.actor, req.command_id, True, proof)

    @activity.defn(name="choose_funds")
    async def choose_funds(self, req: ChooseFunds) -> dict[str, Any]:
        """The officer's choice, checked against the directory and the grantee's refusals."""
        proof = self._proof(req.assertion, req.reference, "choose_funds",
                            update_of(req.command_id), req.actor)
        await self._require_role(req.actor, ["case_officer"], "choose the emergency funds")
        prior = await self._store(self.store.prior_result, req.command_id)
        if prior is not None:
            return prior
        case = await self._tracked(req.reference)
        track = case.tracks.get(Action.EMERGENCY_FUND)
        profile = self._profile(case)
        already = [(f, profile.purpose) for f in track.funds] if track else []
        try:
            check_fund_choice(req.funds, self.funds, profile, already,
                              live_sending=self.config.live_sending, today=req.at.date())
        except CaseRuleError as exc:
            raise _refused(exc) from None
        by_id = {f.id: f for f in self.funds}
        how = {f: TO_SEND if by_id[f].sendable else TO_SUBMIT for f in req.funds}
        return await self._store(self.store.execute, req.reference, "choose_funds",
                                 {"funds": how, "reason": req.reason, "at": req.at}, req.actor,
                                 req.command_id, proof)

    def suggestions(self, case: TrackedCase, today: date) -> FundAdvice:
        """Suggested and excluded funds with their reasons (for the doors)."""
        track = case.tracks.get(Action.EMERGENCY_FUND)
        profile = self._profile(case)
        return suggest_funds(profile, self.funds, today,
                             already_chosen=[(f, profile.purpose) for f in
                                             (track.funds if track else {})],
                             max_age_days=self.config.address_max_age_days,
                             live_sending=self.config.live_sending)

    @staticmethod
    def _profile(case: TrackedCase) -> FundProfile:
        refused = [a for a, t in case.tracks.items() if t.consent in ("refused", "withdrawn")]
        return profile_from_intake(case.intake, case.risk_level, case.verifier is not None,
                                   refused=refused)

    # --------------------------------------------------------------------------- sending
    @activity.defn(name="dispatch_track")
    async def dispatch_track(self, req: TrackEvent) -> dict[str, Any]:
        """Send the next message of one track: its appeal, or the next fund application that
        goes by email. Checked against the store before, recorded after; one attempt per call
        (the workflow retries, so that staff see how delivery is going). The case is read
        once; the plan (domain.dispatch) and the recording are those of `dispatch`
        (`CaseActivities._send_planned`)."""
        case = await self._tracked(req.reference)
        track = case.tracks.get(req.action)
        if track is None or not track.ready_to_send or case.is_closed:
            return case.summary()  # withdrawn, sent before a crash, or closed meanwhile
        fund: Fund | None = None
        key = f"appeal/{req.action}"
        if track.funds:
            fund_id = next(f for f, state in track.funds.items() if state == TO_SEND)
            fund = next((f for f in self.funds if f.id == fund_id), None)
            if fund is None or not fund.address:
                raise ApplicationError("The chosen fund has no email address in the directory; "
                                       "nothing was sent.", type="PermanentMailError",
                                       non_retryable=True)
            key = f"appeal/{req.action}/{fund.id}"
        message_id = make_message_id(req.reference, key, self.config.message_id_domain)
        if message_id in track.message_ids:
            return case.summary()
        plan = self._plan(case, req.action, req.at, fund=fund,
                          require_confirmed=self.config.live_sending)
        if plan.held:
            return await self._hold(case, req, plan.missing)  # type: ignore[arg-type]
        return await self._send_planned(case, plan, message_id, req.at, Command(
            "record_dispatch", {"action": req.action, "kind": "appeal",
                                "recipients": plan.recipients, "message_id": message_id,
                                "at": req.at, "fund": fund.id if fund else ""},
            f"{req.reference}/dispatch/{key}"))

    # ------------------------------------------------------------------------ staff mail
    @activity.defn(name="escalate_track")
    async def escalate_track(self, req: TrackEvent) -> dict[str, Any]:
        """Record the escalation of one track (or of the verification), then tell the level's
        contacts (codes only, no names)."""
        levels = self.config.escalation_contacts
        contacts = list(levels[min(req.level, max(levels))])
        summary = await self._store(self.store.execute, req.reference, "escalate",
                                    {"action": req.action, "step": req.step, "level": req.level,
                                     "notified": contacts, "at": req.at}, SYSTEM, req.command_id)
        stage = f"{req.step} ({req.action})" if req.action else req.step
        composed = self._compose(lambda: self.composer.escalation(
            reference=req.reference, country=summary["country"], stage=stage, level=req.level,
            deadline=req.deadline or req.at, now=req.at, awaited=req.awaited))
        return await self._notify_staff(req.reference, req.command_id, summary, OutgoingMessage(
            sender=self.config.mail_from, to=contacts, subject=composed.subject, text=composed.text,
            message_id=make_message_id(req.reference, req.command_id, self.config.message_id_domain),
            headers={"X-Appeal-Kind": "escalation"}))

    @activity.defn(name="remind_track")
    async def remind_track(self, req: TrackEvent) -> dict[str, Any]:
        """Remind the case officer: answers due for one action, or time for a check-in."""
        case = await self._tracked(req.reference)
        to = await self._officer(case.assignee)
        message_id = make_message_id(req.reference, req.command_id, self.config.message_id_domain)
        sent = [a for a, t in case.tracks.items() if t.dispatch == "sent"]
        composed = self._compose(lambda: self.composer.reminder(
            reference=req.reference, country=case.intake["country"], kind=req.kind,
            actions_sent=[req.action] if req.action else sent, due=req.at))
        summary = await self._store(self.store.execute, req.reference, "record_reminder",
                                    {"recipients": to, "message_id": message_id, "kind": req.kind,
                                     "action": req.action, "at": req.at}, SYSTEM, req.command_id)
        return await self._notify_staff(req.reference, req.command_id, summary, OutgoingMessage(
            sender=self.config.mail_from, to=to, subject=composed.subject, text=composed.text,
            message_id=message_id, headers={"X-Appeal-Kind": f"reminder-{req.kind}"}))

    @activity.defn(name="notify_waiting")
    async def notify_waiting(self, req: WaitingNotice) -> dict[str, Any]:
        """Tell the staff who may take a decision the case has come to wait for (codes only: the
        reference, the decision, the action, the deadline, where to act). Nothing is recorded
        when it goes; a refusal for good becomes a staff warning on the case, whose view is then
        returned ({} otherwise); transient failures retry (same Message-ID)."""
        to = await self._takers(req)
        composed = self._compose(lambda: self.composer.waiting(
            reference=req.reference, decision=req.decision, roles=req.roles, action=req.action,
            fund=req.fund, four_eyes=bool(req.not_by), deadline=req.deadline))
        headers = {"X-Appeal-Kind": "waiting", "X-Appeal-Decision": req.decision}
        if req.action:  # not X-Appeal-Action, which names the action of an outgoing appeal
            headers["X-Appeal-Decision-Action"] = req.action
        return await self._notify_staff(req.reference, req.command_id, {}, OutgoingMessage(
            sender=self.config.mail_from, to=to, subject=composed.subject, text=composed.text,
            message_id=make_message_id(req.reference, req.command_id, self.config.message_id_domain),
            headers=headers))

    @activity.defn(name="alert_reprisal")
    async def alert_reprisal(self, req: TrackEvent) -> dict[str, Any]:
        """Tell the heads that a check-in reported a reprisal (codes only), then record that
        they were told (ReprisalAlertSent): until then the workflow tries again. Transient mail
        failures retry (same Message-ID); a refusal for good becomes a staff warning and the
        alert counts as given (the warning shows in every inbox)."""
        case = await self._tracked(req.reference)
        if not case.reprisal_alert_pending:
            return case.summary()  # told already
        users = await asyncio.to_thread(self.store.list_users)
        heads = [u for u in users if u["active"] and u["email"] and HEAD in u["roles"]]
        to = list(dict.fromkeys(u["email"] for u in heads)) or list(
            self.config.escalation_contacts[max(self.config.escalation_contacts)])
        last = case.last_reprisal or {}
        composed = self._compose(lambda: self.composer.reprisal(
            reference=req.reference, level_before=last.get("level_before"),
            level=case.risk_level or case.urgency, held=list(last.get("held") or []),
            at=last.get("at") or req.at))
        await self._notify_staff(req.reference, req.command_id, {}, OutgoingMessage(
            sender=self.config.mail_from, to=to, subject=composed.subject, text=composed.text,
            message_id=make_message_id(req.reference, req.command_id, self.config.message_id_domain),
            headers={"X-Appeal-Kind": "reprisal"}))
        return await self._store(self.store.execute, req.reference, "record_reprisal_alert",
                                 {"notified": [u["username"] for u in heads], "at": req.at},
                                 SYSTEM, req.command_id)

    async def _takers(self, req: WaitingNotice) -> list[str]:
        """Who is told: the active users holding one of the decision's roles, as the web inbox
        shows it (a case officer's decision to the case's own officer; a clearance to every
        liaison but the verifier). When the case's officer cannot be mailed, every holder of the
        roles; when nobody can, the first escalation level's contacts."""
        users = await asyncio.to_thread(self.store.list_users)
        holders = [u for u in users if u["active"] and u["email"] and set(u["roles"]) & set(req.roles)
                   and u["username"] != req.not_by]
        if OFFICER in req.roles:
            own = [u for u in holders if u["username"] == req.assignee and OFFICER in u["roles"]]
            holders = own or holders
        emails = list(dict.fromkeys(u["email"] for u in holders))
        return emails or list(self.config.escalation_contacts[min(self.config.escalation_contacts)])


__all__ = ["TrackActivities"]
