"""The performance benchmark (`make bench`): `python -m benchmarks.run [--only PART] [sizes]`.

Parts (all by default, in this order; results and targets in docs/performance.md):

- pipeline: N cases through the whole pipeline (the case workflow, the SQLite event store, mail to
  a real SMTP server on loopback) on the real Temporal dev server, with scripted decisions;
- bare: the same number of cases through a bare workflow of the same shape (benchmarks/bare.py),
  on the same dev server; with both, the ratio pipeline / bare;
- memory: resident memory of the worker process (`python -m worker`) with M open cases waiting
  for their verification;
- chain: time to verify the audit chain of a case with 1,000 events;
- list: time to list 10,000 cases from the case index;
- checkpoint: time to verify a store of 10,000 signed events against a signed checkpoint with the
  public key only (benchmarks/checkpoint.py; alone: `python -m benchmarks.checkpoint`).
- report: time to build the yearly report (desk.reports) and the head's dashboard (desk.dashboard)
  over 10,000 seeded cases (benchmarks/report_seed.py: a realistic mix of decisions, messages,
  responses and closings), first from the events (empty facts cache), then from the cache.

Both throughput workers run in this process (the pipeline's built with worker.main.build_activities
and build_worker, the bare one a plain temporalio Worker), with the same worker options, the same
client concurrency and the same dev server, so the ratio compares like with like. The memory part
runs the real worker process, since that is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.worker import Worker

from benchmarks.bare import ACTIVITIES_PER_CASE, UPDATES_PER_CASE, BareWorkflow, bare_step
from benchmarks.data import PASSWORD, USERS, intake, open_args, verification
from stack.harness import DevServer, Stack, running_dev_server, running_stack, wait_for_worker
from stack.sink import SmtpSink
from store import schema
from store.app import CaseStore, sqlite_url
from worker.main import build_activities, build_worker
from workflows.case import CaseWorkflow
from workflows.inputs import CaseStart, ClearanceInput, ConsentInput, TracksStart, VerificationInput
from workflows.tracks import TrackedCaseWorkflow

PARTS = ("pipeline", "bare", "index", "memory", "chain", "list", "checkpoint", "report")
ACTIONS = ["rapporteur", "mfa"]
INTAKE = intake(requested_actions=ACTIONS, refused_actions=[], eu_grant=None)
# The workflows' status query, by name (both workflow types answer it).
STATUS = "status"
# Consent given by the defender herself (cases with per-action tracks record it per person).
DEFENDER_CONSENT = {"defender": 0, "given_by": "defender", "relationship": "",
                    "channel": "secure_message", "given_at": "2026-01-05T09:00:00+00:00"}

# The targets of issue 15 (and, for chain and list, of issue 8).
TARGET_RATIO = 1.0
TARGET_MAIL_P95_S = 0.1
TARGET_CLI_S = 0.25
TARGET_WEB_P95_S = 0.15
TARGET_APPEND_MS = 5.0
TARGET_MEMORY_MIB = 250.0
TARGET_MEMORY_CASES = 5000
TARGET_CHAIN_MS = 200.0
TARGET_CHAIN_EVENTS = 1000
TARGET_LIST_MS = 1000.0
TARGET_LIST_CASES = 10_000
TARGET_CHECKPOINT_MS = 10_000.0
TARGET_CHECKPOINT_EVENTS = 10_000
TARGET_REPORT_MS = 2000.0  # the yearly report and the dashboard, each, from the cache
TARGET_REPORT_CASES = 10_000


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""
    passed: bool | None = None  # None: no target for this figure
    note: str = ""

    def verdict(self) -> str:
        if self.passed is None:
            return ""
        return "PASS" if self.passed else "MISS"


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        mark = f"  [{figure.verdict()} target {figure.target}]" if figure.passed is not None else ""
        note = f"  ({figure.note})" if figure.note else ""
        say(f"  => {figure.name}: {figure.value:.3f} {figure.unit}{mark}{note}")


def miss_by(value: float, target: float, *, higher_is_better: bool) -> str:
    """How far a figure is from its target, as a percentage of the target."""
    if higher_is_better:
        return "" if value >= target else f"missed by {100 * (target - value) / target:.0f}%"
    return "" if value <= target else f"missed by {100 * (value - target) / target:.0f}%"


# ======================================================================================= throughput
async def drive(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run `one(i)` for i in range(count), at most `concurrency` at a time; the wall time."""
    next_index = 0
    done = 0
    started = time.perf_counter()

    async def lane() -> None:
        nonlocal next_index, done
        while next_index < count:
            i = next_index
            next_index += 1
            await one(i)
            done += 1
            if done % 50 == 0:
                say(f"    {done}/{count} cases done ({time.perf_counter() - started:.1f} s)")

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    return time.perf_counter() - started


