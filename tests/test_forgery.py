"""Attempts to record a decision in someone else's name, against a real Temporal server, store and
SMTP sink: each is refused and records nothing.

A program that can reach Temporal used to send `record_clearance` with `actor: "lina"` and have it
recorded. Now the workers read only encrypted payloads, and every decision must carry an assertion
signed by a door that signed the person in, for exactly this case, decision and update.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from desk.assertions import issue
from tests.factories import T0, intake, verification
from tests.workflow_env import DECISION_KEY, CaseEnv, fixture_converter, settle
from workflows.inputs import ClearanceInput, ConsentInput, TracksStart, VerificationInput
from workflows.tracks import TrackedCaseWorkflow as WF


async def case_waiting_for_clearance(env: CaseEnv) -> WorkflowHandle[Any, Any]:
    handle = await env.start(requested_actions=["mfa"], refused_actions=[], eu_grant=None)
    await handle.execute_update(WF.record_verification, VerificationInput(
        "olga", {**verification(), "public_action_advised": False}))
    await handle.execute_update(WF.grant_consent, ConsentInput("olga", "mfa", consents=[{
        "defender": 0, "given_by": "defender", "channel": "phone",
        "given_at": (T0 - timedelta(days=400)).isoformat()}]))
    return handle


def clearance_recorded(env: CaseEnv) -> bool:
    return any(e.event.startswith("Clearance") for e in env.trail())


async def refused(handle: WorkflowHandle[Any, Any], req: ClearanceInput,
                  update_id: str | None = None) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(WF.record_clearance, req, id=update_id)
    return str(failed.value.cause)


def raw_client(env: CaseEnv, **config: Any) -> Client:
    """A client of the same server, with the payload key, but without the doors' signing."""
    base = {k: v for k, v in env.client.config().items() if k != "interceptors"}
    return Client(**{**base, "interceptors": [], **config})


async def test_a_client_without_the_payload_key_cannot_decide(
        tracked_env: CaseEnv) -> None:
    from temporalio.converter import DataConverter
    handle = await case_waiting_for_clearance(tracked_env)
    keyless = raw_client(tracked_env, data_converter=DataConverter.default)
    forged = keyless.get_workflow_handle(tracked_env.ref)
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await asyncio.wait_for(forged.execute_update(
            WF.record_clearance, ClearanceInput("lina", "mfa", True, "forged")), 20)
    assert not clearance_recorded(tracked_env)

    status = await handle.query(WF.status)
    assert status["tracks"]["mfa"]["clearance"] == "pending"


async def test_a_client_with_the_payload_key_but_not_the_signing_key_cannot_decide(
        tracked_env: CaseEnv) -> None:
    await case_waiting_for_clearance(tracked_env)
    forged = raw_client(tracked_env).get_workflow_handle(
        tracked_env.ref)
    reason = await refused(forged, ClearanceInput("lina", "mfa", True, "forged"))
    assert "no signed assertion" in reason
    wrong_key = issue(os.urandom(32), user="lina", roles=["ministry_liaison"],
                      case=tracked_env.ref, decision="record_clearance", update="u-1")
    reason = await refused(forged, ClearanceInput("lina", "mfa", True, "forged",
                                                  assertion=wrong_key), "u-1")
    assert "not validly signed" in reason
    assert not clearance_recorded(tracked_env)


@pytest.mark.parametrize("problem", ["expired", "replayed", "other_case", "other_decision",
                                     "other_person"])
