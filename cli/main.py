"""`appeals`: the secretariat's command line, a thin client of the case workflow and the event store.

Every command parses its input, calls the workflow (updates and the `status` query, through the one
encrypting data converter of `worker.main`) or the store, and prints the result: a short text for
people, JSON with `--json` for scripts.

Exit codes:
    0  done
    1  an audit verification found a disagreement, or an unexpected error (one line, no traceback)
    2  bad input: one line naming the field and the reason
    3  not found (case, user or outbox message)
    4  rejected by the workflow (its message is printed)
    5  a service is unreachable (Temporal, the event store, or no worker answering)
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import mailbox
import os
import re
import stat
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import yaml

from cli.casework import (
    CHOSEN_STATES,
    chosen_funds,
    find_fund,
    fund_advice,
    fund_application,
    informable_actions,
    signing_client,
    tracks_start,
)
from domain.case import SUPPLEMENTABLE
from domain.decisions import DECISIONS as DECISION_TABLE
from domain.errors import CaseRuleError, InvalidInput
from domain.intake import parse_intake, parse_verification
from domain.intake import reference as check_reference
from domain.vocab import Action, Outcome, PublicNaming, Role

T = TypeVar("T")

MAX_FILE_BYTES = 1024 * 1024
RPC_SECONDS = 60.0  # how long a decision or query waits for a worker to answer
OPEN_SECONDS = 30.0  # how long `case open` waits for the workflow to report the case opened

# What each decision (workflow update) may record as its first event in the store.
DECISION_EVENTS: dict[str, frozenset[str]] = {
    name: frozenset(d.events) for name, d in DECISION_TABLE.items()}
# The trail table's summary column shows these codes only, never free text.
SUMMARY_KEYS = ("action", "stage", "step", "level", "verdict", "risk_level", "granted",
                "public_naming", "kind", "fund", "outcome", "reprisals", "new_deadline", "message_id")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps line breaks and tabs


# ====================================================================================== errors
class CliError(Exception):
    """An expected failure: one line for the user and an exit code."""

    code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(CliError):
    code = 2

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


class NotFound(CliError):
    code = 3


class Rejected(CliError):
    code = 4


class Unreachable(CliError):
    code = 5


class VerificationFailed(CliError):
    code = 1


def one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", str(text)).split())


def clean(value: Any) -> str:
    """A value for a terminal table: no control characters (no escape sequences, no line breaks)."""
    return _CONTROL.sub("?", "" if value is None else str(value))


# ===================================================================================== context
# Whether this process created a Temporal client: its Rust runtime's threads can abort the
# interpreter's shutdown (temporalio/sdk-python#300), so such a process ends with os._exit.
_STATE = {"temporal": False}


class Env:
    """What a command needs, built on first use: settings, the store, the Temporal client."""

    def __init__(self, as_user: str | None) -> None:
        self.as_user = as_user
        self._settings: Any = None
        self._store: Any = None
        self._client: Any = None
        self._signing: Any = None

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from pydantic import ValidationError

            from worker.keys import KeyMaterialError
            from worker.settings import ENV_PREFIX, load_settings
            try:
                self._settings = load_settings()
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else "settings"
                raise BadInput(where, one_line(first["msg"])) from None
            except KeyMaterialError as exc:
                raise BadInput("settings", one_line(str(exc))) from None
        return self._settings

    def database_shown(self) -> str:
        """The event store URL without its password."""
        from sqlalchemy.engine import make_url
        try:
            return str(make_url(self.settings.database_url).render_as_string(hide_password=True))
        except Exception:  # noqa: BLE001 - an unparsable URL is shown by its scheme only
            return str(self.settings.database_url).split(":", 1)[0] + ":..."

    @property
    def store(self) -> Any:
        if self._store is None:
            from worker.keys import KeyMaterialError
            settings = self.settings
            try:
                key = settings.event_store_cipher_key()
            except KeyMaterialError as exc:
                raise BadInput("settings", one_line(str(exc))) from None
            from store.app import CaseStore
            try:
                self._store = CaseStore(settings.database_url, key)
            except ModuleNotFoundError:
                scheme = str(settings.database_url).split(":", 1)[0]
                raise BadInput("APPEALS_DATABASE_URL",
                               f"no database driver installed for {scheme}:// "
                               "(PostgreSQL: postgresql+psycopg://...)") from None
            except Exception as exc:
                if is_database_down(exc):
                    raise Unreachable(f"event store not reachable at {self.database_shown()}") from None
                raise
        return self._store

    async def client(self) -> Any:
        if self._client is None:
            from worker.main import connect
            _STATE["temporal"] = True
            try:
                self._client = await connect(self.settings)
            except RuntimeError:
                raise temporal_down(self.settings) from None
        return self._client

    async def signing_client(self) -> Any:
        """The client that signs each case opening and decision as the acting user (--as or
        APPEALS_USER), with the decision key the workers check (desk.signing)."""
        if self._signing is None:
            from worker.keys import KeyMaterialError
            try:
                key = self.settings.decision_signing_key()
            except KeyMaterialError as exc:
                raise BadInput("settings", one_line(str(exc))) from None
            self._signing = signing_client(await self.client(), key, self._identity)
        return self._signing

    def _identity(self, arg: Any) -> tuple[str, list[str]] | None:
        actor = self.actor(required=False)
        if getattr(arg, "actor", None) != actor:
            return None  # an input in someone else's name is sent unsigned (and refused)
        return actor, sorted(self.store.user_roles(actor))

    def actor(self, *, required: bool = True) -> str:
        """The person deciding: `--as`, else APPEALS_USER; an active user of the registry."""
        name = self.as_user or os.environ.get("APPEALS_USER", "")
        if not name:
            raise BadInput("--as", "who is deciding? give --as USERNAME or set APPEALS_USER")
        if required and not self.store.user_roles(name):
            raise BadInput("--as", f"user {one_line(name)[:100]} is not registered")
        return name

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def temporal_down(settings: Any) -> Unreachable:
    return Unreachable(f"Temporal server not reachable at {settings.temporal_address} "
                       "— is `make run` running?")


def is_database_down(exc: BaseException) -> bool:
    from eventsourcing import persistence
    from sqlalchemy import exc as sa_exc
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError
                      | persistence.OperationalError | persistence.InterfaceError)


def env_of(ctx: click.Context) -> Env:
    obj = ctx.find_root().obj
    assert isinstance(obj, Env)
    return obj


def run(coro: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await coro
    return asyncio.run(wrapped())


async def answered(settings: Any, what: Awaitable[T], seconds: float = RPC_SECONDS) -> T:
    """Wait for a worker's answer; none in time means no worker is running."""
    no_worker = Unreachable(f"no worker answered on task queue {settings.task_queue} within "
                            f"{seconds:.0f} s — is `make run` running?")
    try:
        return await asyncio.wait_for(what, seconds)
    except TimeoutError:
        raise no_worker from None
    except Exception as exc:
        status = rpc_status(exc)
        if status in ("DEADLINE_EXCEEDED", "CANCELLED"):  # the server's or the SDK's RPC timeout
            raise no_worker from None
        if status == "UNAVAILABLE":
            raise temporal_down(settings) from None
        raise


def rpc_status(exc: BaseException) -> str:
    from temporalio.service import RPCError
    return exc.status.name if isinstance(exc, RPCError) else ""