class FollowUpWatcher:
    """Learns from the store's case index when cases reach follow-up (both messages sent and
    recorded): one cheap query every 50 ms for all cases in flight, no load on the worker."""

    def __init__(self, store: CaseStore) -> None:
        self.store = store
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None

    def _follow_up(self) -> set[str]:
        idx = schema.case_index
        with self.store.engine.connect() as conn:
            return set(conn.execute(select(idx.c.reference).where(idx.c.stage == "follow_up")).scalars())

    async def _poll(self) -> None:
        while True:
            if self.waiting:
                reached = await asyncio.to_thread(self._follow_up)
                for ref in list(self.waiting):
                    if ref in reached:
                        self.waiting.pop(ref).set_result(None)
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self.task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def wait(self, ref: str, seconds: float = 120) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiting[ref] = future
        await asyncio.wait_for(future, seconds)


async def pipeline_part(server: DevServer, home: Path, sink: SmtpSink, args: argparse.Namespace,
                        report: Report) -> float:
    say(f"\n[pipeline] {args.cases} cases through the whole pipeline, {args.concurrency} at a time")
    path = home / "pipeline"
    path.mkdir()
    sink.clear()
    async with running_stack(server.address, path, sink, users=USERS, password=PASSWORD) as stack:
        activities = build_activities(stack.settings, store=stack.store)
        worker = build_worker(stack.client, stack.settings, activities)
        watcher = FollowUpWatcher(stack.store)
        watcher.start()
        cleared: dict[str, float] = {}  # reference: when its last clearance update returned

        async def one_case(prefix: str, i: int) -> None:
            ref = f"BP-{prefix}-{i:05d}"
            if args.workflow == "tracks":
                await tracked_case(stack, ref)
            else:
                await legacy_case(stack, ref)
            if prefix == "MAIL":
                cleared[ref] = time.perf_counter()
            await watcher.wait(ref)
            # The store has both dispatches; done once the workflow has seen them too.
            handle = stack.client.get_workflow_handle(ref)
            while (await handle.query(STATUS))["stage"] != "follow_up":
                await asyncio.sleep(0.05)

        try:
            async with worker:
                if args.warmup:
                    await drive(args.warmup, args.concurrency, lambda i: one_case("WARM", i))
                sent_before, all_before = appeals_received(sink), len(sink.messages)
                seconds = await drive(args.cases, args.concurrency, lambda i: one_case("PIPE", i))
                await check_pipeline(stack, args.cases, appeals_received(sink) - sent_before)
                # The workflow's other mail in the timed run: staff told that a decision waits.
                notices = len(sink.messages) - all_before - (appeals_received(sink) - sent_before)
                say(f"    besides the appeals: {notices} staff notices "
                    f"({notices / args.cases:.1f} a case)")
                # Latency apart from throughput: the timed run keeps the worker saturated (20
                # cases at a time), so its decisions would wait in the queue; here a few at a time.
                say(f"    mail latency: {args.mail_cases} more cases, {args.mail_concurrency} at a time")
                await drive(args.mail_cases, args.mail_concurrency, lambda i: one_case("MAIL", i))
        finally:
            await watcher.stop()
    mail_latency(sink, cleared, report, args.mail_concurrency)
    rate = float(args.cases / seconds)
    report.details["pipeline"] = {"cases": args.cases, "seconds": seconds, "warmup": args.warmup,
                                  "concurrency": args.concurrency, "worker": "in-process",
                                  "workflow": args.workflow}
    report.add(Figure("pipeline throughput", rate, "cases/s",
                      note=f"{args.cases} cases in {seconds:.1f} s; worker in this process"))
    return rate


REFERENCE = re.compile(r"BP-MAIL-\d{5}")


def appeals_received(sink: SmtpSink) -> int:
    """The appeals the SMTP server received (not the staff's notices that a decision waits)."""
    return sum(1 for _, _, m in sink.messages if m.get("X-Appeal-Kind") == "appeal")