async def test_a_misused_assertion_is_refused(tracked_env: CaseEnv, problem: str) -> None:
    await case_waiting_for_clearance(tracked_env)
    client = raw_client(tracked_env)
    handle = client.get_workflow_handle(tracked_env.ref)
    claims: dict[str, Any] = dict(user="lina", roles=["ministry_liaison"], case=tracked_env.ref,
                                  decision="record_clearance", update="u-2")
    update_id, actor = "u-2", "lina"
    if problem == "expired":
        claims["now"] = datetime.now(UTC) - timedelta(hours=1)
    elif problem == "replayed":
        update_id = "u-3"  # an assertion captured from update u-2, sent as another update
    elif problem == "other_case":
        claims["case"] = "UA-2026-OTHER1"
    elif problem == "other_decision":
        claims["decision"] = "grant_consent"
    else:
        actor = "hana"  # signed by lina, but the payload names someone else
    token = issue(DECISION_KEY, **claims)
    reason = await refused(handle, ClearanceInput(actor, "mfa", True, "ok", assertion=token),
                           update_id)
    assert "Not recorded" in reason
    assert not clearance_recorded(tracked_env)


async def test_a_signed_decision_records_who_signed_it(tracked_env: CaseEnv) -> None:
    handle = await case_waiting_for_clearance(tracked_env)
    await handle.execute_update(WF.record_clearance, ClearanceInput("lina", "mfa", True, "ok"),
                                id="clear-1")
    await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up", "cleared and sent")
    from sqlalchemy import select

    from store import schema
    with tracked_env.store.engine.connect() as conn:
        proofs = conn.execute(select(schema.decision_proofs)).mappings().all()
    mine = [p for p in proofs if p["command_id"] == f"{tracked_env.ref}/update/clear-1"]
    assert len(mine) == 1
    assert mine[0]["username"] == "lina" and mine[0]["decision"] == "record_clearance"


async def test_a_payload_under_another_key_is_rejected_without_stalling_the_case(
        tracked_env: CaseEnv) -> None:
    from worker.codec import make_data_converter
    from worker.keys import KeyRing
    handle = await case_waiting_for_clearance(tracked_env)
    stranger = raw_client(tracked_env, data_converter=make_data_converter(
        KeyRing.single(os.urandom(32)))).get_workflow_handle(tracked_env.ref)
    with pytest.raises(WorkflowUpdateFailedError):
        await asyncio.wait_for(stranger.execute_update(
            WF.record_clearance, ClearanceInput("lina", "mfa", True, "forged")), 20)
    status = await handle.execute_update(WF.record_clearance,
                                         ClearanceInput("lina", "mfa", True, "ok"))
    assert status["tracks"]["mfa"]["clearance"] == "granted"
    # Let the send finish: a send cut off by the test's end would hold the shared server's clock.
    await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up", "sent")


async def test_a_client_without_the_payload_key_cannot_open_a_case(tmp_path: Any) -> None:
    """On a time-skipping server of its own: a start whose input cannot be read leaves a workflow
    that fails its first task until it is terminated, which would stall a shared server."""
    from temporalio.converter import DataConverter
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from stack.harness import installed
    from store.app import CaseStore, sqlite_url
    from tests.backends import new_key
    from tests.smtp_sink import SmtpSink
    from tests.workflow_env import add_users, make_activities
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed("temporal-test-server"))
    store = CaseStore(sqlite_url(str(tmp_path / "events.sqlite")), new_key())
    add_users(store)
    try:
        with SmtpSink() as sink:
            client = Client(**{**env.client.config(), "data_converter": fixture_converter()})
            keyless = Client(**{**env.client.config(), "data_converter": DataConverter.default})
            queue = f"keyless-{uuid.uuid4().hex[:6]}"
            async with Worker(client, task_queue=queue, workflows=[WF],
                              activities=make_activities(store, sink).all()):
                other = f"UA-2026-{uuid.uuid4().hex[:6].upper()}"
                started = await keyless.start_workflow(
                    WF.run, TracksStart(other, intake(), "olga"), id=other, task_queue=queue)
                await asyncio.sleep(2)
                with pytest.raises(Exception, match="No case"):
                    store.trail(other)
                await started.terminate("forged start refused")
            assert sink.messages == []
    finally:
        store.close()
        await env.shutdown()
