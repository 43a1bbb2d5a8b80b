"""The production topology without Docker: the event store on the real PostgreSQL, the Temporal dev
server, two worker processes and an SMTP server on loopback. Fifty cases; one worker is killed
mid-run; every case finishes on the other, with no duplicate event and every audit chain intact.
As in docker-compose.yml, the schema owner sets the event store up (`appeals store init-db`) and
the workers and the test's own store connect as the application's role, which may not update or
delete the audit trail. Also: the worker serves Temporal SDK metrics for Prometheus on its
configured port."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.backends import fresh_postgres_roles
from tests.dev_stack import DevServer, free_port, running_stack
from tests.factories import intake, verification
from tests.smtp_sink import SmtpSink
from tests.workflow_env import settle
from workflows.case import CaseWorkflow
from workflows.inputs import CaseStart, ClearanceInput, CloseInput, ConsentInput, VerificationInput

CASES = 50


async def test_fifty_cases_on_postgres_survive_losing_one_of_two_workers(
        dev_server: DevServer, tmp_path: Path, smtp_sink: SmtpSink) -> None:
    with fresh_postgres_roles(set_up=True) as roles:
        url = roles.app_url
        async with running_stack(dev_server, tmp_path, smtp_sink, database_url=url) as stack:
            stack.start_worker()
            stack.start_worker()
            started = time.monotonic()
            gate = asyncio.Semaphore(10)
            one = intake(requested_actions=["mfa"], refused_actions=[], eu_grant=None)

            async def run_case(n: int) -> str:
                ref = f"UA-2026-P{n:03d}"
                async with gate:
                    handle = await stack.client.start_workflow(
                        CaseWorkflow.run, CaseStart(ref, one, "olga"), id=ref,
                        task_queue=stack.settings.task_queue)
                    await settle(handle, lambda s: s["stage"] == "verification", "opened", 120)
                    await handle.execute_update(CaseWorkflow.record_verification,
                                                VerificationInput("olga", verification()))
                    await handle.execute_update(CaseWorkflow.grant_consent, ConsentInput("olga", "mfa"))
                    await handle.execute_update(CaseWorkflow.record_clearance,
                                                ClearanceInput("lina", "mfa", True))
                await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up", 180)
                await handle.execute_update(CaseWorkflow.close, CloseInput("olga", "resolved"))
                return str(await handle.result())

            async def kill_one_worker_mid_run() -> None:
                while len(stack.sink.messages) < CASES // 3:
                    await asyncio.sleep(0.1)
                stack.kill_worker()

            killer = asyncio.create_task(kill_one_worker_mid_run())
            outcomes = await asyncio.gather(*(run_case(n) for n in range(CASES)))
            await killer
            elapsed = time.monotonic() - started

            assert outcomes == ["resolved"] * CASES
            assert stack.workers[-1].poll() is not None, "the second worker was not killed"
            duplicates, unverified = 0, []
            recorded: set[str] = set()
            for n in range(CASES):
                ref = f"UA-2026-P{n:03d}"
                trail = stack.store.trail(ref)
                counts = Counter(e.command_id for e in trail)
                # An unverified verdict closes in the same command; here every case is verified.
                duplicates += sum(c - 1 for c in counts.values())
                sent = [e.details["message_id"] for e in trail if e.event == "MessageDispatched"]
                assert len(sent) == 1, ref
                recorded.update(sent)
                if not stack.store.verify(ref).ok:
                    unverified.append(ref)
            assert duplicates == 0 and unverified == []
            with roles.connect(roles.app) as conn:
                events = conn.execute("SELECT count(*) FROM appeals_events").fetchone()[0]
                assert conn.execute("SELECT count(*) FROM appeals_chain").fetchone()[0] == events
                assert not conn.execute("SELECT has_table_privilege(current_user, "
                                        "'appeals_events', 'UPDATE')").fetchone()[0]
            received = Counter(m["Message-ID"] for _, _, m in stack.sink.messages)
            assert set(received) == recorded  # every message went out, under its recorded id
            print(f"{CASES} cases on PostgreSQL with 2 workers (one killed) in {elapsed:.1f} s; "
                  f"{sum(received.values())} deliveries for {len(recorded)} dispatches")


async def test_the_worker_serves_sdk_metrics_for_prometheus(
        dev_server: DevServer, tmp_path: Path, smtp_sink: SmtpSink) -> None:
    port = free_port()
    async with running_stack(dev_server, tmp_path, smtp_sink, metrics_port=str(port)) as stack:
        stack.start_worker()
        body = ""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
                if "temporal_" in body:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        metric: dict[str, Any] = {line.split("{")[0].split(" ")[0]: line for line in body.splitlines()
                                  if line.startswith("temporal_")}
        assert metric, f"no Temporal metric served on port {port}; worker log: {stack.worker_logs()[-2000:]}"
        assert any(name.startswith("temporal_") for name in metric)