def mail_latency(sink: SmtpSink, cleared: dict[str, float], report: Report, concurrency: int) -> None:
    """Decision accepted -> message on the SMTP server: per case, from the moment its last
    clearance update returned to the client to the moment the SMTP server stored the last of its
    messages (the message that clearance released). The sink runs in this process, so both times
    are on the same clock."""
    last: dict[str, float] = {}
    for (_, _, message), arrived in zip(sink.messages, sink.arrivals, strict=True):
        if message.get("X-Appeal-Kind") != "appeal":
            continue  # staff notices (a decision waits) are not what a clearance releases
        found = REFERENCE.search(str(message.get("Subject", ""))) or REFERENCE.search(
            message.as_string())
        if found and found.group(0) in cleared:
            last[found.group(0)] = max(arrived, last.get(found.group(0), arrived))
    delays = sorted(last[ref] - cleared[ref] for ref in last)
    if len(delays) != len(cleared):
        raise RuntimeError(f"mail latency: messages of {len(delays)} of {len(cleared)} cases found")
    p50, p95 = percentile(delays, 50), percentile(delays, 95)
    report.details["mail_latency"] = {"cases": len(delays), "seconds": delays}
    report.add(Figure(f"decision accepted -> message on the SMTP server, p50 ({len(delays)} cases)",
                      p50, "s", note=f"last clearance returned -> its message stored by the server; "
                                     f"{concurrency} cases at a time"))
    report.add(Figure(f"decision accepted -> message on the SMTP server, p95 ({len(delays)} cases)",
                      p95, "s", f"<= {TARGET_MAIL_P95_S} s", p95 <= TARGET_MAIL_P95_S,
                      "; ".join(filter(None, [f"max {delays[-1]:.3f} s",
                                              miss_by(p95, TARGET_MAIL_P95_S, higher_is_better=False)]))))


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile of `values`."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def tracked_case(stack: Stack, ref: str) -> None:
    """A case as the doors open it today (workflow type UrgentCaseTracks): opened, verified,
    consent for each action from the defender, each action cleared; returns when the last
    clearance update has returned."""
    handle = await stack.client.start_workflow(
        TrackedCaseWorkflow.run, TracksStart(ref, INTAKE, "olga"), id=ref,
        task_queue=stack.settings.task_queue)
    # An update sent while the case is still being opened waits for the opening.
    await handle.execute_update(TrackedCaseWorkflow.record_verification, VerificationInput(
        "olga", {**verification(), "public_action_advised": True}))
    for action in ACTIONS:
        await handle.execute_update(TrackedCaseWorkflow.grant_consent, ConsentInput(
            "olga", action, "", consents=[DEFENDER_CONSENT], publicity={"0": "initials_only"}))
    for action in ACTIONS:
        await handle.execute_update(TrackedCaseWorkflow.record_clearance,
                                    ClearanceInput("lina", action, True, "cleared"))


async def legacy_case(stack: Stack, ref: str) -> None:
    """The same decisions on a case of the workflow type of cases opened before per-action
    tracks (UrgentCase), which running cases of that age still use."""
    handle = await stack.client.start_workflow(
        CaseWorkflow.run, CaseStart(ref, INTAKE, "olga"), id=ref,
        task_queue=stack.settings.task_queue)
    await handle.execute_update(CaseWorkflow.record_verification,
                                VerificationInput("olga", verification()))
    for action in ACTIONS:
        await handle.execute_update(CaseWorkflow.grant_consent, ConsentInput("olga", action, ""))
    for action in ACTIONS:
        await handle.execute_update(CaseWorkflow.record_clearance,
                                    ClearanceInput("lina", action, True, "cleared"))


async def check_pipeline(stack: Stack, cases: int, sent: int) -> None:
    """Not timed: every case is in follow-up in the workflow too, and two appeals each went out."""
    refs = [f"BP-PIPE-{i:05d}" for i in range(cases)]
    stages = await asyncio.gather(*(
        stack.client.get_workflow_handle(ref).query(STATUS) for ref in refs))
    wrong = [ref for ref, s in zip(refs, stages, strict=True) if s["stage"] != "follow_up"]
    if wrong or sent != 2 * cases:
        raise RuntimeError(f"pipeline check failed: {len(wrong)} cases not in follow-up, "
                           f"{sent} appeals for {cases} cases")
    say(f"    checked: {cases} cases in follow-up in the workflow, {sent} appeals received by "
        "the SMTP server")


async def bare_part(server: DevServer, args: argparse.Namespace, report: Report) -> float:
    say(f"\n[bare] {args.cases} bare workflows of the same shape ({UPDATES_PER_CASE} updates, "
        f"{ACTIVITIES_PER_CASE} activities each), {args.concurrency} at a time")
    client = await Client.connect(server.address)
    queue = "bench-bare"
    decisions = ["verification", "consent-1", "consent-2", "clearance-1", "clearance-2"]
    assert len(decisions) == UPDATES_PER_CASE

    async def one_case(prefix: str, i: int) -> None:
        ref = f"BB-{prefix}-{i:05d}"
        handle = await client.start_workflow(BareWorkflow.run, ref, id=ref, task_queue=queue)
        for decision in decisions:
            await handle.execute_update(BareWorkflow.decide, decision)
        await handle.result()

    async with Worker(client, task_queue=queue, workflows=[BareWorkflow], activities=[bare_step]):
        if args.warmup:
            await drive(args.warmup, args.concurrency, lambda i: one_case("WARM", i))
        seconds = await drive(args.cases, args.concurrency, lambda i: one_case("BARE", i))
    rate = float(args.cases / seconds)
    report.details["bare"] = {"cases": args.cases, "seconds": seconds, "warmup": args.warmup,
                              "concurrency": args.concurrency, "worker": "in-process"}
    report.add(Figure("bare throughput", rate, "cases/s",
                      note=f"{args.cases} cases in {seconds:.1f} s; worker in this process"))
    return rate


