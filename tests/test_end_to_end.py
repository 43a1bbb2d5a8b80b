"""End to end on the real Temporal dev server, with the worker as its own process, a real SMTP
server on loopback and the SQLite event store."""

from __future__ import annotations

import json
import os
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from store.app import verifier_without_key
from tests.dev_stack import HISTORIES, Stack
from tests.factories import DEFENDER_NAME, INCIDENT_TEXT, T0, intake, verification
from tests.workflow_env import settle
from workflows.inputs import ClearanceInput, CloseInput, ConsentInput, TracksStart, VerificationInput
from workflows.tracks import TrackedCaseWorkflow as CaseWorkflow

# The store event each kind of decision records.
DECISION_EVENTS = {"record_verification": "VerificationRecorded", "grant_consent": "ConsentGranted",
                   "refuse_consent": "ConsentRefused", "record_clearance": "ClearanceGranted",
                   "close": "Closed"}


# The defender consented personally, by secure message, the day before the case was opened, and
# agreed to be named in full (each message names each person as that person chose).
CONSENTS = [{"defender": 0, "given_by": "defender", "relationship": "", "channel": "secure_message",
             "given_at": T0.isoformat()}]


async def run_to_dispatch(stack: Stack, ref: str) -> WorkflowHandle[Any, Any]:
    """A case with per-action tracks (the workflow type every new case runs), up to its dispatch."""
    handle = await stack.client.start_workflow(
        CaseWorkflow.run, TracksStart(ref, intake(), "olga"), id=ref,
        task_queue=stack.settings.task_queue)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")
    await handle.execute_update(CaseWorkflow.record_verification,
                                VerificationInput("olga", verification()))
    for action in ("rapporteur", "mfa", "eu_delegation"):
        await handle.execute_update(CaseWorkflow.grant_consent, ConsentInput(
            "olga", action, "", consents=CONSENTS, publicity={"0": "full_names"}))
    for action in ("rapporteur", "mfa", "eu_delegation"):
        await handle.execute_update(CaseWorkflow.record_clearance,
                                    ClearanceInput("lina", action, True, "cleared"))
    return handle


# The notices that a decision waits, one per decision the case came to wait for on its way to
# dispatch: the verification, then consent and the ministry's clearance for each action.
NOTICES = sorted(["record_verification",
                  *(f"{d}/{a}" for d in ("grant_or_refuse_consent", "record_clearance")
                    for a in ("rapporteur", "mfa", "eu_delegation"))])


def appeals(stack: Stack) -> list[tuple[list[str], Any]]:
    """(recipients, message) of each appeal the SMTP server received (not the staff mail)."""
    return [(rcpts, m) for _, rcpts, m in stack.sink.messages if m["X-Appeal-Kind"] == "appeal"]


def notices(stack: Stack) -> dict[str, set[str]]:
    """Each waiting notice the SMTP server received, by decision: its Message-IDs (one each,
    however often it arrived) and recipients."""
    out: dict[str, set[str]] = {}
    for _, _, m in stack.sink.messages:
        if m["X-Appeal-Kind"] == "waiting":
            key = "/".join(k for k in (m["X-Appeal-Decision"], m["X-Appeal-Decision-Action"]) if k)
            out.setdefault(key, set()).add(m["Message-ID"])
    return out


