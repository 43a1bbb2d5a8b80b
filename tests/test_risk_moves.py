"""Risk that moves (issue 14, item 4), on the time-skipping test server with a real SQLite store
and the real SMTP sink: a re-assessment moves the deadlines of the decisions the case waits for
(an escalation then comes at the new level's time); a check-in that reports a reprisal raises the
risk one level, alerts the heads by mail (codes only), and holds every message to a channel that
may act in public until a case officer confirms; each of these is an event in the store."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.factories import verification
from tests.test_tracks_workflow import appeals_sent, clear, grant
from tests.test_waiting_notices import no_personal_data, text_of
from tests.workflow_env import CaseEnv, keep_history, settle
from workflows.inputs import (
    CheckinInput,
    ConfirmPublicInput,
    InformationInput,
    ReassessInput,
    VerificationInput,
)
from workflows.tracks import TrackedCaseWorkflow as WF

TWO_ACTIONS = {"requested_actions": ["rapporteur", "mfa"], "refused_actions": [], "eu_grant": None}


async def verify(handle: Any, probability: int, impact: int) -> dict[str, Any]:
    return await handle.execute_update(WF.record_verification, VerificationInput(
        "olga", {**verification(probability=probability, impact=impact),
                 "public_action_advised": True}))


def deadline(status: dict[str, Any], action: str) -> datetime:
    return datetime.fromisoformat(status["tracks"][action]["deadline"])


async def test_a_reassessment_moves_the_deadlines_of_what_waits(tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(**TWO_ACTIONS)
    before = await verify(handle, 1, 2)  # low: consent may wait ten days
    assert before["risk_level"] == "low"
    low = deadline(before, "mfa")
    # Bad input is refused by name, before anything is recorded.
    for bad, field in (({"probability": 9}, "probability"), ({"reason": " "}, "reason")):
        args = {"probability": 5, "impact": 5, "reason": "Hearing moved forward", **bad}
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update(WF.reassess_risk, ReassessInput("olga", **args))
        assert field in str(caught.value.cause)
    assert "RiskReassessed" not in tracked_env.events()

    now = await tracked_env.env.get_current_time()
    status = await handle.execute_update(WF.reassess_risk, ReassessInput(
        "olga", 5, 5, "The hearing was moved forward to Monday"))
    assert status["risk_level"] == "critical"
    critical = deadline(status, "mfa")
    assert critical < low and critical - now <= timedelta(hours=12, minutes=1)
    [event] = [e for e in tracked_env.trail() if e.event == "RiskReassessed"]
    assert (event.actor, event.details["level_before"], event.details["level"]) == (
        "olga", "low", "critical")

    # The consent is now due in twelve hours: its escalation comes then, not in ten days.
    await tracked_env.env.sleep(timedelta(hours=12, minutes=5))
    await settle(handle, lambda s: s["tracks"]["mfa"]["escalation_level"] >= 1, "escalated")
    escalated = [e for e in tracked_env.trail() if e.event == "DeadlineEscalated"]
    assert {e.details["action"] for e in escalated} >= {"mfa", "rapporteur"}

    # A lower risk never moves a deadline earlier: with further information it is re-assessed
    # down, and the deadline moves later (the low level's time from now).
    current = deadline(await handle.query(WF.status), "mfa")
    status = await handle.execute_update(WF.add_further_information, InformationInput(
        "olga", "The hearing was postponed again", reassessment={
            "probability": 1, "impact": 1, "reason": "Hearing postponed"}))
    assert status["risk_level"] == "low" and deadline(status, "mfa") > current
    await keep_history(handle, "tracks_reassessed")


async def test_a_reprisal_alerts_the_heads_and_holds_public_actions_until_confirmed(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(**TWO_ACTIONS)
    status = await verify(handle, 2, 3)  # 6: medium
    assert status["risk_level"] == "medium"
    await grant(handle, "rapporteur")
    status = await grant(handle, "mfa")
    waited = deadline(status, "mfa")

    status = await handle.execute_update(WF.record_checkin, CheckinInput(
        "olga", "Her office was searched after the hearing", reprisals=True))
    assert status["risk_level"] == "high" and status["public_hold"] is True
    assert {a: t["public_hold"] for a, t in status["tracks"].items()} == {
        "rapporteur": True, "mfa": True}
    assert deadline(status, "mfa") < waited  # higher risk: the clearance is due sooner
    assert "confirm_public_actions" in [p["decision"] for p in status["pending"]]

    # The heads are told (by mail, codes only), and that they were told is recorded.
    for _ in range(100):
        if tracked_env.sent("reprisal") and "ReprisalAlertSent" in tracked_env.events():
            break
        await asyncio.sleep(0.1)
    [(_, rcpts, alert)] = [(f, r, m) for f, r, m in tracked_env.sink.messages
                           if m["X-Appeal-Kind"] == "reprisal"]
    assert rcpts == ["hana@secretariat.example.org"]
    text = text_of(alert)
    assert tracked_env.ref in alert["Subject"] and "medium -> high" in text
    assert "UN Special Procedures" in text and "appeals case confirm-public" in text
    no_personal_data(alert)
    events = tracked_env.events()
    assert events.index("ReprisalReported") == events.index("DefenderCheckInRecorded") + 1
    [sent] = [e for e in tracked_env.trail() if e.event == "ReprisalAlertSent"]
    assert sent.details["notified"] == ["hana"]

    # Cleared while held: nothing goes to the ministry until a case officer confirms.
    await clear(handle, "mfa")
    await clear(handle, "rapporteur")
    await tracked_env.env.sleep(timedelta(minutes=30))
    status = await handle.query(WF.status)
    assert status["tracks"]["mfa"]["step"] == "dispatch"
    assert status["tracks"]["mfa"]["dispatch"] == "pending"
    assert appeals_sent(tracked_env) == {}
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(WF.confirm_public_actions, ConfirmPublicInput("olga", ""))
    assert "reason" in str(caught.value.cause)
    status = await handle.execute_update(WF.confirm_public_actions, ConfirmPublicInput(
        "olga", "The defender asks us to go on; the search was unrelated to the appeal"))
    assert status["public_hold"] is False
    await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up"
                 and s["tracks"]["rapporteur"]["step"] == "follow_up", "both sent")
    assert set(appeals_sent(tracked_env)) == {"mfa", "rapporteur"}
    assert "PublicActionsResumed" in tracked_env.events()
    # Nothing left to confirm.
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(WF.confirm_public_actions, ConfirmPublicInput("olga", "again"))
    assert "nothing to confirm" in str(caught.value.cause)
    assert tracked_env.store.get(tracked_env.ref).reprisals == 1
    await keep_history(handle, "tracks_reprisal")


async def test_a_decision_recorded_as_a_local_activity_is_recorded_once_under_retries(
        tracked_env: CaseEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decisions are recorded by local activities (LOCAL_RECORDS_PATCH): the store commits, then
    the answer is lost (as a dropped connection would lose it); the local activity runs again with
    the same command id, finds the first result, and the decision is recorded once."""
    from sqlalchemy.exc import OperationalError

    store = tracked_env.activities.store
    handle = await tracked_env.start(**TWO_ACTIONS)
    real = store.execute
    lost: list[str] = []

    def committed_then_lost(reference: str, command: str, *args: Any, **kwargs: Any) -> Any:
        result = real(reference, command, *args, **kwargs)
        if command == "record_verification" and not lost:
            lost.append(command)
            raise OperationalError("commit answer", {}, Exception("connection dropped"))
        return result

    monkeypatch.setattr(store, "execute", committed_then_lost)
    status = await verify(handle, 2, 3)
    assert status["stage"] == "consent" and lost == ["record_verification"]
    assert tracked_env.events().count("VerificationRecorded") == 1
    history = await handle.fetch_history()
    kinds = {e.event_type for e in history.events}
    from temporalio.api.enums.v1 import EventType

    # Recorded through markers of the workflow task, not a scheduled activity task.
    assert EventType.EVENT_TYPE_MARKER_RECORDED in kinds
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert "apply_command" not in scheduled and "open_tracked_case" not in scheduled
    await grant(handle, "mfa")
    await clear(handle, "mfa")
    await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up", "mfa sent")
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in (await handle.fetch_history()).events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert "dispatch_track" in scheduled  # sends stay regular activities
    await keep_history(handle, "tracks_local_records")