# ============================================================== commands and pages: the index part
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def index_part(server: DevServer, home: Path, sink: SmtpSink, args: argparse.Namespace,
                     report: Report) -> None:
    """`appeals case show` and `case list` as whole processes (a script's loop), then the web
    inbox and case page with `args.index` cases in the case index, on one stack with the real
    worker process."""
    say(f"\n[index] the command line (median of {args.runs} whole processes) and the web pages "
        f"(p95 of {args.requests} requests, {args.index} cases in the index)")
    path = home / "index"
    path.mkdir()
    async with running_stack(server.address, path, sink, users=USERS, password=PASSWORD) as stack:
        # The commands run as in a person's shell: with Python's bytecode cache (a development
        # shell may turn it off; the first, untimed run of each command writes what is missing).
        stack.env.pop("PYTHONDONTWRITEBYTECODE", None)
        proc = stack.start_worker()
        await wait_for_worker(proc, stack.home / "worker-0.log")
        ref = await opened_through_the_door(stack)
        live = len(stack.store.list_cases())
        await cli_figures(stack, ref, live, args, report)
        t0 = time.perf_counter()
        await asyncio.to_thread(fill_index, stack.store, args.index - live)
        say(f"    index filled to {args.index} cases with store.open_case in "
            f"{time.perf_counter() - t0:.1f} s")
        await web_figures(stack, ref, args, report)
        times = [await asyncio.to_thread(timed_once, stack.appeals, "case", "list", "--json")
                 for _ in range(3)]
        report.add(Figure(f"`appeals case list --json` with {args.index} cases (median of 3)",
                          statistics.median(times), "s",
                          note="no target: the target is for a working list; see docs/performance.md"))


async def opened_through_the_door(stack: Stack) -> str:
    """A case opened and verified with `appeals` as staff do (a live workflow with tracks)."""
    opened = await asyncio.to_thread(stack.appeals, "case", "open", str(EXAMPLES / "intake.json"))
    if opened.returncode != 0:
        raise RuntimeError(f"appeals case open: {opened.stderr}")
    ref = opened.stdout.strip()
    verified = await asyncio.to_thread(stack.appeals, "case", "verify", ref,
                                       str(EXAMPLES / "verification.json"), user="omar")
    if verified.returncode != 0:
        raise RuntimeError(f"appeals case verify: {verified.stderr}")
    return ref


def timed_once(call: Callable[..., subprocess.CompletedProcess[str]], *args: str) -> float:
    t = time.perf_counter()
    done = call(*args)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"appeals {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return seconds


async def cli_figures(stack: Stack, ref: str, cases: int, args: argparse.Namespace,
                      report: Report) -> None:
    for name, command in (("show", ["case", "show", ref, "--json"]),
                          ("list", ["case", "list", "--json"])):
        await asyncio.to_thread(timed_once, stack.appeals, *command)  # signs in; warms the caches
        times = [await asyncio.to_thread(timed_once, stack.appeals, *command)
                 for _ in range(args.runs)]
        median = statistics.median(times)
        report.details[f"cli_{name}"] = {"seconds": times, "cases_in_index": cases}
        report.add(Figure(f"`appeals {' '.join(command[:2])}{' REF' if name == 'show' else ''} "
                          f"--json` wall time (median of {args.runs}; {cases} in the index)", median, "s",
                          f"<= {TARGET_CLI_S} s", median <= TARGET_CLI_S,
                          "; ".join(filter(None, [f"min {min(times):.3f}, max {max(times):.3f}",
                                                  miss_by(median, TARGET_CLI_S,
                                                          higher_is_better=False)]))))


def fill_index(store: CaseStore, count: int) -> None:
    """`count` more cases in the store (events, chain, index), without workflows: what the inbox
    lists. Their case pages come from the store (no workflow runs for them)."""
    t0 = time.perf_counter()
    for i in range(count):
        store.open_case(**open_args(f"BP-IDX-{i:05d}", actions=ACTIONS))
        if (i + 1) % 2000 == 0:
            say(f"    {i + 1}/{count} cases opened ({time.perf_counter() - t0:.1f} s)")


async def web_figures(stack: Stack, ref: str, args: argparse.Namespace, report: Report) -> None:
    """The inbox and the live case's page through the ASGI app (httpx, no network), signed in as
    a case officer: p95 of `args.requests` requests each, after 3 untimed ones."""
    import httpx

    from web import build_app

    # olga's password is PASSWORD already (she signed in to the command line with it).
    key = base64.b64encode(os.urandom(32)).decode()
    app = build_app(stack.settings, stack.plain, stack.store, session_key=key, outbox=stack.home / "outbox")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        page = await client.get("/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if token is None:
            raise RuntimeError("no CSRF token on the sign-in page")
        signed = await client.post("/sign-in", data={"csrf_token": token.group(1), "username": "olga",
                                                      "password": PASSWORD, "code": ""})
        if signed.status_code != 303:
            raise RuntimeError(f"web sign-in refused: {signed.status_code}")
        for name, url in (("inbox", "/"), ("case page", f"/cases/{ref}")):
            times = []
            for i in range(args.requests + 3):
                t = time.perf_counter()
                response = await client.get(url)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {url}: {response.status_code}")
                if i >= 3:
                    times.append(time.perf_counter() - t)
            p95 = percentile(times, 95)
            report.details[f"web_{name}"] = {"seconds": times, "cases_in_index": args.index}
            report.add(Figure(f"web {name} with {args.index} cases in the index, p95 "
                              f"({args.requests} requests)", p95, "s", f"<= {TARGET_WEB_P95_S} s",
                              p95 <= TARGET_WEB_P95_S,
                              "; ".join(filter(None, [f"median {statistics.median(times):.3f} s",
                                                      miss_by(p95, TARGET_WEB_P95_S,
                                                              higher_is_better=False)]))))


# =========================================================================================== memory
def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for process {pid}")


def count_stage(store: CaseStore, stage: str) -> int:
    idx = schema.case_index
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(idx).where(idx.c.stage == stage))
                   .scalar_one())