def record_history(name: str, history_json: str) -> None:
    """With APPEALS_RECORD_HISTORIES=1, keep this run's history as a replay fixture."""
    if os.environ.get("APPEALS_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        # tracks_*: histories of the UrgentCaseTracks type, beside those of the older UrgentCase.
        (HISTORIES / f"tracks_{name}.json").write_text(history_json)


async def test_a_case_end_to_end(stack: Stack) -> None:
    stack.start_worker()
    ref = "UA-2026-E2E1"
    handle = await run_to_dispatch(stack, ref)
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    await handle.execute_update(CaseWorkflow.close, CloseInput("olga", "resolved", "released"))
    assert await handle.result() == "resolved"

    # The SMTP server received exactly the dispatched messages, and one notice per decision the
    # case came to wait for, to the staff who may take it.
    trail = stack.store.trail(ref)
    recorded = {e.details["message_id"]: e.details for e in trail if e.event == "MessageDispatched"}
    received = {m["Message-ID"]: (sorted(rcpts), m["Subject"]) for rcpts, m in appeals(stack)}
    assert set(received) == set(recorded) and len(appeals(stack)) == 3
    assert sorted(notices(stack)) == NOTICES
    staff = [(rcpts, m) for _, rcpts, m in stack.sink.messages if m["X-Appeal-Kind"] == "waiting"]
    assert len(staff) == len(NOTICES)
    for rcpts, m in staff:
        liaison = m["X-Appeal-Decision"] == "record_clearance"
        assert rcpts == [f"{'lina' if liaison else 'olga'}@secretariat.example.org"]
        assert ref in m["Subject"] and "Qwoxlandt" not in m.as_string()
    for message_id, (rcpts, subject) in received.items():
        assert rcpts == sorted(recorded[message_id]["recipients"])
        assert subject.endswith(f" – {ref}")

    # The store's events match the decisions in Temporal's history, update by update.
    history = await handle.fetch_history()
    accepted, succeeded = {}, set()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            accepted[request.meta.update_id] = request.input.name
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            attrs = event.workflow_execution_update_completed_event_attributes
            if attrs.outcome.HasField("success"):
                succeeded.add(attrs.meta.update_id)
    from_updates = {e.command_id.rsplit("/update/", 1)[1]: e.event for e in trail
                    if "/update/" in e.command_id}
    assert len(succeeded) == 8
    assert from_updates == {uid: DECISION_EVENTS[accepted[uid]] for uid in succeeded}
    assert stack.store.verify(ref).ok
    assert verifier_without_key(stack.settings.database_url).verify_reference(ref).ok

    # What Temporal stores holds no plaintext name or incident text.
    shown = stack.temporal("workflow", "show", "--workflow-id", ref, "--output", "json")
    assert json.loads(shown)  # it is the history, as JSON
    for secret in (DEFENDER_NAME, INCIDENT_TEXT, "Qwoxlandt", "Vrennick"):
        assert secret not in shown
    record_history("happy_path", history.to_json())


async def test_killing_the_worker_mid_case_loses_nothing_and_sends_nothing_twice(stack: Stack) -> None:
    stack.sink.data_delay = 1.5  # slow relay: the kill lands while messages are going out
    stack.start_worker()
    ref = "UA-2026-E2E2"
    handle = await run_to_dispatch(stack, ref)
    await settle(handle, lambda s: len(appeals(stack)) >= 1, "first message sent")
    stack.kill_worker()
    stack.sink.data_delay = 0
    stack.start_worker()
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up after restart",
                 seconds=90)
    await handle.execute_update(CaseWorkflow.close, CloseInput("olga", "resolved", "released"))
    assert await handle.result() == "resolved"

    trail = stack.store.trail(ref)
    assert len({e.command_id for e in trail}) == len(trail) - trail_closing_extra(trail)
    dispatches = [e.details for e in trail if e.event == "MessageDispatched"]
    assert sorted(d["action"] for d in dispatches) == ["eu_delegation", "mfa", "rapporteur"]
    recorded_ids = {d["message_id"] for d in dispatches}
    received_ids = [m["Message-ID"] for _, m in appeals(stack)]
    # A message may reach the server twice only under its one stable Message-ID.
    assert set(received_ids) == recorded_ids
    assert set(notices(stack)) <= set(NOTICES)
    assert all(len(ids) == 1 for ids in notices(stack).values())
    print(f"messages received {len(received_ids)} for {len(recorded_ids)} dispatches; "
          f"events {len(trail)}")
    assert stack.store.verify(ref).ok
    record_history("worker_killed", (await handle.fetch_history()).to_json())


def trail_closing_extra(trail: list[Any]) -> int:
    """Events that share a command id by design: an unverified verdict closes in the same command."""
    return sum(1 for a, b in zip(trail, trail[1:], strict=False) if a.command_id == b.command_id)


async def test_a_long_case_continues_as_new_and_keeps_its_state(short_history_stack: Stack) -> None:
    stack = short_history_stack
    stack.start_worker()
    ref = "UA-2026-E2E3"
    handle = await run_to_dispatch(stack, ref)
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    # A client repeating its verification update (same update id) in a later run records nothing.
    first = await stack.client.get_workflow_handle(ref, run_id=handle.first_execution_run_id
                                                   ).fetch_history()
    verification_id = next(
        e.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id
        for e in first.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    latest = stack.client.get_workflow_handle(ref)
    before = len(stack.store.trail(ref))
    await latest.execute_update(CaseWorkflow.record_verification,
                                VerificationInput("olga", verification()), id=verification_id)
    assert len(stack.store.trail(ref)) == before
    await latest.execute_update(CaseWorkflow.close, CloseInput("olga", "resolved", "released"))
    assert await latest.result() == "resolved"

    description = await latest.describe()
    assert description.run_id != handle.first_execution_run_id, "the case never continued as new"
    runs = [e async for e in stack.client.list_workflows(f"WorkflowId = '{ref}'")]
    trail = stack.store.trail(ref)
    assert len({e.command_id for e in trail}) == len(trail)
    assert sorted(e.details["action"] for e in trail if e.event == "MessageDispatched") == [
        "eu_delegation", "mfa", "rapporteur"]
    assert len(appeals(stack)) == 3
    # Each decision was announced once, although the runs after the first carried on without it.
    assert sorted(notices(stack)) == NOTICES
    assert len([m for _, _, m in stack.sink.messages if m["X-Appeal-Kind"] == "waiting"]) == 7
    print(f"case ran in {len(runs)} runs; {len(trail)} events")
    record_history("continued_as_new", (await latest.fetch_history()).to_json())