# ======================================================================================= files
class _YamlLoader(yaml.SafeLoader):
    """Safe YAML with dates left as text (the intake wants YYYY-MM-DD strings) and no aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases are not accepted")
        return super().compose_node(parent, index)


# YAML 1.1 would read 2026-11-01 as a date and the country code NO (or yes, on, off) as a boolean.
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                  re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def load_file(path: str, field: str) -> dict[str, Any]:
    """An object from a JSON or YAML file (by extension), refused unread when over 1 MB."""
    data = load_data(path, field)
    if not isinstance(data, dict):
        raise BadInput(field, "must hold an object of named fields")
    return data


def load_list(path: str, field: str) -> list[Any]:
    """A list from a JSON or YAML file (by extension), refused unread when over 1 MB."""
    data = load_data(path, field)
    if not isinstance(data, list):
        raise BadInput(field, "must hold a list")
    return data


def load_data(path: str, field: str) -> Any:
    """The data of a JSON or YAML file (by extension), refused unread when over 1 MB."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise BadInput(field, "must be a .json, .yaml or .yml file")
    try:
        # Size and kind first, without reading (a FIFO or device would block or never end).
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BadInput(field, "not a regular file")
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
                raise BadInput(field, "larger than 1 MB")
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(field, f"no such file: {one_line(path)[:200]}") from None
    except IsADirectoryError:
        raise BadInput(field, "is a directory, not a file") from None
    except PermissionError:
        raise BadInput(field, "cannot be read (permission denied)") from None
    except OSError as exc:
        raise BadInput(field, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise BadInput(field, "larger than 1 MB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(field, "not UTF-8 text") from None
    data: Any
    if suffix == ".json":
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise BadInput(field, f"not valid JSON (line {exc.lineno})") from None
        except (ValueError, RecursionError):
            raise BadInput(field, "not valid JSON") from None
    else:
        try:
            data = yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            line = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
            raise BadInput(field, f"not valid YAML{line}") from None
        except (yaml.YAMLError, RecursionError) as exc:
            reason = f": {exc}" if isinstance(exc, yaml.YAMLError) and str(exc) else ""
            raise BadInput(field, f"not valid YAML{reason}") from None
    try:
        # What goes to the workflow must survive JSON (the payload converter): no odd YAML types.
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError):
        raise BadInput(field, "holds values that are not plain text, numbers, lists or objects") from None
    return data


def checked(parse: Callable[[], T]) -> T:
    """Run a domain check; its rule errors are bad input (they name the field)."""
    try:
        return parse()
    except InvalidInput as exc:
        raise BadInput(exc.field, exc.reason) from None
    except CaseRuleError as exc:
        message = exc.message
        field, sep, reason = message.partition(": ")
        if sep and " " not in field:
            raise BadInput(field, reason) from None
        raise BadInput("intake", message) from None


def choice(value: str, allowed: Iterable[str], field: str) -> str:
    names = [str(a) for a in allowed]
    if value not in names:
        raise BadInput(field, f"must be one of {', '.join(names)}")
    return value


def text_option(value: str | None, field: str, *, required: bool = True) -> str:
    value = value or ""
    if required and not value.strip():
        raise BadInput(field, "is required")
    return value


# ====================================================================================== output
def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[clean(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def pending_text(item: dict[str, Any]) -> str:
    text = str(item.get("decision", ""))
    if item.get("action"):
        text += f" {item['action']}"
    if item.get("fund"):
        text += f" fund {item['fund']}"
    roles = item.get("roles") or []
    if roles:
        text += f" ({'/'.join(roles)})"
    if item.get("not_by"):
        text += f" not by {item['not_by']}"
    if item.get("missing"):
        text += f" missing {', '.join(item['missing'])}"
    return clean(text)


def stage_text(status: dict[str, Any]) -> str:
    """The case's stage (its earliest track's step) and, with tracks, how many are at each step."""
    detail = status.get("stage_detail")
    return f"{status.get('stage')}" + (f" ({detail})" if detail else "")


def brief_status(status: dict[str, Any]) -> str:
    pending = ", ".join(pending_text(p) for p in status.get("pending") or []) or "nothing"
    return clean(f"{status.get('reference')}: stage {status.get('stage')}; pending: {pending}")


def track_notes(track: dict[str, Any]) -> str:
    """Why a track is where it is: held fields, funds, delivery retries, why it ended."""
    notes = []
    if track.get("ended"):
        notes.append(f"ended: {track['ended']}")
    if track.get("held"):
        notes.append(f"held: missing {', '.join(track['held'])}")
    funds = track.get("funds") or {}
    if funds:
        notes.append("funds: " + ", ".join(f"{f} {state}" for f, state in funds.items()))
    delivery = track.get("delivery") or {}
    if delivery.get("retrying_since"):
        notes.append(f"retrying since {_when(_parse_when(delivery['retrying_since']))} "
                     f"({delivery.get('attempts', 0)} attempts, last error "
                     f"{delivery.get('last_error') or 'unknown'})")
    if track.get("failures"):
        notes.append(f"{track['failures']} failed")
    return "; ".join(notes)


def _parse_when(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def print_status(status: dict[str, Any]) -> None:
    risk = status.get("risk_level") or f"{status.get('urgency')} (urgency)"
    click.echo(clean(f"{status.get('reference')}  stage {stage_text(status)}  risk {risk}"))
    if status.get("deadline"):
        click.echo(clean(f"deadline  {_when(_parse_when(status['deadline']))} UTC  (escalation "
                         f"level {status.get('escalation_level', 0)})"))
    if status.get("verification_deadline"):
        click.echo(clean(f"verification deadline  "
                         f"{_when(_parse_when(status['verification_deadline']))} UTC"))
    if status.get("public_action_advised") is not None:
        click.echo("public action advised  " + ("yes" if status["public_action_advised"] else "no"))
    if status.get("next_checkin"):
        click.echo(clean(f"next check-in  {_when(_parse_when(status['next_checkin']))} UTC"))
    if status.get("outcome"):
        click.echo(clean(f"outcome  {status['outcome']}"))
    tracks = status.get("tracks")
    if tracks:
        click.echo("tracks:")
        rows = [[f"  {a}", t.get("step"), t.get("consent"), t.get("clearance"), t.get("dispatch"),
                 _when(_parse_when(t.get("deadline"))) or "-", t.get("escalation_level", 0),
                 track_notes(t)] for a, t in tracks.items()]
        table(rows, ["  action", "step", "consent", "clearance", "dispatch", "deadline (UTC)",
                     "level", "notes"])
    elif status.get("actions"):  # a case opened before per-action tracks
        click.echo("actions:")
        rows = [[f"  {a}", s.get("consent"), s.get("clearance"), s.get("dispatch")]
                for a, s in status["actions"].items()]
        table(rows, ["  action", "consent", "clearance", "dispatch"])
    pending = status.get("pending") or []
    click.echo("pending:" + ("" if pending else " nothing"))
    for item in pending:
        click.echo(f"  {pending_text(item)}")


# ========================================================================== the command line
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--as", "as_user", metavar="USERNAME",
              help="Who is acting (default: the APPEALS_USER environment variable).")
@click.pass_context
def cli(ctx: click.Context, as_user: str | None) -> None:
    """Urgent appeals: the secretariat's command line.

    Exit codes: 0 done; 1 verification failed or unexpected error; 2 bad input; 3 not found;
    4 rejected by the workflow; 5 a service unreachable.
    """
    ctx.obj = Env(as_user)
    ctx.call_on_close(ctx.obj.close)


def as_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--as` on a subcommand too (it wins over the one before the command)."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value:
            env_of(ctx).as_user = value

    return click.option("--as", "as_user", metavar="USERNAME", expose_value=False, callback=remember,
                        help="Who is acting (default: APPEALS_USER).")(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


# ========================================================================================= case
@cli.group()
def case() -> None:
    """Open cases, record decisions, list and show cases."""


@case.command("open")
@click.argument("file", metavar="FILE")
@as_option
@json_option
@click.pass_context
def case_open(ctx: click.Context, file: str, as_json: bool) -> None:
    """Open a case from an intake FILE (.json, .yaml or .yml); prints its reference.

    The reference is the file's `reference` field, or the next UA-<year>-<number>.
    """
    env = env_of(ctx)
    data = load_file(file, "FILE")
    given = data.pop("reference", None)
    if given is not None:
        checked(lambda: check_reference(given))
    checked(lambda: parse_intake(data, today=datetime.now(UTC).date()))
    actor = env.actor()
    status = run(_open_case(env, given, data, actor))
    if as_json:
        emit_json(status)
    else:
        click.echo(status["reference"])


async def _open_case(env: Env, given: str | None, intake: dict[str, Any], actor: str) -> dict[str, Any]:
    from temporalio.common import WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from workflows.tracks import TrackedCaseWorkflow

    store, settings = env.store, env.settings
    client = await env.signing_client()
    known = {row["reference"] for row in store.list_cases()}
    if given is not None and given in known:
        raise BadInput("reference", f"a case {given} already exists")
    number = len(known) + 1
    year = datetime.now(UTC).year
    for _ in range(1000):
        ref = given or f"UA-{year}-{number:04d}"
        if ref in known:
            number += 1
            continue
        try:
            handle = await client.start_workflow(
                TrackedCaseWorkflow.run, tracks_start(ref, intake, actor, settings), id=ref,
                task_queue=settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            if given is not None:
                raise BadInput("reference", f"a case {given} already exists") from None
            number += 1
            continue
        except Exception as exc:
            if rpc_status(exc) == "UNAVAILABLE":
                raise temporal_down(settings) from None
            raise
        break
    else:
        raise Rejected("no free case reference found; give one in the file's `reference` field")
    return await _wait_opened(settings, handle)


async def _wait_opened(settings: Any, handle: Any) -> dict[str, Any]:
    from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

    from workflows.tracks import TrackedCaseWorkflow as WF

    loop = asyncio.get_running_loop()
    end = loop.time() + OPEN_SECONDS
    not_opened = Unreachable(f"case {handle.id} was started, but no worker on task queue "
                             f"{settings.task_queue} has opened it within {OPEN_SECONDS:.0f} s — is "
                             "`make run` running?")
    while loop.time() < end:
        try:
            status: dict[str, Any] = await answered(settings, handle.query(WF.status),
                                                    max(1.0, end - loop.time()))
        except Unreachable as exc:
            if "no worker" in exc.message:
                raise not_opened from None
            raise
        if status.get("stage") != "intake":
            return status
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            try:
                await handle.result()
            except WorkflowFailureError as exc:
                raise Rejected(one_line(getattr(exc.cause, "message", "") or "the case could not "
                                        "be opened")) from None
        await asyncio.sleep(0.2)
    raise not_opened


async def _decide(env: Env, ref: str, update: Any, arg: Any) -> dict[str, Any]:
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.exceptions import ApplicationError

    # The update names are the same on both workflow types (UrgentCase, UrgentCaseTracks), so the
    # tracked type's methods address cases opened before per-action tracks too.
    client = await env.signing_client()
    handle = client.get_workflow_handle(ref)
    try:
        result: dict[str, Any] = await answered(env.settings, handle.execute_update(update, arg))
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        if "expected but not found" in message:  # an update the older workflow type lacks
            raise Rejected("This case was opened before per-action tracks; it does not take "
                           f"{getattr(update, '__name__', 'this decision')}.") from None
        raise Rejected(one_line(message)) from None
    except Exception as exc:
        _not_running(env, ref, exc)
        raise
    return result


def _not_running(env: Env, ref: str, exc: BaseException) -> None:
    """Map a failed call to a case workflow: a closed or unknown case, or Temporal down."""
    status = rpc_status(exc)
    if status == "NOT_FOUND":
        if any(row["reference"] == ref for row in env.store.list_cases()):
            raise Rejected("This case is closed; it can be read but not changed.") from None
        raise NotFound(f"case {one_line(ref)[:60]} not found") from None
    if status == "UNAVAILABLE":
        raise temporal_down(env.settings) from None


async def _running_status(env: Env, ref: str) -> dict[str, Any]:
    """The status query of a running case (for commands that build their input from it)."""
    from workflows.tracks import TrackedCaseWorkflow as WF

    client = await env.client()
    try:
        status: dict[str, Any] = await answered(env.settings,
                                                client.get_workflow_handle(ref).query(WF.status))
    except Exception as exc:
        _not_running(env, ref, exc)
        raise
    return status


def decision(ctx: click.Context, ref: str, update: Any, arg: Any, as_json: bool,
             tracks_only: str | None = None) -> None:
    """Send one decision; `tracks_only` names an option that only cases with per-action tracks
    understand (an older case is asked first, and the option refused rather than ignored)."""
    env = env_of(ctx)

    async def decide() -> dict[str, Any]:
        if tracks_only is not None and not (await _running_status(env, ref)).get("tracked"):
            raise BadInput(tracks_only, "this case was opened before per-action tracks and does "
                           "not take it")
        return await _decide(env, ref, update, arg)

    decided(run(decide()), as_json)


def decided(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(status)
    else:
        click.echo(brief_status(status))


@case.command("verify")
@click.argument("ref", metavar="REF")
@click.argument("file", metavar="FILE")
@as_option
@json_option
@click.pass_context
def case_verify(ctx: click.Context, ref: str, file: str, as_json: bool) -> None:
    """Record the threat verification from FILE (.json, .yaml or .yml)."""
    from workflows.inputs import VerificationInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    data = load_file(file, "FILE")
    checked(lambda: parse_verification(data))
    actor = env_of(ctx).actor()
    decision(ctx, ref, WF.record_verification, VerificationInput(actor, data), as_json)


ACTIONS = [a.value for a in Action]


@case.command("consent")
@click.argument("ref", metavar="REF")
@click.argument("action", metavar="ACTION")
@click.option("--grant", "kind", flag_value="grant", help="The grantee consents to ACTION.")
@click.option("--refuse", "kind", flag_value="refuse", help="The grantee refuses ACTION.")
@click.option("--withdraw", "kind", flag_value="withdraw", help="The grantee withdraws consent.")
@click.option("--conditions", help="The grantee's conditions (with --grant).")
@click.option("--reason", help="Why (with --refuse or --withdraw).")
@click.option("--given-by", "given_by", metavar="WHO",
              help="Who consented, for every defender (with --grant): defender, relative or "
                   "lawyer. A disappeared defender, or one held incommunicado, cannot consent "
                   "personally.")
@click.option("--relationship", help="The relative's or lawyer's relationship to the defenders.")
@click.option("--channel", help="How consent was given: one of the consent channels "
              "(in_person, phone, video_call, secure_message, email, letter, through_grantee).")
@click.option("--given-at", "given_at", metavar="ISO-DATETIME",
              help="When consent was given, with a time zone (default: now).")
@click.option("--naming", help="How every defender may be named in public reports (with --grant): "
              + ", ".join(PublicNaming) + ".")
@click.option("--consents", "consents_file", metavar="FILE",
              help="One consent record per defender (.json, .yaml or .yml list of {defender, "
                   "given_by, relationship, channel, given_at}), instead of --given-by and the rest.")
@click.option("--publicity", "publicity", multiple=True, metavar="N=NAMING",
              help="Defender N's naming choice (repeat per person; overrides --naming for N).")
@as_option
@json_option
@click.pass_context
def case_consent(ctx: click.Context, ref: str, action: str, kind: str | None, conditions: str | None,
                 reason: str | None, given_by: str | None, relationship: str | None,
                 channel: str | None, given_at: str | None, naming: str | None,
                 consents_file: str | None, publicity: tuple[str, ...], as_json: bool) -> None:
    """Record the grantee's consent decision for one ACTION.

    With --grant, say who consented for each defender, how and when: --given-by, --relationship,
    --channel and --given-at for everyone at once, or --consents FILE with one record per defender.
    """
    from workflows.inputs import ConsentInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    choice(action, ACTIONS, "ACTION")
    if kind is None:
        raise BadInput("--grant/--refuse/--withdraw", "choose one")
    detail = {"--given-by": given_by, "--relationship": relationship, "--channel": channel,
              "--given-at": given_at, "--consents": consents_file,
              "--publicity": publicity or None, "--naming": naming, "--conditions": conditions}
    if kind != "grant":
        for option, value in detail.items():
            if value is not None:
                raise BadInput(option, "goes with --grant")
        env = env_of(ctx)
        update = WF.refuse_consent if kind == "refuse" else WF.withdraw_consent
        decision(ctx, ref, update, ConsentInput(env.actor(), action, reason or ""), as_json)
        return
    if reason is not None:
        raise BadInput("--reason", "goes with --refuse or --withdraw; use --conditions with --grant")
    if consents_file is not None:
        for option in ("--given-by", "--relationship", "--channel", "--given-at"):
            if detail[option] is not None:
                raise BadInput(option, "give it in the --consents file instead")
    public_naming = choice(naming or PublicNaming.INITIALS_ONLY.value, PublicNaming, "--naming")
    choices = _publicity_options(publicity)
    records = load_list(consents_file, "--consents") if consents_file is not None else None
    when = _given_at(given_at)
    env = env_of(ctx)
    actor = env.actor()

    async def grant() -> dict[str, Any]:
        status = await _running_status(env, ref)
        arg = ConsentInput(actor, action, conditions or "", public_naming)
        if status.get("tracked"):
            people = len(status.get("represented") or [])
            arg.consents = records if records is not None else _same_for_everyone(
                people, given_by, relationship, channel, when)
            arg.publicity = {str(i): public_naming for i in range(people)} | choices
            _check_consent(status, arg)
        elif records is not None or given_by is not None or choices:
            option = ("--consents" if records is not None
                      else "--given-by" if given_by is not None else "--publicity")
            raise BadInput(option, "this case was opened before per-person consent records; "
                           "use --naming for everyone")
        return await _decide(env, ref, WF.grant_consent, arg)

    decided(run(grant()), as_json)


def _publicity_options(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        person, sep, naming = value.partition("=")
        if not sep or not person.strip().isdigit():
            raise BadInput("--publicity", "write N=NAMING, e.g. 0=full_names (N counts defenders "
                           "from 0, in intake order)")
        out[str(int(person))] = choice(naming.strip(), PublicNaming, "--publicity")
    return out


def _given_at(value: str | None) -> str:
    if value is None:
        return datetime.now(UTC).isoformat(timespec="seconds")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput("--given-at", "must be an ISO date and time, e.g. 2026-11-03T09:30:00+03:00"
                       ) from None
    if when.tzinfo is None:
        raise BadInput("--given-at", "needs a time zone, e.g. 2026-11-03T09:30:00+03:00 or ...Z")
    return when.isoformat()


def _same_for_everyone(people: int, given_by: str | None, relationship: str | None,
                       channel: str | None, when: str) -> list[dict[str, Any]]:
    """One record per defender from the simple options (a case of several people whose consent
    came differently needs --consents FILE)."""
    from domain.rules import CONSENT_CHANNELS, GIVERS

    if given_by is None:
        raise BadInput("--given-by", "who consented? " + ", ".join(GIVERS)
                       + " (or give one record per defender with --consents FILE)")
    choice(given_by, GIVERS, "--given-by")
    if channel is None:
        raise BadInput("--channel", "how was consent given? " + ", ".join(CONSENT_CHANNELS))
    choice(channel, CONSENT_CHANNELS, "--channel")
    if given_by != "defender" and not (relationship or "").strip():
        raise BadInput("--relationship", f"is required when a {given_by} consents "
                       "(e.g. sister, their lawyer)")
    return [{"defender": i, "given_by": given_by, "relationship": relationship or "",
             "channel": channel, "given_at": when} for i in range(people)]


def _check_consent(status: dict[str, Any], arg: Any) -> None:
    """The workflow's own rule for consent records, applied before sending (exit 2 on bad input)."""
    from domain import rules
    from domain.view import CaseView

    view = CaseView.from_json(status)
    checked(lambda: rules.consent_records(view, arg.consents, arg.publicity, datetime.now(UTC)))


@case.command("clear")
@click.argument("ref", metavar="REF")
@click.argument("action", metavar="ACTION")
@click.option("--grant", "granted", flag_value=True, default=None, help="Clear ACTION.")
@click.option("--deny", "granted", flag_value=False, help="Deny clearance for ACTION.")
@click.option("--reason", default="", help="The ministry's reasoning.")
@as_option
@json_option
@click.pass_context
def case_clear(ctx: click.Context, ref: str, action: str, granted: bool | None, reason: str,
               as_json: bool) -> None:
    """Record the ministry's clearance decision for one ACTION."""
    from workflows.inputs import ClearanceInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    choice(action, ACTIONS, "ACTION")
    if granted is None:
        raise BadInput("--grant/--deny", "choose one")
    actor = env_of(ctx).actor()
    decision(ctx, ref, WF.record_clearance, ClearanceInput(actor, action, granted, reason),
             as_json)


@case.command("extend")
@click.argument("ref", metavar="REF")
@click.option("--until", "until", metavar="ISO-DATETIME",
              help="The new deadline, with a time zone (e.g. 2026-12-01T17:00:00+01:00).")
@click.option("--reason", help="Why the deadline moves (recorded).")
@click.option("--action", default="", metavar="ACTION",
              help="The action whose deadline moves (cases with per-action tracks); without it, "
                   "the verification deadline.")
@as_option
@json_option
@click.pass_context
def case_extend(ctx: click.Context, ref: str, until: str | None, reason: str | None, action: str,
                as_json: bool) -> None:
    """Move a deadline later (head of secretariat): an action's, or the verification's."""
    from workflows.inputs import ExtensionInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    if not until:
        raise BadInput("--until", "is required")
    try:
        new_deadline = datetime.fromisoformat(until)
    except ValueError:
        raise BadInput("--until", "must be an ISO date and time, e.g. 2026-12-01T17:00:00+01:00") from None
    if new_deadline.tzinfo is None:
        raise BadInput("--until", "needs a time zone, e.g. 2026-12-01T17:00:00+01:00 or ...Z")
    text = text_option(reason, "--reason")
    if action:
        choice(action, ACTIONS, "--action")
    env = env_of(ctx)
    arg = ExtensionInput(env.actor(), new_deadline, text, action)

    async def extend() -> dict[str, Any]:
        status = await _running_status(env, ref)
        if not status.get("tracked"):
            if action:
                raise BadInput("--action", "this case was opened before per-action tracks: it "
                               "has one deadline; leave --action out")
        elif not action and not status.get("verification_deadline"):
            running = [a for a, t in (status.get("tracks") or {}).items() if t.get("deadline")]
            raise BadInput("--action", "the case is past its verification: name the action whose "
                           "deadline moves (" + (", ".join(running) or "none has a deadline")
                           + ")")
        return await _decide(env, ref, WF.extend_deadline, arg)

    decided(run(extend()), as_json)


@case.command("respond")
@click.argument("ref", metavar="REF")
@click.argument("action", metavar="ACTION")
@click.option("--summary", help="What the recipient answered.")
@click.option("--recipient", default="", metavar="ADDRESS-OR-FUND",
              help="Which recipient of ACTION answered: one of its addresses, or a fund id.")
@as_option
@json_option
@click.pass_context
def case_respond(ctx: click.Context, ref: str, action: str, summary: str | None, recipient: str,
                 as_json: bool) -> None:
    """Record a recipient's response to the message sent for ACTION."""
    from workflows.inputs import ResponseInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    choice(action, ACTIONS, "ACTION")
    text = text_option(summary, "--summary")
    actor = env_of(ctx).actor()
    decision(ctx, ref, WF.record_response, ResponseInput(actor, action, text, recipient.strip()),
             as_json, tracks_only="--recipient" if recipient.strip() else None)


@case.command("inform")
@click.argument("ref", metavar="REF")
@click.option("--text", "information", help="The further information.")
@click.option("--send", is_flag=True, help="Also mail it to the earlier recipients of every "
              "action sent so far.")
@click.option("--send-to", "send_to", multiple=True, metavar="ACTION",
              help="Mail it to the earlier recipients of ACTION only (repeat for more actions).")
@click.option("--changes", metavar="FILE",
              help="Intake fields to complete or correct (.json, .yaml or .yml).")
@as_option
@json_option
@click.pass_context
def case_inform(ctx: click.Context, ref: str, information: str | None, send: bool,
                send_to: tuple[str, ...], changes: str | None, as_json: bool) -> None:
    """Add further information to a case (and send it on with --send or --send-to)."""
    from workflows.inputs import InformationInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    text = text_option(information, "--text")
    intake_changes = None
    if changes is not None:
        intake_changes = load_file(changes, "--changes")
        fixed = sorted(set(intake_changes) - SUPPLEMENTABLE)
        if fixed:
            raise BadInput("--changes", f"{one_line(fixed[0])[:40]} cannot be changed after intake "
                           f"(allowed: {', '.join(sorted(SUPPLEMENTABLE))})")
    if send and send_to:
        raise BadInput("--send", "give either --send (every action sent so far) or --send-to")
    for action in send_to:
        choice(action, ACTIONS, "--send-to")
    env = env_of(ctx)
    arg = InformationInput(env.actor(), text, send, intake_changes,
                           list(dict.fromkeys(send_to)) if send_to else None)

    async def inform() -> dict[str, Any]:
        if send_to:
            status = await _running_status(env, ref)
            if not status.get("tracked"):
                raise BadInput("--send-to", "this case was opened before per-action tracks: use "
                               "--send for every earlier recipient")
            informable = informable_actions(status)
            for action in arg.send_to or []:
                if action not in informable:
                    raise BadInput("--send-to", f"{action} has no earlier recipient who may be "
                                   "informed (" + (", ".join(sorted(informable)) or "none has") + ")")
        return await _decide(env, ref, WF.add_further_information, arg)

    decided(run(inform()), as_json)



@case.command("checkin")
@click.argument("ref", metavar="REF")
@click.option("--summary", help="What the defender reported.")
@click.option("--reprisals", is_flag=True, help="The defender reports reprisals.")
@as_option
@json_option
@click.pass_context
def case_checkin(ctx: click.Context, ref: str, summary: str | None, reprisals: bool, as_json: bool) -> None:
    """Record a check-in with the defenders."""
    from workflows.inputs import CheckinInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    text = text_option(summary, "--summary")
    actor = env_of(ctx).actor()
    decision(ctx, ref, WF.record_checkin, CheckinInput(actor, text, reprisals), as_json)


@case.command("close")
@click.argument("ref", metavar="REF")
@click.option("--outcome", help="One of " + ", ".join(Outcome) + ".")
@click.option("--summary", default="", help="A closing note.")
@as_option
@json_option
@click.pass_context
def case_close(ctx: click.Context, ref: str, outcome: str | None, summary: str, as_json: bool) -> None:
    """Close a case with an outcome."""
    from workflows.inputs import CloseInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    if not outcome:
        raise BadInput("--outcome", "is required")
    choice(outcome, Outcome, "--outcome")
    actor = env_of(ctx).actor()
    decision(ctx, ref, WF.close, CloseInput(actor, outcome, summary), as_json)


# ============================================================================ emergency funds
def _stored_case(env: Env, ref: str) -> Any:
    from store.app import CaseNotFound
    try:
        return env.store.get(ref)
    except (CaseNotFound, InvalidInput):
        raise NotFound(f"case {one_line(ref)[:60]} not found") from None


def _fund_directory() -> list[Any]:
    from activities.directories import DirectoryFileError, load_fund_directory
    try:
        return load_fund_directory()
    except DirectoryFileError as exc:
        raise CliError(f"fund directory: {one_line(str(exc))}") from None


def _known_funds(funds: Iterable[str], field: str) -> list[Any]:
    directory = _fund_directory()
    found = []
    for fund_id in funds:
        fund = find_fund(directory, fund_id)
        if fund is None:
            raise BadInput(field, f"{one_line(fund_id)[:40]} is not in the fund directory "
                           f"({', '.join(f.id for f in directory)})")
        found.append(fund)
    return found


@case.command("funds")
@click.argument("ref", metavar="REF")
@as_option
@json_option
@click.pass_context
def case_funds(ctx: click.Context, ref: str, as_json: bool) -> None:
    """The emergency funds for a case: those suggested (best first) with why each fits, and those
    excluded with why not. Choose with `appeals case choose-funds`."""
    env = env_of(ctx)
    stored = _stored_case(env, ref)
    advice = fund_advice(stored, _fund_directory(), env.settings, datetime.now(UTC).date())
    if as_json:
        emit_json(advice)
        return
    request = (f"EUR {advice['amount_eur']:,} for {advice['purpose'] or 'no stated purpose'}"
               if isinstance(advice["amount_eur"], int) else "no fund request in the intake")
    step = f"; track step {advice['step']}" if advice["step"] else ""
    asked = "" if advice["requested"] else " (emergency_fund is not a proposed action)"
    click.echo(clean(f"{ref}: {request}{step}{asked}"))
    if advice["chosen"]:
        click.echo("chosen:")
        table([[f"  {c['fund_id']}", c["state"], c["channel"], c["form_url"]]
               for c in advice["chosen"]], ["  fund", "state", "channel", "form"])
    click.echo("suggested, best first:" + ("" if advice["suggested"] else " none"))
    if advice["suggested"]:
        table([[f"  {s['fund_id']}", s["channel"], "; ".join(s["reasons"])]
               for s in advice["suggested"]], ["  fund", "channel", "why it fits"])
        checks = [[f"  {s['fund_id']}", w] for s in advice["suggested"] for w in s["warnings"]]
        if checks:
            click.echo("check before applying:")
            table(checks, ["  fund", "check"])
    click.echo("excluded:" + ("" if advice["excluded"] else " none"))
    if advice["excluded"]:
        table([[f"  {e['fund_id']}", "; ".join(e["reasons"])] for e in advice["excluded"]],
              ["  fund", "why not"])


@case.command("choose-funds")
@click.argument("ref", metavar="REF")
@click.argument("funds", metavar="FUND...", nargs=-1, required=True)
@click.option("--reason", default="", help="Why these funds (recorded).")
@as_option
@json_option
@click.pass_context
def case_choose_funds(ctx: click.Context, ref: str, funds: tuple[str, ...], reason: str,
                      as_json: bool) -> None:
    """Choose the emergency fund(s) to apply to, among those `appeals case funds` suggests.

    A fund that takes e-mail gets the application from the system; for a fund that takes web
    forms, print the text with `appeals case fund-application` and record the submission with
    `appeals case fund-submitted`."""
    from workflows.inputs import FundChoiceInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    _known_funds(funds, "FUND")
    actor = env_of(ctx).actor()
    decision(ctx, ref, WF.choose_funds, FundChoiceInput(actor, list(funds), reason), as_json)


@case.command("fund-submitted")
@click.argument("ref", metavar="REF")
@click.argument("fund", metavar="FUND")
@click.option("--note", default="", help="A note on the submission (e.g. the fund's receipt number).")
@as_option
@json_option
@click.pass_context
def case_fund_submitted(ctx: click.Context, ref: str, fund: str, note: str, as_json: bool) -> None:
    """Record that staff submitted the application through FUND's own web form."""
    from workflows.inputs import FundSubmissionInput
    from workflows.tracks import TrackedCaseWorkflow as WF

    _known_funds([fund], "FUND")
    actor = env_of(ctx).actor()
    decision(ctx, ref, WF.record_fund_submission, FundSubmissionInput(actor, fund, note), as_json)


@case.command("fund-application")
@click.argument("ref", metavar="REF")
@click.argument("fund", metavar="FUND")
@json_option
@click.pass_context
def case_fund_application(ctx: click.Context, ref: str, fund: str, as_json: bool) -> None:
    """Print the application prepared for FUND, a fund chosen for the case: the text to paste
    into the fund's web form."""
    from activities.messages import MessageError

    found = _known_funds([fund], "FUND")[0]
    stored = _stored_case(env_of(ctx), ref)
    state = dict(_chosen(stored)).get(fund)
    if state not in CHOSEN_STATES:
        raise Rejected(f"Fund {fund} is not chosen for {ref}; choose it first with "
                       "`appeals case choose-funds`.")
    try:
        composed = fund_application(stored, found)
    except MessageError as exc:
        raise Rejected(one_line(str(exc))) from None
    where = (f"the fund's web form at {found.form_url}" if found.form_url
             else f"{found.address} (the system sends it)")
    if as_json:
        emit_json({"reference": ref, "fund_id": found.id, "name": found.name, "state": state,
                   "channel": found.channel.value, "form_url": found.form_url,
                   "address": found.address, "subject": composed.subject, "text": composed.text})
        return
    click.echo(clean(f"Fund: {found.name} ({found.id}, {state})"))
    click.echo(clean(f"Apply through: {where}"))
    click.echo(clean(f"Subject: {composed.subject}"))
    click.echo("")
    click.echo(_BODY_CONTROL.sub("?", composed.text.replace("\r\n", "\n")).rstrip("\n"))


def _chosen(stored: Any) -> dict[str, str]:
    if getattr(stored, "tracks", None) is None:
        raise Rejected("This case was opened before per-action tracks; its fund application is "
                       "chosen and sent by the system.")
    return chosen_funds(stored)


@case.command("list")
@click.option("--stage", help="Only cases at this stage.")
@click.option("--risk", help="Only cases at this risk level (urgency before verification).")
@click.option("--overdue", is_flag=True, help="Only cases past their deadline.")
@click.option("--mine", is_flag=True, help="Only cases waiting for a decision of mine (--as).")
@as_option
@json_option
@click.pass_context
def case_list(ctx: click.Context, stage: str | None, risk: str | None, overdue: bool, mine: bool,
              as_json: bool) -> None:
    """List cases from the case index, soonest deadline first."""
    from domain.vocab import Stage, Urgency

    env = env_of(ctx)
    if stage is not None:
        choice(stage, Stage, "--stage")
    if risk is not None:
        choice(risk, Urgency, "--risk")
    now = datetime.now(UTC)
    if mine:
        rows = env.store.pending_for(env.actor(), now)
        rows = [r for r in rows if (not stage or r["stage"] == stage)
                and (not risk or (r["risk_level"] or r["urgency"]) == risk)
                and (not overdue or r["overdue"])]
    else:
        rows = env.store.list_cases(stage=stage, risk=risk, overdue_at=now if overdue else None)
    keys = ("reference", "stage", "urgency", "risk_level", "next_deadline", "overdue",
            "escalation_level", "assignee", "outcome", "opened_at", "updated_at")
    rows = [{k: r.get(k) for k in keys} for r in rows]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no cases")
        return
    table([[r["reference"], r["stage"], r["risk_level"] or r["urgency"], _when(r["next_deadline"]),
            "OVERDUE" if r["overdue"] else "", r["escalation_level"], r["assignee"]] for r in rows],
          ["reference", "stage", "risk", "next deadline (UTC)", "", "level", "assignee"])


@case.command("show")
@click.argument("ref", metavar="REF")
@as_option
@json_option
@click.pass_context
def case_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Where a case stands: stage, deadline, actions, pending decisions."""
    status = run(_show(env_of(ctx), ref))
    if as_json:
        emit_json(status)
    else:
        print_status(status)


async def _show(env: Env, ref: str) -> dict[str, Any]:
    from temporalio.client import WorkflowExecutionStatus

    from workflows.tracks import TrackedCaseWorkflow as WF

    settings = env.settings
    client = await env.client()
    handle = client.get_workflow_handle(ref)
    try:
        description = await handle.describe()
    except Exception as exc:
        status = rpc_status(exc)
        if status == "UNAVAILABLE":
            raise temporal_down(settings) from None
        if status != "NOT_FOUND":
            raise
        description = None
    if description is not None and description.status == WorkflowExecutionStatus.RUNNING:
        result: dict[str, Any] = await answered(settings, handle.query(WF.status))
        return result
    # Closed (or its history is gone): the store has the case's last state.
    from store.app import CaseNotFound
    try:
        summary: dict[str, Any] = env.store.get(ref).summary()
    except CaseNotFound:
        raise NotFound(f"case {one_line(ref)[:60]} not found") from None
    summary.pop("verifier", None)
    summary["pending"] = []
    return summary


# ======================================================================================== audit
def trail_summary(details: dict[str, Any]) -> str:
    """Codes only: action, stage, level, outcome, message id... never names or free text."""
    parts = []
    intake = details.get("intake")
    if isinstance(intake, dict):
        parts += [f"{key}={intake[key]}" for key in ("urgency", "country") if intake.get(key)]
    verification = details.get("verification")
    if isinstance(verification, dict) and verification.get("verdict"):
        parts.append(f"verdict={verification['verdict']}")
    funds = details.get("funds")
    if isinstance(funds, dict) and funds:  # fund ids from the directory: codes
        parts.append("funds=" + ",".join(str(f) for f in funds))
    for key in SUMMARY_KEYS:
        value = details.get(key)
        if value is None or value == "" or isinstance(value, dict | list):
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        parts.append(f"{key}={value}")
    return clean(" ".join(parts))


def _csv_cell(value: Any) -> str:
    """Text for a spreadsheet: a leading formula character is neutralised."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@cli.command("audit")
@click.argument("ref", metavar="REF")
@click.option("--format", "fmt", default="table", help="table (default), json, csv or html.")
@click.option("--verify", is_flag=True,
              help="Verify the audit chain and cross-check Temporal's history against the store "
                   "(exit 1 on any disagreement) instead of printing the trail.")
@as_option
@json_option
@click.pass_context
def audit(ctx: click.Context, ref: str, fmt: str, verify: bool, as_json: bool) -> None:
    """The audit trail of a case: time, actor, event, summary."""
    from store.app import CaseNotFound

    fmt = "json" if as_json else fmt
    choice(fmt, ("table", "json", "csv", "html"), "--format")
    if fmt in ("csv", "html") and verify:
        raise BadInput("--verify", "prints a table or JSON, not csv or html")
    env = env_of(ctx)
    try:
        trail = env.store.trail(ref)
    except CaseNotFound:
        raise NotFound(f"case {one_line(ref)[:60]} not found") from None
    if verify:
        report = run(_verify(env, ref, trail))
        if fmt == "json":
            emit_json(report)
        else:
            click.echo(clean(report["chain"]["text"]))
            click.echo(clean(report["history"]["text"]))
            click.echo("OK" if report["ok"] else "FAILED")
        if not report["ok"]:
            raise SystemExit(VerificationFailed.code)
        return
    entries = [{"version": e.version, "time": e.at, "actor": e.actor, "event": e.event,
                "command_id": e.command_id, "summary": trail_summary(e.details), "details": e.details}
               for e in trail]
    if fmt == "json":
        emit_json({"reference": ref, "entries": entries})
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["version", "time", "actor", "event", "command_id", "summary", "details"])
        for e in entries:
            writer.writerow([e["version"], _when(e["time"]), _csv_cell(e["actor"]), e["event"],
                             _csv_cell(e["command_id"]), _csv_cell(e["summary"]),
                             _csv_cell(json.dumps(e["details"], default=_json_default,
                                                  ensure_ascii=False, sort_keys=True))])
        click.echo(out.getvalue(), nl=False)
    elif fmt == "html":
        click.echo(audit_html(ref, entries))
    else:
        table([[e["version"], _when(e["time"]), e["actor"], e["event"], e["summary"]] for e in entries],
              ["v", "time (UTC)", "actor", "event", "summary"])


def audit_html(ref: str, entries: list[dict[str, Any]]) -> str:
    esc = html.escape
    rows = "\n".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>".format(
            esc(str(e["version"])), esc(_when(e["time"])), esc(str(e["actor"])), esc(str(e["event"])),
            esc(str(e["summary"])),
            esc(json.dumps(e["details"], indent=1, default=_json_default, ensure_ascii=False,
                           sort_keys=True)))
        for e in entries)
    title = esc(f"Audit trail {ref}")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title}</title>\n<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}"
        "td,th{border:1px solid #999;padding:4px;vertical-align:top;text-align:left}"
        "pre{margin:0;white-space:pre-wrap}</style></head>\n<body>\n"
        f"<h1>{title}</h1>\n<p>Confidential: case data for authorised staff only.</p>\n<table>\n"
        "<tr><th>version</th><th>time (UTC)</th><th>actor</th><th>event</th><th>summary</th>"
        "<th>details</th></tr>\n"
        f"{rows}\n</table>\n</body></html>"
    )


async def _verify(env: Env, ref: str, trail: list[Any]) -> dict[str, Any]:
    report = env.store.verify(ref)
    chain = {"ok": bool(report.ok), "events": report.events, "broken_version": report.broken_version,
             "reason": report.reason, "text": report.describe()}
    history = await _cross_check(env, ref, trail)
    return {"reference": ref, "ok": chain["ok"] and history["ok"], "chain": chain, "history": history}


async def _update_history(env: Env, ref: str) -> tuple[list[tuple[str, str]], int]:
    """(update id, update name) of every successful update, over all runs; and the run count."""
    from temporalio.api.enums.v1 import EventType

    client = await env.client()
    try:
        latest = await client.get_workflow_handle(ref).fetch_history()
    except Exception as exc:
        status = rpc_status(exc)
        if status == "UNAVAILABLE":
            raise temporal_down(env.settings) from None
        if status == "NOT_FOUND":
            return [], 0
        raise
    first_run = latest.events[0].workflow_execution_started_event_attributes.first_execution_run_id
    histories = [latest]
    if first_run and first_run != latest.run_id:
        histories, run_id, seen = [], first_run, set[str]()
        while run_id and run_id not in seen and len(seen) < 10_000:
            seen.add(run_id)
            history = await client.get_workflow_handle(ref, run_id=run_id).fetch_history()
            histories.append(history)
            last = history.events[-1]
            run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                      if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
                      else "")
    succeeded: list[tuple[str, str]] = []
    for history in histories:
        names: dict[str, str] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                request = event.workflow_execution_update_accepted_event_attributes.accepted_request
                names[request.meta.update_id] = request.input.name
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
                attrs = event.workflow_execution_update_completed_event_attributes
                if attrs.outcome.HasField("success"):
                    uid = attrs.meta.update_id
                    succeeded.append((uid, names.get(uid, "")))
    return succeeded, len(histories)


async def _cross_check(env: Env, ref: str, trail: list[Any]) -> dict[str, Any]:
    """Every successful decision in Temporal's history has its event in the store, and back."""
    succeeded, runs = await _update_history(env, ref)
    if runs == 0:
        return {"ok": False, "decisions": 0, "runs": 0,
                "text": f"{ref}: Temporal holds no history for this case (retention may have "
                        "expired); its decisions could not be cross-checked"}
    marker = f"{ref}/update/"
    recorded: dict[str, Any] = {}
    for entry in trail:
        if entry.command_id.startswith(marker):
            recorded.setdefault(entry.command_id[len(marker):], entry)
    problem = None
    decided: dict[str, str] = {}
    for uid, name in succeeded:
        if uid in decided:
            continue  # the same update repeated in a later run: it records nothing new
        decided[uid] = name
        entry = recorded.get(uid)
        if entry is None:
            problem = (f"decision {name or '?'} (update {uid}) succeeded in Temporal but has no "
                       "event in the store")
            break
        if entry.event not in DECISION_EVENTS.get(name, frozenset()):
            problem = (f"decision {name or '?'} (update {uid}) is recorded in the store as "
                       f"{entry.event} (version {entry.version})")
            break
    if problem is None:
        for uid, entry in recorded.items():
            if uid not in decided:
                problem = (f"store event {entry.event} (version {entry.version}, update {uid}) has no "
                           "successful decision in Temporal's history")
                break
    if problem is not None:
        return {"ok": False, "decisions": len(decided), "runs": runs,
                "text": f"{ref}: Temporal history and event store disagree: {problem}"}
    return {"ok": True, "decisions": len(decided), "runs": runs,
            "text": f"{ref}: Temporal history and event store agree ({len(decided)} decisions, "
                    f"{runs} run{'s' if runs != 1 else ''})"}


# ======================================================================================= outbox
@cli.group()
def outbox() -> None:
    """Messages held by the local SMTP sink of the embedded stack."""


def _maildir(env: Env) -> mailbox.Maildir | None:
    path = Path(env.settings.var_dir) / "outbox"
    if not (path / "cur").is_dir() and not (path / "new").is_dir():
        return None
    return mailbox.Maildir(str(path), factory=None, create=False)


def _parse(box: mailbox.Maildir, key: str) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(box.get_bytes(key))
    assert isinstance(message, EmailMessage)
    return message


def _date(message: EmailMessage) -> datetime | None:
    try:
        when = parsedate_to_datetime(str(message["Date"]))
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message[name]
    except Exception:  # noqa: BLE001 - a malformed header is shown as missing
        return ""
    return "" if value is None else str(value)


@outbox.command("list")
@json_option
@click.pass_context
def outbox_list(ctx: click.Context, as_json: bool) -> None:
    """The messages in the sink, oldest first."""
    box = _maildir(env_of(ctx))
    rows = []
    for key in box.iterkeys() if box is not None else []:
        assert box is not None
        message = _parse(box, key)
        rows.append({"id": key, "date": _date(message), "from": _header(message, "From"),
                     "to": _header(message, "To"), "cc": _header(message, "Cc"),
                     "subject": _header(message, "Subject"),
                     "message_id": _header(message, "Message-ID")})
    rows.sort(key=lambda r: (r["date"] or datetime.min.replace(tzinfo=UTC), r["id"]))
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no messages")
    else:
        table([[r["id"], _when(r["date"]), r["to"], r["subject"], r["message_id"]] for r in rows],
              ["id", "date (UTC)", "to", "subject", "message-id"])


@outbox.command("show")
@click.argument("message_id", metavar="ID")
@json_option
@click.pass_context
def outbox_show(ctx: click.Context, message_id: str, as_json: bool) -> None:
    """One message (by its id in `outbox list`, or its Message-ID): headers and text."""
    box = _maildir(env_of(ctx))
    found: EmailMessage | None = None
    key_found = ""
    if box is not None:
        if message_id in box:
            found, key_found = _parse(box, message_id), message_id
        else:
            wanted = message_id.strip().strip("<>")
            for key in box.iterkeys():
                message = _parse(box, key)
                if _header(message, "Message-ID").strip().strip("<>") == wanted:
                    found, key_found = message, key
                    break
    if found is None:
        raise NotFound(f"ID: no message {one_line(message_id)[:100]} in the outbox")
    headers = {name: _header(found, name) for name in ("Date", "From", "To", "Cc", "Subject",
                                                      "Message-ID", "In-Reply-To", "References")
               if _header(found, name)}
    body = found.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    if as_json:
        emit_json({"id": key_found, "headers": headers, "text": text})
        return
    for name, value in headers.items():
        click.echo(clean(f"{name}: {value}"))
    click.echo("")
    click.echo(_BODY_CONTROL.sub("?", text.replace("\r\n", "\n")).rstrip("\n"))


# ======================================================================================== users
@cli.group()
def users() -> None:
    """The users registry the workflow checks roles against."""


ROLES = [r.value for r in Role]


def _check_username(username: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", username):
        raise BadInput("USERNAME", "letters, digits, dots, dashes and underscores only (at most 100)")
    return username


@users.command("add")
@click.argument("username", metavar="USERNAME")
@click.option("--name", help="Display name.")
@click.option("--email", help="Work email address.")
@click.option("--role", "roles", multiple=True, metavar="ROLE",
              help="A role (repeat for more): " + ", ".join(ROLES) + ".")
@click.pass_context
def users_add(ctx: click.Context, username: str, name: str | None, email: str | None,
              roles: tuple[str, ...]) -> None:
    """Add a user with one or more roles."""
    from activities.mail import InvalidMessage
    from activities.mail import check_address as check_email
    from store.app import StoreError

    _check_username(username)
    display = text_option(name, "--name")
    if len(display) > 200 or _CONTROL.search(display):
        raise BadInput("--name", "one line of at most 200 characters")
    if not email:
        raise BadInput("--email", "is required")
    try:
        check_email(email, header="--email")
    except InvalidMessage:
        raise BadInput("--email", "expected one plain address (user@domain)") from None
    if not roles:
        raise BadInput("--role", "at least one is required")
    for role in roles:
        choice(role, ROLES, "--role")
    store = env_of(ctx).store
    try:
        store.add_user(username, display, email, list(roles))
    except StoreError:
        raise BadInput("USERNAME", f"user {username} already exists") from None
    click.echo(f"added {username} ({', '.join(sorted(set(roles)))})")


@users.command("list")
@json_option
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """All users with their roles."""
    rows = env_of(ctx).store.list_users()
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no users")
    else:
        table([[r["username"], r["display_name"], r["email"], ",".join(r["roles"]),
                "" if r["active"] else "inactive"] for r in rows],
              ["username", "name", "email", "roles", ""])


@users.command("set-roles")
@click.argument("username", metavar="USERNAME")
@click.argument("roles", metavar="ROLE...", nargs=-1)
@click.pass_context
def users_set_roles(ctx: click.Context, username: str, roles: tuple[str, ...]) -> None:
    """Replace a user's roles."""
    from store.app import StoreError

    if not roles:
        raise BadInput("ROLE", "at least one is required")
    for role in roles:
        choice(role, ROLES, "ROLE")
    try:
        env_of(ctx).store.set_roles(username, list(roles))
    except StoreError:
        raise NotFound(f"USERNAME: no user {one_line(username)[:100]}") from None
    click.echo(f"{username}: {', '.join(sorted(set(roles)))}")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (for scripts) instead of a prompt.")
@click.pass_context
def users_passwd(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Set a user's password for the web interface (at least 12 characters; never echoed)."""
    from web.auth import PasswordRejected, set_password

    store = env_of(ctx).store
    if not store.user_roles(username):
        raise NotFound(f"USERNAME: no active user {one_line(username)[:100]}")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        set_password(store, username, password)
    except PasswordRejected as exc:
        raise BadInput("password", str(exc)) from None
    click.echo(f"{username}: password set; sign in to the web interface")


# ======================================================================================= worker
@cli.command("worker")
def worker() -> None:
    """Run a worker only (production: as many as needed); Ctrl-C stops it."""
    from worker.main import main as worker_main
    _STATE["temporal"] = True
    asyncio.run(worker_main())


# ==================================================================================== the entry
def _usage_line(exc: click.UsageError) -> str:
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        param = exc.param
        name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        if isinstance(exc, click.MissingParameter):
            return f"{name}: is required"
        return f"{name}: {one_line(exc.message)}"
    if isinstance(exc, click.NoSuchOption):
        return f"{exc.option_name}: no such option"
    return f"appeals: {one_line(exc.format_message())}"


def main(argv: Sequence[str] | None = None) -> None:
    """The `appeals` entry point: one error handler, no tracebacks, the documented exit codes."""
    code = 0
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="appeals",
                          standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except CliError as exc:
        click.echo(one_line(exc.message), err=True)
        code = exc.code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        code = 2
    except click.UsageError as exc:
        click.echo(_usage_line(exc), err=True)
        code = 2
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        click.echo("appeals: aborted", err=True)
        code = 1
    except KeyboardInterrupt:
        click.echo("appeals: interrupted", err=True)
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors end up
        code = _unexpected(exc)
    if _STATE["temporal"]:
        # Everything is done and the store closed; skip the interpreter's teardown, which the
        # Temporal client's runtime threads can crash (a "Fatal Python error" after the output).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _unexpected(exc: Exception) -> int:
    message = str(exc)
    if isinstance(exc, RuntimeError) and message.startswith("Failed client connect"):
        try:
            from worker.settings import load_settings
            address = load_settings().temporal_address
        except Exception:  # noqa: BLE001
            address = os.environ.get("APPEALS_TEMPORAL_ADDRESS", "127.0.0.1:7233")
        click.echo(f"Temporal server not reachable at {address} — is `make run` running?", err=True)
        return 5
    if rpc_status(exc) == "UNAVAILABLE":
        click.echo("Temporal server not reachable — is `make run` running?", err=True)
        return 5
    if is_database_down(exc):
        click.echo("event store not reachable (see APPEALS_DATABASE_URL)", err=True)
        return 5
    if os.environ.get("APPEALS_DEBUG"):
        traceback.print_exception(exc)
    click.echo(f"appeals: unexpected error ({type(exc).__name__}); see the worker log", err=True)
    return 1


if __name__ == "__main__":
    main()