async def memory_part(server: DevServer, home: Path, sink: SmtpSink, args: argparse.Namespace,
                      report: Report) -> None:
    target = args.open_cases
    say(f"\n[memory] worker RSS with up to {target} open cases waiting for verification "
        f"(time budget {args.memory_budget:.0f} s for opening them)")
    path = home / "memory"
    path.mkdir()
    async with running_stack(server.address, path, sink, users=USERS, password=PASSWORD) as stack:
        proc = stack.start_worker()
        await wait_for_worker(proc, stack.home / "worker-0.log")
        await asyncio.sleep(2)
        baseline = rss_mib(proc.pid)
        say(f"    worker pid {proc.pid}: idle RSS {baseline:.1f} MiB")
        samples: list[tuple[int, float]] = [(0, baseline)]
        started = time.perf_counter()
        opened = 0
        batch = max(1, min(args.memory_batch, target))
        while opened < target:
            if time.perf_counter() - started > args.memory_budget:
                say(f"    time budget spent: stopping at {opened} open cases (not {target})")
                break
            size = min(batch, target - opened)

            async def start(i: int, first: int = opened) -> None:
                ref = f"BP-MEM-{first + i:05d}"
                if args.workflow == "tracks":
                    await stack.client.start_workflow(
                        TrackedCaseWorkflow.run, TracksStart(ref, INTAKE, "olga"), id=ref,
                        task_queue=stack.settings.task_queue)
                else:
                    await stack.client.start_workflow(
                        CaseWorkflow.run, CaseStart(ref, INTAKE, "olga"), id=ref,
                        task_queue=stack.settings.task_queue)

            t_batch = time.perf_counter()
            await drive(size, args.open_concurrency, start)
            t_started = time.perf_counter()
            opened += size
            await wait_until(partial(opened_at_least, stack.store, opened), f"{opened} cases opened",
                             seconds=600)
            t_stored = time.perf_counter()
            await wait_for_visibility(stack, opened)
            say(f"    batch: started {t_started - t_batch:.1f} s, in store {t_stored - t_started:.1f} s, "
                f"in Temporal {time.perf_counter() - t_stored:.1f} s")
            samples.append((opened, rss_mib(proc.pid)))
            say(f"    {opened} open cases after {time.perf_counter() - started:.1f} s: worker RSS "
                f"{samples[-1][1]:.1f} MiB")
        open_seconds = time.perf_counter() - started
        await asyncio.sleep(3)  # let the worker finish what it was doing
        final = rss_mib(proc.pid)
        peak = rss_mib(proc.pid, "VmHWM")
    per_case_kib = (final - baseline) * 1024 / opened if opened else 0.0
    report.details["memory"] = {"open_cases": opened, "requested": target, "seconds_to_open": open_seconds,
                                "idle_rss_mib": baseline, "final_rss_mib": final, "peak_rss_mib": peak,
                                "samples": samples, "worker": "subprocess python -m worker",
                                "max_cached_workflows": stack.settings.max_cached_workflows,
                                "workflow": args.workflow}
    note = (f"{opened} open cases (opened in {open_seconds:.0f} s); idle {baseline:.0f} MiB, "
            f"peak {peak:.0f} MiB")
    if opened >= TARGET_MEMORY_CASES:
        report.add(Figure(f"worker RSS with {opened} open cases", final, "MiB",
                          f"<= {TARGET_MEMORY_MIB:.0f} MiB at {TARGET_MEMORY_CASES}",
                          final <= TARGET_MEMORY_MIB,
                          "; ".join(filter(None, [note, miss_by(final, TARGET_MEMORY_MIB,
                                                                  higher_is_better=False)]))))
    else:
        # Two extrapolations. From the slope of the later samples: the worker caches at most
        # 1,000 workflows (temporalio's default max_cached_workflows) and evicts the rest, so RSS
        # levels off once the cache is full. Linear from idle: a pessimistic upper bound.
        late = samples[len(samples) // 2:]
        slope_kib = ((late[-1][1] - late[0][1]) * 1024 / (late[-1][0] - late[0][0])
                     if len(late) > 1 and late[-1][0] > late[0][0] else per_case_kib)
        estimate = final + max(slope_kib, 0.0) * (TARGET_MEMORY_CASES - opened) / 1024
        upper = baseline + per_case_kib * TARGET_MEMORY_CASES / 1024
        report.details["memory"].update(estimate_mib=estimate, linear_upper_bound_mib=upper,
                                        late_slope_kib_per_case=slope_kib)
        report.add(Figure(f"worker RSS with {opened} open cases (measured)", final, "MiB", note=note))
        report.add(Figure(f"worker RSS with {TARGET_MEMORY_CASES} open cases (EXTRAPOLATED)",
                          estimate, "MiB", f"<= {TARGET_MEMORY_MIB:.0f} MiB", estimate <= TARGET_MEMORY_MIB,
                          "; ".join(filter(None, [
                              f"from {opened} at the late slope of {slope_kib:.1f} KiB per case; "
                              f"linear from idle ({per_case_kib:.1f} KiB per case) "
                              f"would give {upper:.0f} MiB",
                              miss_by(estimate, TARGET_MEMORY_MIB, higher_is_better=False)]))))


def opened_at_least(store: CaseStore, count: int) -> bool:
    return count_stage(store, "verification") >= count


async def wait_until(ready: Callable[[], bool], what: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if await asyncio.to_thread(ready):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"timed out waiting for: {what}")


async def wait_for_visibility(stack: Stack, opened: int, seconds: float = 120) -> None:
    """The workflows have published their stage (the workflow task after the opening is done)."""
    query = f'TaskQueue="{stack.settings.task_queue}" AND CaseStage="verification"'
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            count = (await stack.client.count_workflows(query)).count
        except Exception as exc:  # visibility without counts: the store said they are open
            say(f"    (cannot count workflows by stage: {type(exc).__name__}; waiting 5 s instead)")
            await asyncio.sleep(5)
            return
        if count >= opened:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"only {count} of {opened} workflows reached verification in Temporal")


