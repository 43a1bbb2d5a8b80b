"""`make run`: the embedded stack in the foreground, one command on a laptop.

The Temporal dev server (its SQLite file under var/, the case search attributes registered) with
its web UI, the codec server that UI asks to decode payloads (on loopback), a local SMTP sink that
keeps every message under var/outbox, the worker and the web interface. Keys are created under
var/keys on first run and reused. Ctrl-C stops everything; running it again continues every open
case where it was, timers included, because the dev server and the event store keep their files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from stack.harness import (
    StackError,
    await_port,
    dev_server_command,
    host_port,
    require_free,
    stop_process,
    task_alive,
)
from stack.harness import start_dev_server as start_process
from stack.sink import OutboxSink
from web import serve
from worker.codec import EncryptionCodec
from worker.codec_server import build_codec_app
from worker.keys import KeyMaterialError
from worker.main import (
    ConfigurationError,
    build_activities,
    build_worker,
    checkpointer,
    connect,
    write_checkpoints,
)
from worker.search import register_search_attributes
from worker.settings import Settings, error_line, load_settings

# The embedded stack's codec server listens on loopback only, whatever APPEALS_CODEC_SERVER_HOST
# says (that is for the production service): it answers the person at this machine.
CODEC_HOST = "127.0.0.1"


def codec_endpoint(settings: Settings) -> str:
    """Where the dev server's UI (in the browser) finds the stack's codec server."""
    return f"http://{CODEC_HOST}:{settings.codec_server_port}"


def ui_origins(settings: Settings) -> list[str]:
    """The dev server UI's own page, under the names a browser on this machine may use for it:
    the only page the stack's codec server answers."""
    host, _ = host_port(settings.temporal_address)
    names = dict.fromkeys([host, "127.0.0.1", "localhost"])
    return [f"http://{name}:{settings.temporal_ui_port}" for name in names]


def dev_server_command_for(settings: Settings) -> list[str]:
    """The dev server as `make run` starts it: its UI on APPEALS_TEMPORAL_UI_PORT, decoding
    payloads through the stack's codec server."""
    host, port = host_port(settings.temporal_address)
    return dev_server_command(settings.var_dir.resolve() / "temporal.db", host, port,
                              ui_port=settings.temporal_ui_port,
                              codec_endpoint=codec_endpoint(settings),
                              extra=["--namespace", settings.temporal_namespace])


def start_dev_server(settings: Settings, logs: Path) -> subprocess.Popen[bytes]:
    return start_process(dev_server_command_for(settings), logs / "temporal.log", own_session=True)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the embedded stack owns Ctrl-C."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


async def serve_codec(settings: Settings) -> None:
    """The codec server for the dev server's UI, until cancelled: the payload keys of this stack,
    no token (the dev UI has no sign-in to forward one), and only the UI's own page may call
    (worker.codec_server.build_codec_app)."""
    app = build_codec_app(EncryptionCodec(settings.codec_keyring()), None, ui_origins(settings))
    config = uvicorn.Config(app, host=CODEC_HOST, port=settings.codec_server_port,
                            log_level="warning", access_log=False, server_header=False,
                            lifespan="off")
    server = _QuietServer(config)
    task = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise


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


async def wait_for_port(host: str, port: int, task: asyncio.Task[None],
                        what: str = "the web interface", seconds: float = 30) -> None:
    """Until the server accepts connections, so that "Ready." means ready."""
    await await_port(host, port, what=what, seconds=seconds, alive=task_alive(task, what))


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
    require_free(CODEC_HOST, settings.codec_server_port, "the codec server",
                 "APPEALS_CODEC_SERVER_PORT")
    activities = build_activities(settings)  # creates the keys on first run (mode 0600)
    sink = OutboxSink(settings.var_dir / "outbox", settings.smtp_host, settings.smtp_port)
    server = start_dev_server(settings, logs)
    sink.start()
    try:
        client = await connect_when_ready(settings, server)
        await register_search_attributes(client)
        worker = build_worker(client, settings, activities)
        codec = asyncio.create_task(serve_codec(settings))
        web = asyncio.create_task(serve(settings, client, activities.store, settings.web_host,
                                        settings.web_port))
        await wait_for_port(CODEC_HOST, settings.codec_server_port, codec, "the codec server")
        await wait_for_port(settings.web_host, settings.web_port, web)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Signed checkpoints of the audit chain, like the production worker writes them.
        checkpoints = asyncio.create_task(write_checkpoints(
            checkpointer(settings, activities.store), settings.checkpoint_interval_seconds, stop))
        async with worker:
            print(f"Temporal server  {settings.temporal_address}  "
                  f"(web UI http://{temporal_host}:{settings.temporal_ui_port})", flush=True)
            print(f"Codec server     {codec_endpoint(settings)}  (the Temporal UI shows payloads "
                  "decoded; it answers that UI's page only)", flush=True)
            print(f"SMTP sink        {settings.smtp_host}:{settings.smtp_port}  "
                  f"(messages kept in {settings.var_dir / 'outbox'}; `appeals outbox list`)", flush=True)
            print(f"Event store      {settings.database_url}  (signed checkpoints in "
                  f"{settings.checkpoint_dir})", flush=True)
            print(f"Worker           task queue {settings.task_queue}; logs in {logs}", flush=True)
            print(f"Web interface    http://{settings.web_host}:{settings.web_port}/  (sign in as a "
                  "user made with `appeals users add`, password set with `appeals users passwd`)",
                  flush=True)
            print("Ready. Ctrl-C stops everything; run it again to continue where cases were.",
                  flush=True)
            await asyncio.wait([asyncio.ensure_future(stop.wait()), web, codec],
                               return_when=asyncio.FIRST_COMPLETED)
            print("Stopping...", flush=True)
            stop.set()
            await checkpoints
            for task in (web, codec):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        sink.stop()
        activities.store.close()
        stop_process(server, 20)


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
