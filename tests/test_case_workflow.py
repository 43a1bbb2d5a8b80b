"""The case workflow on the time-skipping test server, with a real SQLite store and SMTP sink."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from activities.messages import TEMPLATES, Composer
from domain.addressbook import AddressBook
from domain.routing import Mandate
from tests.factories import verification
from tests.workflow_env import CONTACTS, CaseEnv, settle
from workflows.case import CaseWorkflow
from workflows.inputs import (
    CheckinInput,
    ClearanceInput,
    CloseInput,
    ConsentInput,
    ExtensionInput,
    InformationInput,
    ResponseInput,
    VerificationInput,
)


async def verify(handle: WorkflowHandle[Any, Any], actor: str = "olga", **kw: Any) -> dict[str, Any]:
    return await handle.execute_update(CaseWorkflow.record_verification,
                                       VerificationInput(actor, verification(**kw)))


async def consent(handle: WorkflowHandle[Any, Any], grants: dict[str, bool]) -> None:
    for action, granted in grants.items():
        update = CaseWorkflow.grant_consent if granted else CaseWorkflow.refuse_consent
        await handle.execute_update(update, ConsentInput("olga", action, "initials only"))


async def clear(handle: WorkflowHandle[Any, Any], action: str, granted: bool = True) -> dict[str, Any]:
    return await handle.execute_update(CaseWorkflow.record_clearance,
                                       ClearanceInput("lina", action, granted, "ok"))


def dispatched(env: CaseEnv) -> dict[str, str]:
    """Action -> Message-ID of every appeal recorded in the store."""
    return {e.details["action"]: e.details["message_id"] for e in env.trail()
            if e.event == "MessageDispatched" and e.details["kind"] == "appeal"}


# ------------------------------------------------------------------------------- the stages
async def test_happy_path_sends_every_consented_and_cleared_action_and_closes(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    status = await verify(handle)
    assert status["stage"] == "consent" and status["risk_level"] == "critical"
    await consent(handle, {"rapporteur": True, "mfa": True, "eu_delegation": True})
    for action in ("rapporteur", "mfa"):
        await clear(handle, action)
    await clear(handle, "eu_delegation")
    status = await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    assert {a: s["dispatch"] for a, s in status["actions"].items()} == {
        "rapporteur": "sent", "mfa": "sent", "eu_delegation": "sent"}

    received = {m["X-Appeal-Kind"] + ":" + m["Message-ID"]: m for m in case_env.sent("appeal")}
    assert sorted(received) == sorted(f"appeal:{mid}" for mid in dispatched(case_env).values())
    by_action = {e.details["action"]: e.details for e in case_env.trail()
                 if e.event == "MessageDispatched"}
    for _, rcpts, message in case_env.sink.messages:
        action = next(a for a, d in by_action.items() if d["message_id"] == message["Message-ID"])
        assert sorted(rcpts) == sorted(by_action[action]["recipients"])
        assert message["Subject"].endswith(f" – {case_env.ref}")
    assert "defenders@ohchr.org" in by_action["rapporteur"]["recipients"]

    await handle.execute_update(CaseWorkflow.record_response,
                                ResponseInput("olga", "rapporteur", "Acknowledged by OHCHR"))
    await handle.execute_update(CaseWorkflow.record_checkin, CheckinInput("olga", "Safe", False))
    await handle.execute_update(CaseWorkflow.close, CloseInput("olga", "resolved", "Released"))
    assert await handle.result() == "resolved"
    assert case_env.events() == [
        "Opened", "VerificationRecorded", "ConsentGranted", "ConsentGranted", "ConsentGranted",
        "ClearanceGranted", "ClearanceGranted", "ClearanceGranted", "MessageDispatched",
        "MessageDispatched", "MessageDispatched", "ResponseRecorded", "DefenderCheckInRecorded",
        "Closed"]
    assert case_env.store.verify(case_env.ref).ok


async def test_unverified_threat_closes_the_case_and_sends_nothing(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle, verdict="unverified")
    assert await handle.result() == "unverified"
    assert case_env.events() == ["Opened", "VerificationRecorded", "Closed"]
    assert case_env.sink.messages == []


async def test_only_consented_actions_are_sent(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    await clear(handle, "rapporteur")
    status = await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    assert status["actions"]["mfa"]["dispatch"] == "pending"
    assert list(dispatched(case_env)) == ["rapporteur"]
    assert [m["Message-ID"] for m in case_env.sent("appeal")] == [dispatched(case_env)["rapporteur"]]


async def test_consent_withdrawn_after_clearance_is_never_sent(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": True, "eu_delegation": False})
    await clear(handle, "rapporteur")  # cleared; mfa still waits, so nothing goes out yet
    await handle.execute_update(CaseWorkflow.withdraw_consent,
                                ConsentInput("olga", "rapporteur", "grantee fears reprisals"))
    await clear(handle, "mfa")
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    assert list(dispatched(case_env)) == ["mfa"]
    assert len(case_env.sent("appeal")) == 1


async def test_denied_clearance_is_never_sent(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": True, "eu_delegation": False})
    await clear(handle, "rapporteur", granted=False)
    await clear(handle, "mfa")
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    assert list(dispatched(case_env)) == ["mfa"]
    assert case_env.sent("appeal")[0]["Message-ID"] == dispatched(case_env)["mfa"]


async def test_permanent_smtp_failure_is_recorded_and_escalated_at_once(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    case_env.sink.rcpt_reply = "550 mailbox unavailable"
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["actions"]["rapporteur"]["dispatch"] == "failed",
                   "failed dispatch")
    escalation = next(e for e in case_env.trail() if e.event == "DeadlineEscalated")
    assert escalation.details["stage"] == "dispatch" and escalation.details["level"] == 1
    events = case_env.events()
    # Escalated while still at the dispatch stage (its mail, refused too, becomes a warning), then
    # the failure is recorded.
    assert events[-3:] == ["DeadlineEscalated", "StaffWarningRaised", "DispatchFailed"]
    failure = next(e for e in case_env.trail() if e.event == "DispatchFailed")
    assert "550" in failure.details["reason"] and "PermanentMailError" in failure.details["reason"]
    # The 550 also refused the escalation mail: that becomes a warning on the case, not a crash.
    assert case_env.sink.messages == []
    await settle(handle, lambda s: "StaffWarningRaised" in case_env.events(), "warning")


# -------------------------------------------------------------------------------- deadlines
def escalations(env: CaseEnv) -> list[tuple[str, int, datetime]]:
    return [(e.details["stage"], e.details["level"], e.details["at"])
            for e in env.trail() if e.event == "DeadlineEscalated"]


def entered(env: CaseEnv, event: str) -> datetime:
    at: datetime = next(e.details["at"] for e in env.trail() if e.event == event)
    return at


@pytest.mark.parametrize(
    ("stage", "deadline"),
    [
        # urgency "high" before verification: 24 h
        ("verification", timedelta(hours=24)),
        # verified at probability 4 x impact 4 = critical: 12 h for consent and for clearance
        ("consent", timedelta(hours=12)),
        ("clearance", timedelta(hours=12)),
    ],
)
async def test_each_stage_escalates_exactly_at_its_deadline_then_one_level_up(
        case_env: CaseEnv, stage: str, deadline: timedelta) -> None:
    handle = await case_env.start()
    if stage != "verification":
        await verify(handle)
    if stage == "clearance":
        await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    status = await handle.query(CaseWorkflow.status)
    assert status["stage"] == stage
    start = case_env.trail()[-1].details["at"]  # the decision that entered the stage

    await case_env.env.sleep(deadline - timedelta(minutes=1))
    assert escalations(case_env) == []
    await case_env.env.sleep(timedelta(minutes=1))
    await settle(handle, lambda s: s["escalation_level"] == 1, "first escalation")
    await case_env.env.sleep(deadline)
    await settle(handle, lambda s: s["escalation_level"] == 2, "second escalation")
    assert escalations(case_env) == [(stage, 1, start + deadline), (stage, 2, start + 2 * deadline)]
    mails = case_env.sent("escalation")
    assert [m["To"] for m in mails] == [CONTACTS[1][0], CONTACTS[2][0]]
    assert all(case_env.ref in m["Subject"] and stage in m["Subject"] for m in mails)


async def test_an_extension_moves_the_deadline(case_env: CaseEnv) -> None:
    handle = await case_env.start()  # verification due 24 h after opening
    opened = entered(case_env, "Opened")
    new_deadline = opened + timedelta(hours=30)
    status = await handle.execute_update(
        CaseWorkflow.extend_deadline, ExtensionInput("hana", new_deadline, "source travelling"))
    assert datetime.fromisoformat(status["deadline"]) == new_deadline
    await case_env.env.sleep(timedelta(hours=29, minutes=59))
    assert escalations(case_env) == []
    await case_env.env.sleep(timedelta(minutes=2))
    await settle(handle, lambda s: s["escalation_level"] == 1, "escalation after the extension")
    assert escalations(case_env) == [("verification", 1, new_deadline)]
    extension = next(e for e in case_env.trail() if e.event == "DeadlineExtended")
    assert extension.actor == "hana" and extension.details["reason"] == "source travelling"


async def test_follow_up_reminds_the_case_officer(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    await case_env.env.sleep(timedelta(days=3, minutes=1))  # first follow-up, critical: 3 days
    await settle(handle, lambda s: bool(case_env.sent("reminder-follow_up")), "reminder")
    reminder = case_env.sent("reminder-follow_up")[0]
    assert reminder["To"] == "olga@secretariat.example.org" and case_env.ref in reminder["Subject"]
    assert "ReminderSent" in case_env.events()


# ------------------------------------------------------------------------------ bad updates
async def rejected(handle: WorkflowHandle[Any, Any], update: Any, arg: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(update, arg)
    cause = info.value.cause
    return str(getattr(cause, "message", cause))


async def test_every_kind_of_bad_update_is_rejected_with_its_reason_and_records_nothing(
        case_env: CaseEnv) -> None:
    case_env.store.add_user("vera", "Vera", "vera@secretariat.example.org",
                            ["case_officer", "ministry_liaison"])
    handle = await case_env.start()
    before = case_env.events()
    bad_verification = verification(probability=9)
    cases: list[tuple[Any, Any, str]] = [
        (CaseWorkflow.record_verification, VerificationInput("olga", bad_verification), "probability"),
        (CaseWorkflow.record_verification, VerificationInput("", verification()), "actor:"),
        (CaseWorkflow.record_verification, VerificationInput("mallory", verification()),
         "not registered"),
        (CaseWorkflow.record_verification, VerificationInput("lina", verification()),
         "Only a case officer may"),
        (CaseWorkflow.grant_consent, ConsentInput("olga", "rapporteur"), "at the verification stage"),
        (CaseWorkflow.extend_deadline, ExtensionInput("olga", datetime.fromisoformat(
            "2099-01-01T00:00:00+00:00"), "why"), "Only a head may"),
        (CaseWorkflow.extend_deadline, ExtensionInput("hana", datetime.fromisoformat(
            "2000-01-01T00:00:00+00:00"), "why"), "must move the current deadline later"),
        (CaseWorkflow.close, CloseInput("olga", "forgotten"), "outcome: must be one of"),
    ]
    for update, arg, message in cases:
        assert message in await rejected(handle, update, arg), message
    assert case_env.events() == before

    await verify(handle, actor="vera")
    before = case_env.events()
    cases = [
        (CaseWorkflow.record_verification, VerificationInput("olga", verification()),
         "at the consent stage"),
        (CaseWorkflow.grant_consent, ConsentInput("olga", "teleport"), "is not one of the actions"),
        (CaseWorkflow.grant_consent, ConsentInput("olga", "emergency_fund"), "is not one of the actions"),
        (CaseWorkflow.record_clearance, ClearanceInput("lina", "mfa", True), "at the consent stage"),
        (CaseWorkflow.withdraw_consent, ConsentInput("olga", "mfa"), "is not granted"),
        (CaseWorkflow.record_response, ResponseInput("olga", "mfa", "x"), "No message was sent"),
    ]
    for update, arg, message in cases:
        assert message in await rejected(handle, update, arg), message
    assert case_env.events() == before

    await consent(handle, {"rapporteur": True, "mfa": True, "eu_delegation": False})
    before = case_env.events()
    cases = [
        (CaseWorkflow.record_clearance, ClearanceInput("vera", "mfa", True), "cannot also clear it"),
        (CaseWorkflow.record_clearance, ClearanceInput("olga", "mfa", True),
         "Only a ministry liaison may"),
        (CaseWorkflow.record_clearance, ClearanceInput("lina", "eu_delegation", True),
         "not waiting for clearance"),
    ]
    for update, arg, message in cases:
        assert message in await rejected(handle, update, arg), message
    assert case_env.events() == before
    assert case_env.sink.messages == []
    await handle.terminate("test over")


async def test_further_information_goes_to_every_earlier_recipient_as_a_reply(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": True, "eu_delegation": False})
    await clear(handle, "rapporteur")
    await clear(handle, "mfa")
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    await handle.execute_update(CaseWorkflow.add_further_information, InformationInput(
        "olga", "The trial was moved to 3 December.", send_to_recipients=True))
    appeals = {m["Message-ID"]: rcpts for _, rcpts, m in case_env.sink.messages
               if m["X-Appeal-Kind"] == "appeal"}
    further = [(rcpts, m) for _, rcpts, m in case_env.sink.messages
               if m["X-Appeal-Kind"] == "further_information"]
    assert len(further) == 2
    for rcpts, message in further:
        assert message["In-Reply-To"] in appeals and sorted(rcpts) == sorted(appeals[message["In-Reply-To"]])
        assert "moved to 3 December" in message.get_content()
    kinds = [e.details["kind"] for e in case_env.trail() if e.event == "MessageDispatched"]
    assert kinds == ["appeal", "appeal", "further_information", "further_information"]


async def test_defender_check_in_reminders_come_at_regular_intervals(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    await case_env.env.sleep(timedelta(days=14, minutes=1))  # check-in interval: 14 days
    await settle(handle, lambda s: bool(case_env.sent("reminder-checkin")), "check-in reminder")
    reminders = [e for e in case_env.trail() if e.event == "ReminderSent"]
    assert {e.details["kind"] for e in reminders} == {"follow_up", "checkin"}
    status = await handle.query(CaseWorkflow.status)
    checkin_at = next(e.details["at"] for e in reminders if e.details["kind"] == "checkin")
    assert datetime.fromisoformat(status["next_checkin"]) == checkin_at + timedelta(days=14)


async def test_a_transient_smtp_failure_is_retried_until_the_message_goes_out(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    case_env.sink.data_reply = "451 local error, try again later"
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: case_env.sink.refused >= 1, "first attempt refused")
    case_env.sink.data_reply = None
    status = await settle(handle, lambda s: s["stage"] == "follow_up", "sent on retry", seconds=60)
    assert status["actions"]["rapporteur"]["dispatch"] == "sent"
    assert case_env.sink.connections >= 2 and len(case_env.sent("appeal")) == 1
    assert "DispatchFailed" not in case_env.events()


async def test_a_message_missing_required_fields_is_held_until_further_information(
        case_env: CaseEnv) -> None:
    from tests.factories import intake
    organisation = {**intake()["organisation"], "contact_name": ""}
    handle = await case_env.start(organisation=organisation)
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": True, "eu_delegation": False})
    await clear(handle, "rapporteur")
    await clear(handle, "mfa")
    status = await settle(handle, lambda s: bool(s["held"]) and s["actions"]["mfa"]["dispatch"] == "sent",
                          "rapporteur held, mfa sent")
    assert status["held"] == {"rapporteur": ["organisation.contact_name"]} and status["stage"] == "dispatch"
    assert {"decision": "add_further_information", "roles": ["case_officer"], "action": "rapporteur",
            "missing": ["organisation.contact_name"]} in status["pending"]
    notice = case_env.sent("dispatch-held")
    assert len(notice) == 1 and notice[0]["To"] == "olga@secretariat.example.org"
    assert "organisation.contact_name" in notice[0].get_content()
    assert [m["Message-ID"] for m in case_env.sent("appeal")] == [dispatched(case_env)["mfa"]]

    reason = await rejected(handle, CaseWorkflow.add_further_information, InformationInput(
        "olga", "x", intake_changes={"country": "FR"}))
    assert "intake_changes.country: cannot be changed" in reason
    await handle.execute_update(CaseWorkflow.add_further_information, InformationInput(
        "olga", "Contact named", intake_changes={"organisation": {"contact_name": "Dalia Orvenne"}}))
    status = await settle(handle, lambda s: s["stage"] == "follow_up", "sent after completion")
    assert status["held"] == {} and sorted(dispatched(case_env)) == ["mfa", "rapporteur"]
    assert case_env.events().count("DispatchHeld") == 1


async def test_an_emergency_fund_application_goes_to_the_best_matching_fund(case_env: CaseEnv) -> None:
    handle = await case_env.start(
        requested_actions=["emergency_fund"], refused_actions=[], eu_grant=None,
        fund_request={"amount_eur": 12000, "purpose": "legal_fees", "costs_already_incurred": False,
                      "in_exile": False})
    await verify(handle)
    await handle.execute_update(CaseWorkflow.grant_consent, ConsentInput("olga", "emergency_fund"))
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    [(_, rcpts, message)] = case_env.sink.messages
    funds = {f.address: f for f in case_env.activities.funds}
    fund = funds[rcpts[0]]
    assert fund.status == "available" and message["X-Appeal-Action"] == "emergency_fund"
    assert fund.sendable  # the only kind of fund a case opened before staff chose funds can use
    assert " ".join(fund.name.split()[:3]) in message.get_content()
    assert case_env.ref in message["Subject"]


async def test_a_message_that_cannot_be_rendered_is_never_sent_and_is_escalated(
        case_env: CaseEnv, tmp_path: Path) -> None:
    broken = tmp_path / "templates"
    shutil.copytree(TEMPLATES, broken)
    text = broken / "messages" / "rapporteur.txt"
    text.write_text(text.read_text() + "{{ a_value_nobody_provides }}\n")
    case_env.activities.composer = Composer(broken)
    handle = await case_env.start()
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["actions"]["rapporteur"]["dispatch"] == "failed",
                   "failed dispatch")
    assert "DeadlineEscalated" in case_env.events()
    failure = next(e for e in case_env.trail() if e.event == "DispatchFailed")
    assert "MessageError" in failure.details["reason"]
    assert "a_value_nobody_provides" in failure.details["reason"]
    assert case_env.sent("appeal") == []


async def test_a_routed_mandate_without_an_address_is_warned_about(case_env: CaseEnv) -> None:
    book = case_env.activities.book
    case_env.activities.book = AddressBook(tuple(e for e in book.entries
                                                 if e.mandate != Mandate.EXPRESSION))
    handle = await case_env.start()  # a journalist: routed to the expression mandate too
    await verify(handle)
    await consent(handle, {"rapporteur": True, "mfa": False, "eu_delegation": False})
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    [warning] = [e.details["warning"] for e in case_env.trail() if e.event == "StaffWarningRaised"]
    assert "freedom_of_expression" in warning
    [(_, rcpts, _)] = case_env.sink.messages
    assert "urgent-action@ohchr.org" in rcpts and "freedex@ohchr.org" not in rcpts