# ============================================================================== store: chain, list
def new_store(path: Path) -> CaseStore:
    return CaseStore(sqlite_url(str(path)), base64.b64encode(os.urandom(32)).decode())


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def chain_part(home: Path, args: argparse.Namespace, report: Report) -> None:
    events = args.events
    say(f"\n[chain] verify the audit chain of one case with {events} events (SQLite file)")
    store = new_store(home / "chain.sqlite")
    try:
        ref = "BP-CHAIN-00001"
        opening = open_args(ref, actions=ACTIONS)
        t0 = time.perf_counter()
        store.open_case(**opening)
        at: datetime = opening["at"]
        last_hundred = time.perf_counter()
        for i in range(1, events):
            store.execute(ref, "add_further_information",
                          {"information": f"Update {i}: the lawyer visited again.",
                           "at": at + timedelta(minutes=i)}, "olga", f"{ref}/info/{i}")
            if i == events - 100:
                last_hundred = time.perf_counter()
        setup = time.perf_counter() - t0
        per_command_ms = (time.perf_counter() - last_hundred) * 1000 / min(100, events - 1)
        say(f"    setup: {events} events in {setup:.1f} s (the last 100 commands took "
            f"{per_command_ms:.1f} ms each: the case comes from the aggregate cache, brought up "
            "to date and copied, not replayed)")
        times, chain = timed(lambda: store.verify(ref), 5)
    finally:
        store.close()
    if not chain.ok or chain.events != events:
        raise RuntimeError(f"chain check failed: {chain}")
    median_ms = statistics.median(times) * 1000
    report.details["chain"] = {"events": events, "times_ms": [t * 1000 for t in times],
                               "setup_seconds": setup, "append_ms_at_end": per_command_ms}
    at_target = events == TARGET_CHAIN_EVENTS
    report.add(Figure(f"append the {events}th event (mean of the last 100 commands)", per_command_ms,
                      "ms", f"<= {TARGET_APPEND_MS:.0f} ms" if at_target else "",
                      per_command_ms <= TARGET_APPEND_MS if at_target else None,
                      miss_by(per_command_ms, TARGET_APPEND_MS, higher_is_better=False) if at_target
                      else ""))
    report.add(Figure(f"verify chain of {events} events (median of 5)", median_ms, "ms",
                      f"< {TARGET_CHAIN_MS:.0f} ms" if at_target else "",
                      median_ms < TARGET_CHAIN_MS if at_target else None,
                      "; ".join(filter(None, [f"min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}",
                                              miss_by(median_ms, TARGET_CHAIN_MS, higher_is_better=False)]))))


def list_part(home: Path, args: argparse.Namespace, report: Report) -> None:
    count = args.index
    say(f"\n[list] list {count} cases from the case index (SQLite file)")
    store = new_store(home / "index.sqlite")
    try:
        t0 = time.perf_counter()
        for i in range(count):
            store.open_case(**open_args(f"BP-IDX-{i:05d}", actions=ACTIONS))
            if (i + 1) % 2000 == 0:
                say(f"    {i + 1}/{count} cases opened ({time.perf_counter() - t0:.1f} s)")
        setup = time.perf_counter() - t0
        say(f"    setup: {count} cases opened with store.open_case in {setup:.1f} s "
            f"({setup * 1000 / count:.1f} ms each)")
        times, rows = timed(store.list_cases, 5)
    finally:
        store.close()
    if len(rows) != count:
        raise RuntimeError(f"listed {len(rows)} cases, expected {count}")
    median_ms = statistics.median(times) * 1000
    report.details["list"] = {"cases": count, "times_ms": [t * 1000 for t in times], "setup_seconds": setup}
    at_target = count == TARGET_LIST_CASES
    report.add(Figure(f"list {count} cases (median of 5)", median_ms, "ms",
                      f"< {TARGET_LIST_MS:.0f} ms" if at_target else "",
                      median_ms < TARGET_LIST_MS if at_target else None,
                      "; ".join(filter(None, [f"min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}",
                                              miss_by(median_ms, TARGET_LIST_MS, higher_is_better=False)]))))


