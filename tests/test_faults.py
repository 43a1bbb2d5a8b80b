"""Fault suites (issue 8, item 2): an SMTP outage, the Temporal dev server restarted, the worker
killed at random points, the database connection dropped during writes, and racing decisions.

Every test is bounded in time; the figures each one prints (`-s`) are the evidence for the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from activities.mail import Mailer, OutgoingMessage
from domain.errors import ActionAlreadyDecided, CaseRuleError
from store.app import CaseStore, StoreError, sqlite_url, verifier_without_key
from tests.backends import PG_ADMIN_URL, Backend, fresh_postgres_database, new_key
from tests.dev_stack import DevServer, Stack, free_port, running_dev_server, running_stack
from tests.factories import T0, intake, open_args, verification
from tests.smtp_sink import SmtpSink
from tests.workflow_env import CaseEnv, settle
from workflows.case import CaseWorkflow
from workflows.inputs import CaseStart, ClearanceInput, CloseInput, ConsentInput, VerificationInput

ACTIONS = ("rapporteur", "mfa", "eu_delegation")


# ================================================================================== helpers
async def only_rapporteur_to_dispatch(handle: WorkflowHandle[Any, Any]) -> None:
    """Verified critical (4 x 4): the dispatch deadline is 1 h; only the OHCHR letter goes."""
    await handle.execute_update(CaseWorkflow.record_verification, VerificationInput("olga", verification()))
    await handle.execute_update(CaseWorkflow.grant_consent, ConsentInput("olga", "rapporteur"))
    for action in ("mfa", "eu_delegation"):
        await handle.execute_update(CaseWorkflow.refuse_consent, ConsentInput("olga", action, "no"))
    await handle.execute_update(CaseWorkflow.record_clearance, ClearanceInput("lina", "rapporteur", True))


class OutageMailer:
    """The worker's mailer, but while the outage lasts (in the server's clock, so the time-skipping
    server can run it fast) every send goes to a port nobody listens on: connection refused."""

    def __init__(self, env: CaseEnv, outage: timedelta) -> None:
        self.env, self.real = env, env.activities.mailer
        self.dead = Mailer(host="127.0.0.1", port=free_port(), timeout=5, starttls_required=False,
                           live=False)
        self.outage, self.until, self.refused = outage, None, 0

    async def send(self, message: OutgoingMessage) -> None:
        now = await self.env.env.get_current_time()
        if self.until is None:
            self.until = now + self.outage
        if now < self.until:
            self.refused += 1
            await self.dead.send(message)  # raises TransientMailError (connection refused)
        await self.real.send(message)


async def smtp_outage(case_env: CaseEnv, outage: timedelta) -> tuple[OutageMailer, WorkflowHandle[Any, Any]]:
    mailer = OutageMailer(case_env, outage)
    case_env.activities.mailer = mailer  # type: ignore[assignment]
    handle = await case_env.start()
    await only_rapporteur_to_dispatch(handle)
    return mailer, handle


# ============================================================================ 1. SMTP outage
async def test_smtp_refusing_connections_for_a_while_retries_then_delivers_once(case_env: CaseEnv) -> None:
    mailer, handle = await smtp_outage(case_env, timedelta(minutes=3))
    await case_env.env.sleep(timedelta(minutes=6))  # retry backoffs are server timers: skip them
    status = await settle(handle, lambda s: s["stage"] == "follow_up", "delivered after the outage")
    assert status["actions"]["rapporteur"]["dispatch"] == "sent"
    appeals = case_env.sent("appeal")
    assert len(appeals) == 1 and [appeals[0]["Message-ID"]] == status["actions"]["rapporteur"]["message_ids"]
    events = case_env.events()
    assert events.count("MessageDispatched") == 1
    assert "DispatchFailed" not in events and "DeadlineEscalated" not in events
    assert len({e.command_id for e in case_env.trail()}) == len(events)
    print(f"3-minute outage: {mailer.refused} refused attempts, then 1 delivery, {len(events)} events")
    assert mailer.refused == 6  # backoff 5, 10, 20, 40, 80 s: the 7th attempt (after 160 s more) goes


async def test_an_outage_longer_than_the_dispatch_deadline_is_escalated_and_sending_goes_on(
        case_env: CaseEnv) -> None:
    mailer, handle = await smtp_outage(case_env, timedelta(hours=2))
    await case_env.env.sleep(timedelta(hours=1, minutes=5))  # the critical dispatch deadline: 1 h
    await settle(handle, lambda s: "DeadlineEscalated" in case_env.events(), "escalated")
    assert case_env.sent("appeal") == []  # nothing went out during the outage
    escalation = next(e for e in case_env.trail() if e.event == "DeadlineEscalated")
    assert escalation.details["stage"] == "dispatch" and escalation.details["level"] == 1
    assert "DispatchFailed" not in case_env.events()  # an outage is not a failure: it goes on
    # The outage ends: the appeal goes out once, and each escalation reaches the staff once.
    await case_env.env.sleep(timedelta(hours=1, minutes=30))
    status = await settle(handle, lambda s: s["stage"] == "follow_up", "delivered after the outage")
    assert status["actions"]["rapporteur"]["dispatch"] == "sent"
    assert len(case_env.sent("appeal")) == 1 and "DispatchFailed" not in case_env.events()
    escalations = [e for e in case_env.trail() if e.event == "DeadlineEscalated"]
    await settle(handle, lambda s: len(case_env.sent("escalation")) == len(escalations), "mailed")
    assert len({m["Message-ID"] for m in case_env.sent("escalation")}) == len(escalations)
    print(f"2-hour outage: {mailer.refused} refused attempts; {len(escalations)} escalation(s) at the "
          f"dispatch stage; the appeal was delivered once after the outage")


async def test_an_outage_shorter_than_the_dispatch_deadline_still_delivers(case_env: CaseEnv) -> None:
    _, handle = await smtp_outage(case_env, timedelta(minutes=30))
    await case_env.env.sleep(timedelta(minutes=45))
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up", seconds=10)
    assert len(case_env.sent("appeal")) == 1 and "DispatchFailed" not in case_env.events()


# ===================================================================== dev stack helpers
async def persist(call: Callable[[], Awaitable[Any]], seconds: float = 120) -> Any:
    """Retry a client call through outages (server or worker down); updates keep their id."""
    end = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except WorkflowUpdateFailedError:
            raise
        except Exception:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)


async def update(handle: WorkflowHandle[Any, Any], method: Any, arg: Any) -> Any:
    update_id = str(uuid.uuid4())  # the same id on every retry: Temporal applies it once
    return await persist(lambda: handle.execute_update(method, arg, id=update_id))


async def wait_stage(handle: WorkflowHandle[Any, Any], stage: str, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            last = await handle.query(CaseWorkflow.status, rpc_timeout=timedelta(seconds=5))
            if last["stage"] == stage:
                return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{handle.id} never reached {stage}; last status {last}")


async def start_case(stack: Stack, ref: str) -> WorkflowHandle[Any, Any]:
    handle = await persist(lambda: stack.client.start_workflow(
        CaseWorkflow.run, CaseStart(ref, intake(), "olga"), id=ref, task_queue=stack.settings.task_queue))
    await wait_stage(handle, "verification")
    return handle


async def decide_to_follow_up_and_close(handle: WorkflowHandle[Any, Any]) -> str:
    await update(handle, CaseWorkflow.record_verification, VerificationInput("olga", verification()))
    for action in ACTIONS:
        await update(handle, CaseWorkflow.grant_consent, ConsentInput("olga", action, ""))
    for action in ACTIONS:
        await update(handle, CaseWorkflow.record_clearance, ClearanceInput("lina", action, True, "ok"))
    await wait_stage(handle, "follow_up", seconds=180)
    await update(handle, CaseWorkflow.close, CloseInput("olga", "resolved", "released"))
    return str(await persist(handle.result, seconds=60))


def check_case(stack: Stack, ref: str) -> int:
    """No event twice, every appeal recorded once and received under its one Message-ID, the chain
    intact (with and without the key). Returns the number of events."""
    trail = stack.store.trail(ref)
    assert len({e.command_id for e in trail}) == len(trail), [e.command_id for e in trail]
    dispatches = [e.details for e in trail if e.event == "MessageDispatched"]
    assert sorted(d["action"] for d in dispatches) == sorted(ACTIONS)
    recorded = {d["message_id"] for d in dispatches}
    received = {m["Message-ID"] for _, _, m in stack.sink.messages if ref in m["Subject"]}
    assert received == recorded
    assert stack.store.verify(ref).ok
    assert verifier_without_key(stack.settings.database_url).verify_reference(ref).ok
    return len(trail)


# ==================================================================== 2. dev server restarted
async def test_cases_continue_after_the_dev_server_restarts(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    home = tmp_path / "temporal"
    home.mkdir()
    port = free_port()
    server = running_dev_server(home, port=port)
    server.__enter__()
    try:
        async with running_stack(DevServer(f"127.0.0.1:{port}", home / "server.log"), tmp_path,
                                 smtp_sink) as stack:
            stack.start_worker()
            refs = [f"UA-2026-R{i:03d}" for i in range(3)]
            handles = [await start_case(stack, ref) for ref in refs]
            for handle in handles:  # each case half-way: verified, consent given
                await update(handle, CaseWorkflow.record_verification,
                             VerificationInput("olga", verification()))
                for action in ACTIONS:
                    await update(handle, CaseWorkflow.grant_consent, ConsentInput("olga", action, ""))
            server.__exit__(None, None, None)  # stopped (SIGTERM), database file kept
            await asyncio.sleep(2)
            down = time.monotonic()
            server = running_dev_server(home, port=port)
            server.__enter__()
            print(f"dev server restarted in {time.monotonic() - down:.1f} s")
            started = time.monotonic()
            for handle in handles:
                for action in ACTIONS:
                    await update(handle, CaseWorkflow.record_clearance,
                                 ClearanceInput("lina", action, True, "ok"))
            for handle in handles:
                await wait_stage(handle, "follow_up", seconds=120)
                await update(handle, CaseWorkflow.close, CloseInput("olga", "resolved", "released"))
                assert await persist(handle.result) == "resolved"
            events = [check_case(stack, ref) for ref in refs]
            assert len(stack.sink.messages) == 3 * len(refs)
            print(f"after the restart: {len(refs)} cases completed in {time.monotonic() - started:.1f} s, "
                  f"events {events}, {len(stack.sink.messages)} messages received")
    finally:
        server.__exit__(None, None, None)


# =================================================================== 3. worker killed at random
async def test_worker_killed_at_random_points_across_twenty_cases(stack: Stack) -> None:
    rng = random.Random(20260808)
    stack.sink.data_delay = 0.2  # sends take a moment, so some kills land mid-send
    stack.start_worker()
    refs = [f"UA-2026-K{i:03d}" for i in range(20)]
    started = time.monotonic()
    done = asyncio.Event()
    kills: list[float] = []

    async def killer() -> None:
        for _ in range(4):
            await asyncio.sleep(rng.uniform(1.0, 5.0))
            if done.is_set():
                return
            stack.kill_worker()
            kills.append(round(time.monotonic() - started, 1))
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            stack.start_worker()

    async def one(ref: str) -> str:
        await asyncio.sleep(rng.uniform(0, 3))
        return await decide_to_follow_up_and_close(await start_case(stack, ref))

    chaos = asyncio.create_task(killer())
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*(one(ref) for ref in refs)), 200)
    finally:
        done.set()
        await chaos
    assert outcomes == ["resolved"] * len(refs)
    events = [check_case(stack, ref) for ref in refs]
    received = [m["Message-ID"] for _, _, m in stack.sink.messages]
    print(f"20 cases, worker killed at {kills} s: all resolved in {time.monotonic() - started:.1f} s; "
          f"{sum(events)} events, none twice; {len(received)} messages received for "
          f"{len(set(received))} distinct Message-IDs ({3 * len(refs)} appeals)")
    assert len(kills) >= 2


# ============================================================= 4. database connection dropped
def _terminate_backends(database: str) -> int:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        return len(conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchall())


def _retrying(errors: list[str], call: Callable[[], Any]) -> Any:
    """What Temporal does with a failed recording activity: try again, same command id. Errors of the
    rules or the store (non-retryable ApplicationErrors in the activity) must not appear here."""
    for _ in range(100):
        try:
            return call()
        except (CaseRuleError, StoreError):
            raise
        except Exception as exc:  # the dropped connection, as the driver reports it
            errors.append(type(exc).__name__)
            time.sleep(0.02)
    raise AssertionError("never recovered")


def _writes_under_fault(store: CaseStore, ref: str, fault: Callable[[], None], writers: int = 3,
                        each: int = 15) -> list[str]:
    errors: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def write(i: int) -> None:
        try:
            for j in range(each):
                cid = f"{ref}/note/{i}-{j}"
                _retrying(errors, lambda cid=cid, i=i, j=j: store.execute(
                    ref, "add_further_information", {"information": f"note {i}-{j}", "at": T0},
                    "olga", cid))
                # A retry of a write that did commit before the connection dropped: nothing new.
                if j % 5 == 0:
                    _retrying(errors, lambda cid=cid, i=i, j=j: store.execute(
                        ref, "add_further_information", {"information": f"note {i}-{j}", "at": T0},
                        "olga", cid))
        except BaseException as exc:  # asserted below
            failures.append(exc)

    def faults() -> None:
        while not stop.is_set():
            fault()
            time.sleep(0.05)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    breaker = threading.Thread(target=faults)
    breaker.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    breaker.join(30)
    assert failures == []
    # The pool still holds connections the server dropped: the first read on one fails once
    # (no pre-ping), as a recording activity's first attempt would; a retry reads the truth.
    trail = _retrying(errors, lambda: store.trail(ref))
    notes = [e.details["information"] for e in trail if e.event == "FurtherInformationAdded"]
    assert sorted(notes) == sorted(f"note {i}-{j}" for i in range(writers) for j in range(each))
    assert len({e.command_id for e in trail}) == len(trail) == 1 + writers * each
    assert _retrying(errors, lambda: store.verify(ref)).ok
    return errors


def test_postgres_connections_terminated_during_writes_lose_and_double_nothing() -> None:
    with fresh_postgres_database() as (url, name):
        store = CaseStore(url, new_key())
        try:
            store.open_case(**open_args("UA-2026-0001"))
            killed: list[int] = []
            started = time.monotonic()
            errors = _writes_under_fault(store, "UA-2026-0001",
                                         lambda: killed.append(_terminate_backends(name)))
            print(f"PostgreSQL: {sum(killed)} connections terminated during 45 writes; "
                  f"{len(errors)} failed attempts retried ({sorted(set(errors))}); "
                  f"{time.monotonic() - started:.1f} s; nothing lost or doubled")
            assert sum(killed) > 0
        finally:
            store.close()


def test_sqlite_file_locked_by_another_connection_during_writes(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    store = CaseStore(sqlite_url(str(path)), new_key())
    locked = [0]

    def lock_briefly() -> None:
        other = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            locked[0] += 1
            time.sleep(0.3)
            other.execute("ROLLBACK")
        finally:
            other.close()
        time.sleep(0.2)

    try:
        store.open_case(**open_args("UA-2026-0001"))
        errors = _writes_under_fault(store, "UA-2026-0001", lock_briefly, writers=2, each=10)
        print(f"SQLite: file locked exclusively {locked[0]} times during 20 writes; "
              f"{len(errors)} failed attempts retried ({sorted(set(errors))})")
        assert locked[0] > 0
    finally:
        store.close()


# ====================================================================== 5. racing decisions
async def test_two_clients_deciding_the_same_consent_at_once(case_env: CaseEnv) -> None:
    handle = await case_env.start()
    await handle.execute_update(CaseWorkflow.record_verification, VerificationInput("olga", verification()))
    other = Client(**case_env.client.config())
    handle2 = other.get_workflow_handle(case_env.ref)
    races = [("rapporteur", CaseWorkflow.grant_consent, CaseWorkflow.grant_consent),
             ("mfa", CaseWorkflow.grant_consent, CaseWorkflow.refuse_consent)]
    for action, first, second in races:
        results = await asyncio.gather(
            handle.execute_update(first, ConsentInput("olga", action, "a")),
            handle2.execute_update(second, ConsentInput("omar", action, "b")),
            return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1, results
        assert isinstance(failed[0], WorkflowUpdateFailedError)
        message = str(getattr(failed[0].cause, "message", failed[0].cause))
        assert message == f"Consent for {action} has already been recorded.", message
        print(f"race on {action}: one decision recorded, the other refused: {message!r}")
    decided = [e for e in case_env.trail() if e.event in ("ConsentGranted", "ConsentRefused")]
    assert sorted(e.details["action"] for e in decided) == ["mfa", "rapporteur"]


def test_concurrent_store_commands_on_one_case_one_wins(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]
    ref = "UA-2026-0001"
    stores[0].open_case(**open_args(ref))
    stores[0].execute(ref, "record_verification", {"verification": verification(), "at": T0}, "olga", "v")
    try:
        for action in ACTIONS:
            barrier = threading.Barrier(len(stores))
            outcomes: list[Any] = [None] * len(stores)

            def decide(i: int, action: str = action, barrier: threading.Barrier = barrier,
                       outcomes: list[Any] = outcomes) -> None:
                barrier.wait()
                try:
                    outcomes[i] = stores[i].execute(ref, "grant_consent", {
                        "action": action, "conditions": f"by {i}", "at": T0}, "olga",
                        f"{ref}/race/{action}/{i}")
                except BaseException as exc:  # asserted below
                    outcomes[i] = exc

            threads = [threading.Thread(target=decide, args=(i,)) for i in range(len(stores))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            lost = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(lost) == len(stores) - 1, outcomes
            # The losers are told why: the consent is decided, or (after the last one) the case
            # has moved on to clearance.
            assert all(isinstance(o, CaseRuleError) for o in lost), lost
            assert action == ACTIONS[-1] or any(isinstance(o, ActionAlreadyDecided) for o in lost)
            assert {str(o) for o in lost} <= {
                f"Consent for {action} has already been recorded.",
                "This case is at the clearance stage; consent can only be recorded at the consent stage."}
        trail = stores[0].trail(ref)
        assert [e.event for e in trail].count("ConsentGranted") == len(ACTIONS)
        assert stores[0].verify(ref).ok
    finally:
        for s in stores:
            s.close()