def checkpoint_part(home: Path, args: argparse.Namespace, report: Report) -> None:
    from benchmarks.checkpoint import EVENTS_PER_CASE, measure

    events = args.checkpoint_events
    say(f"\n[checkpoint] verify a store of {events} signed events ({EVENTS_PER_CASE} per case) "
        "against a signed checkpoint, public key only (SQLite file)")
    m = measure(home, events)
    say(f"    setup: {m.events} events in {m.chains} chains in {m.setup_seconds:.1f} s; "
        f"the first checkpoint (every chain verified first) took {m.checkpoint_ms:.0f} ms, "
        f"the next one {m.next_checkpoint_ms:.0f} ms")
    median_ms = statistics.median(m.verify_ms)
    report.details["checkpoint"] = {"events": m.events, "chains": m.chains,
                                    "times_ms": m.verify_ms, "setup_seconds": m.setup_seconds,
                                    "first_checkpoint_ms": m.checkpoint_ms,
                                    "next_checkpoint_ms": m.next_checkpoint_ms}
    at_target = events == TARGET_CHECKPOINT_EVENTS
    report.add(Figure(f"verify {events} events against a checkpoint (median of 3)", median_ms,
                      "ms", f"< {TARGET_CHECKPOINT_MS:.0f} ms" if at_target else "",
                      median_ms < TARGET_CHECKPOINT_MS if at_target else None,
                      "; ".join(filter(None, [
                          f"min {min(m.verify_ms):.0f}, max {max(m.verify_ms):.0f}; "
                          f"{median_ms * 1000 / m.events:.0f} us per event",
                          miss_by(median_ms, TARGET_CHECKPOINT_MS, higher_is_better=False)]))))


def report_part(home: Path, args: argparse.Namespace, report: Report) -> None:
    from benchmarks.report_seed import seed
    from desk import reports
    from desk.dashboard import build_dashboard

    count = args.reports
    say(f"\n[report] the yearly report and the dashboard over {count} seeded cases (SQLite file)")
    store = new_store(home / "report.sqlite")
    try:
        store.add_user("hana", "Hana Head", "hana@example.org", ["head"])
        t0 = time.perf_counter()
        done = 0
        for start in range(0, count, 1000):  # progress every 1000 cases
            size = min(1000, count - start)
            seed(store, size, seed_value=start, prefix=f"BP-R{start // 1000:03d}")
            done += size
            say(f"    {done}/{count} cases seeded ({time.perf_counter() - t0:.1f} s)")
        setup = time.perf_counter() - t0
        with store.engine.connect() as conn:
            events = conn.execute(select(func.count()).select_from(schema.chain)).scalar() or 0
        say(f"    setup: {count} cases, {events} events in {setup:.1f} s")
        period = reports.parse_period(year="2026")
        t = time.perf_counter()
        cold = reports.build(store, "hana", period, None)
        cold_s = time.perf_counter() - t
        say(f"    first report (every case's events decrypted, cache filled): {cold_s:.1f} s")
        times, warm = timed(lambda: reports.build(store, "hana", period, None), 5)
        country_times, _ = timed(lambda: reports.build(store, "hana", period, "KE"), 3)
        now = datetime(2026, 6, 1, tzinfo=UTC)
        dash_times, dash = timed(lambda: build_dashboard(store, now), 5)
    finally:
        store.close()
    if warm.tables["summary"].cells[0].count != cold.tables["summary"].cells[0].count:
        raise RuntimeError("the cached report differs from the first one")
    say(f"    {dash.open_total} open cases, {len(dash.waiting_clearance)} listed waiting for clearance")
    report.details["report"] = {"cases": count, "events": events, "setup_seconds": setup,
                                "cold_seconds": cold_s, "times_ms": [x * 1000 for x in times],
                                "country_ms": [x * 1000 for x in country_times],
                                "dashboard_ms": [x * 1000 for x in dash_times]}
    at_target = count == TARGET_REPORT_CASES
    for name, values in ((f"yearly report, {count} cases, cached (median of 5)", times),
                         (f"dashboard, {count} cases (median of 5)", dash_times)):
        median_ms = statistics.median(values) * 1000
        spread = f"min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}"
        report.add(Figure(name, median_ms, "ms", f"< {TARGET_REPORT_MS:.0f} ms" if at_target else "",
                          median_ms < TARGET_REPORT_MS if at_target else None,
                          "; ".join(filter(None, [spread, miss_by(median_ms, TARGET_REPORT_MS,
                                                                  higher_is_better=False)]))))
    report.add(Figure(f"yearly report, {count} cases, first (from the events)", cold_s * 1000, "ms",
                      note="fills the facts cache; later reports read it"))


# ============================================================================================= main
async def temporal_parts(home: Path, parts: list[str], args: argparse.Namespace, report: Report) -> None:
    server_home = home / "temporal"
    server_home.mkdir()
    with SmtpSink() as sink, running_dev_server(server_home) as server:
        say(f"Temporal dev server at {server.address}; SMTP sink on 127.0.0.1:{sink.port}")
        pipeline = bare = None
        if "pipeline" in parts:
            pipeline = await pipeline_part(server, home, sink, args, report)
        if "bare" in parts:
            bare = await bare_part(server, args, report)
        if pipeline is not None and bare is not None:
            ratio = pipeline / bare
            report.add(Figure("ratio pipeline / bare", ratio, "", f">= {TARGET_RATIO:.1f}",
                              ratio >= TARGET_RATIO, miss_by(ratio, TARGET_RATIO, higher_is_better=True)))
        if "index" in parts:
            await index_part(server, home, sink, args, report)
        if "memory" in parts:
            await memory_part(server, home, sink, args, report)


def machine() -> dict[str, Any]:
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "uname": " ".join(platform.uname()),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *sys.argv[1:]])}


def print_summary(report: Report, total: float) -> None:
    say(f"\n=== summary (total {total:.0f} s; load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}) ===")
    width = max(len(f.name) for f in report.figures) if report.figures else 10
    for f in report.figures:
        value = f"{f.value:.3f} {f.unit}".strip()
        target = f"target {f.target}" if f.target else ""
        say(f"{f.name:<{width}}  {value:>16}  {f.verdict():<4}  {target}  {f.note}".rstrip())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=200, help="cases through the pipeline and the bare shape")
    p.add_argument("--concurrency", type=int, default=20, help="cases driven at a time (both shapes)")
    p.add_argument("--warmup", type=int, default=5, help="untimed cases run first (both shapes)")
    p.add_argument("--open-cases", type=int, default=TARGET_MEMORY_CASES,
                   help="open cases for the worker memory figure")
    p.add_argument("--memory-budget", type=float, default=900,
                   help="seconds allowed for opening them; the figure is taken at what was opened")
    p.add_argument("--memory-batch", type=int, default=500, help="cases opened between memory samples")
    p.add_argument("--events", type=int, default=TARGET_CHAIN_EVENTS, help="events in the verified chain")
    p.add_argument("--index", type=int, default=TARGET_LIST_CASES,
                   help="cases in the listed index (list part) and behind the web pages (index part)")
    p.add_argument("--mail-cases", type=int, default=200,
                   help="cases for the decision -> SMTP latency (after the throughput run)")
    p.add_argument("--mail-concurrency", type=int, default=4, help="of those, driven at a time")
    p.add_argument("--runs", type=int, default=10, help="whole `appeals` processes per command timed")
    p.add_argument("--requests", type=int, default=50, help="requests per web page timed")
    p.add_argument("--open-concurrency", type=int, default=200,
                   help="workflow starts in flight at a time in the memory part")
    p.add_argument("--checkpoint-events", type=int, default=TARGET_CHECKPOINT_EVENTS,
                   help="signed events verified against a checkpoint")
    p.add_argument("--reports", type=int, default=TARGET_REPORT_CASES,
                   help="seeded cases in the report and dashboard part")
    p.add_argument("--workflow", choices=["tracks", "legacy"], default="tracks",
                   help="the workflow type of the pipeline's and the memory part's cases: tracks "
                        "(UrgentCaseTracks, what cases are opened with) or legacy (UrgentCase, "
                        "cases opened before per-action tracks)")
    p.add_argument("--only", choices=[*PARTS, "throughput"],
                   help="run one part (throughput: pipeline and bare, with the ratio)")
    p.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    return p.parse_args(argv)


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="appeals-bench-"))
        say(f"working directory (kept): {path}")
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="appeals-bench-") as tmp:
            yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    named = {"throughput": ["pipeline", "bare"], None: list(PARTS)}
    parts = named.get(args.only, [args.only])
    info = machine()
    say(f"{info['date']}  {info['uname']}\nCPUs {info['cpus']}, Python {info['python']}, "
        f"load average {info['load_average']}\n"
        f"command: {info['command']}")
    report = Report()
    started = time.perf_counter()
    with workdir(args.keep) as home:
        if {"pipeline", "bare", "index", "memory"} & set(parts):
            asyncio.run(temporal_parts(home, parts, args, report))
        if "chain" in parts:
            chain_part(home, args, report)
        if "list" in parts:
            list_part(home, args, report)
        if "checkpoint" in parts:
            checkpoint_part(home, args, report)
        if "report" in parts:
            report_part(home, args, report)
    total = time.perf_counter() - started
    print_summary(report, total)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "total_seconds": total,
                                         "figures": [asdict(f) for f in report.figures],
                                         "details": report.details}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
