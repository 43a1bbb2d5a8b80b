"""What every command of `appeals` shares: the errors and exit codes, the environment a command runs
in (settings, store, Temporal client, the desk, the signed-in person), reading files, the request
key of a command, and printing.

Exit codes:
    0  done
    1  an audit verification found a disagreement, or an unexpected error (one line, no traceback)
    2  bad input: one line naming the field and the reason
    3  not found (case, user or outbox message)
    4  refused: by the workflow or the users log (its sentence is printed), or not allowed for the
       signed-in person; nothing was recorded
    5  a service is unreachable (Temporal, the event store, or no worker answering); for a command
       that changes something, the message says whether it may have taken effect (then repeating
       the same command is safe)
    6  not signed in, or the session ended: `appeals login`
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from desk.errors import DeskError, NotSignedIn

T = TypeVar("T")

MAX_FILE_BYTES = 1024 * 1024

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
BODY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps line breaks and tabs
REQUEST_META = "appeals.request_id"


# ====================================================================================== errors
class CliError(Exception):
    """An expected failure of the command line itself: one line for the user and an exit code."""

    code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(CliError):
    code = 2

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


class Unreachable(CliError):
    code = 5


class VerificationFailed(CliError):
    code = 1


def exit_code(exc: DeskError) -> int:
    """The exit code of a desk error (desk.errors)."""
    from desk import errors
    for kind, code in ((errors.InvalidRequest, 2), (errors.NotFound, 3), (errors.Rejected, 4),
                       (errors.NotAllowed, 4), (errors.Unreachable, 5), (errors.NotSignedIn, 6)):
        if isinstance(exc, kind):
            return code
    return 1


def one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", str(text)).split())


def clean(value: Any) -> str:
    """A value for a terminal table: no control characters (no escape sequences)."""
    return _CONTROL.sub("?", "" if value is None else str(value))


# ===================================================================================== context
# Whether this process created a Temporal client: its Rust runtime's threads can abort the
# interpreter's shutdown (temporalio/sdk-python#300), so such a process ends with os._exit.
STATE = {"temporal": False}


class Env:
    """What a command needs, built on first use: settings, the store, the Temporal client, the
    desk and the person signed in on this machine (`appeals login`).

    The session check and the case list read through `index` (store.index: SQLAlchemy Core, no
    event store); the event store itself (`store`) is opened only by what needs its events or
    keys, so `appeals case list` and `case show` of a running case never import it."""

    def __init__(self) -> None:
        self._settings: Any = None
        self._store: Any = None
        self._index: Any = None
        self._client: Any = None
        self._desk: Any = None
        self._person: Any = None

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
                signer = settings.chain_signer()
                extra = settings.chain_public_keys()
            except KeyMaterialError as exc:
                raise BadInput("settings", one_line(str(exc))) from None
            with self.database_errors():
                self._store = CaseStore(settings.database_url, key, signer=signer,
                                        public_keys=extra)
                self._store.checkpoint_dir = settings.checkpoint_dir
        return self._store

    @property
    def index(self) -> Any:
        """The session check and the case index's reads (store.index.IndexReader), connected:
        the event store's own reader when it is open, else one of its own that imports and
        sets up nothing of the event store."""
        if self._store is not None:
            return self._store.index
        if self._index is None:
            from store.index import IndexReader
            settings = self.settings
            with self.database_errors():
                reader = IndexReader.open(settings.database_url)
                try:
                    reader.connect()
                except BaseException:
                    reader.close()
                    raise
            self._index = reader
        return self._index

    @contextlib.contextmanager
    def database_errors(self) -> Iterator[None]:
        """Opening the event store's database: a missing driver, a database that does not
        answer, tables that are missing, each as one line."""
        settings = self.settings
        try:
            yield
        except ModuleNotFoundError:
            scheme = str(settings.database_url).split(":", 1)[0]
            raise BadInput("APPEALS_DATABASE_URL",
                           f"no database driver installed for {scheme}:// "
                           "(PostgreSQL: postgresql+psycopg://...)") from None
        except Exception as exc:
            if is_database_down(exc):
                raise Unreachable(f"event store not reachable at {self.database_shown()}"
                                  ) from None
            if "store.recorder" in sys.modules:  # else no SchemaNotReady was raised
                from store.recorder import SchemaNotReady
                if isinstance(exc, SchemaNotReady):
                    raise CliError(f"APPEALS_DATABASE_URL: {exc}") from None
            raise

    async def client(self) -> Any:
        """The Temporal client (unsigned; the desk signs what it sends), with the SDK's own
        warnings sent to standard error."""
        if self._client is None:
            from worker.client import connect
            quiet_runtime()
            STATE["temporal"] = True
            try:
                self._client = await connect(self.settings)
            except RuntimeError:
                raise Unreachable(f"Temporal server not reachable at "
                                  f"{self.settings.temporal_address} — is `make run` running?"
                                  ) from None
        return self._client

    @property
    def desk(self) -> Any:
        if self._desk is None:
            from desk.cases import Desk
            # The event store is opened when the desk first needs it (not to list cases).
            self._desk = Desk(self.settings, lambda: self.store, self.client, index=self.index)
        return self._desk

    def person(self) -> Any:
        """The person signed in with `appeals login` (their session is live in the store)."""
        if self._person is None:
            from cli.config import SESSION_IDLE, forget_session, read_session
            from desk.cases import Person
            refuse_named_user()
            index = self.index  # an unreachable store says so first
            session = read_session(self.settings)

            def signed_in(index: Any) -> str | None:
                if session is None:
                    index.probe()  # a store without its tables says so first, as before
                    return None
                found: str | None = index.session_user(session.token, datetime.now(UTC),
                                                       idle=SESSION_IDLE)
                return found

            try:
                username = signed_in(index)
            except Exception as exc:
                from store.index import missing_schema
                if not missing_schema(exc):
                    raise
                # Tables not there yet: the event store creates them (or says what to run).
                username = signed_in(self.store.index)
            if session is None:
                raise NotSignedIn("Not signed in: sign in first with `appeals login USERNAME` "
                                  "(every command acts as the person signed in).")
            if username is None or username != session.username:
                forget_session(self.settings)
                raise NotSignedIn("Your session has ended (it expired or went unused, you signed "
                                  "out, your password changed or your access ended): sign in "
                                  "again with `appeals login`.")
            self._person = Person(username)
        return self._person

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._index is not None:
            self._index.close()
            self._index = None


def refuse_named_user() -> None:
    """Nobody acts by naming a user any more: APPEALS_USER (like --as) is refused."""
    if os.environ.get("APPEALS_USER") is not None:
        raise BadInput("APPEALS_USER", "is no longer read: every command acts as the person "
                       "signed in with `appeals login` (unset APPEALS_USER)")


def quiet_runtime() -> None:
    """The Temporal SDK's own log lines (its Rust core writes WARN lines, e.g. while it retries a
    call, to standard output by default) go through Python logging to standard error, so that
    standard output holds only what the command prints (`--json`, `REF=$(appeals case open ...)`)."""
    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logger = logging.getLogger("appeals.temporal")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("appeals: temporal %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logger, append_target_to_name=False,
                                       prepend_target_on_message=False,
                                       append_log_fields_to_message=True))))
    Runtime.set_default(runtime, error_if_already_set=False)


def is_database_down(exc: BaseException) -> bool:
    from sqlalchemy import exc as sa_exc

    from store.index import missing_schema
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return not missing_schema(exc)  # SQLite reports a missing table as an OperationalError
    if "eventsourcing" not in sys.modules:  # then none of its errors was raised
        return False
    from eventsourcing import persistence
    return isinstance(exc, persistence.OperationalError | persistence.InterfaceError)


def env_of(ctx: click.Context) -> Env:
    obj = ctx.find_root().obj
    assert isinstance(obj, Env)
    return obj


def run(coro: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await coro
    return asyncio.run(wrapped())


# ============================================================================== request keys
def request_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--request-id` on a command that changes something: its idempotency key, instead of the
    one derived from the command, its arguments and the date."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.meta[REQUEST_META] = value

    return click.option("--request-id", "request_id", metavar="ID", expose_value=False,
                        callback=remember,
                        help="The request's idempotency key (default: derived from you, the "
                             "command, its arguments and the UTC date). Repeating a command with "
                             "the same key records nothing new.")(f)


def request_id(ctx: click.Context, username: str, *, files: Iterable[str] = ()) -> str:
    """The command's idempotency key (desk.requests): the person, the command, its arguments (a
    file by its content) and the UTC date; or `--request-id`, scoped to the person and command."""
    from desk.requests import content_digest, request_key

    file_params = set(files)
    arguments: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if name == "as_json":
            continue
        if name in file_params and isinstance(value, str):
            with contextlib.suppress(OSError), open(value, "rb") as f:  # else the command refuses it
                value = content_digest(f.read(MAX_FILE_BYTES + 1))
        arguments[name] = value
    command = " ".join(ctx.command_path.split()[1:])
    return request_key("cli", username, command, arguments, given=ctx.meta.get(REQUEST_META))


# ======================================================================================= files
def _yaml_loader() -> Any:
    """Safe YAML with dates left as text (the intake wants YYYY-MM-DD strings) and no aliases
    (built on first use: most commands read no file, and yaml takes a while to import)."""
    import yaml

    class YamlLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("aliases are not accepted")
            return super().compose_node(parent, index)

    # YAML 1.1 would read 2026-11-01 as a date and the country code NO (or yes, on, off) as a
    # boolean.
    YamlLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers
                if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                     re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                     list("tTfF"))
    return YamlLoader


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
        import yaml
        try:
            data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
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
    from domain.errors import CaseRuleError, InvalidInput

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


def read_secret(prompt: str, field: str, *, confirm: bool = False, force_stdin: bool = False) -> str:
    """A password or code: a hidden prompt (on standard error) at a terminal, else one line of
    standard input (for scripts and tests: `appeals login olga <<< "$PASSWORD"`)."""
    if sys.stdin.isatty() and not force_stdin:
        value = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True,
                             default="", show_default=False)
        return str(value)
    line = sys.stdin.readline()
    if not line:
        raise BadInput(field, "expected on standard input (one line), but it is empty")
    return line.rstrip("\r\n")


# ====================================================================================== output
def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def emit_json(data: Any) -> None:
    from desk.export import json_default
    click.echo(json.dumps(data, indent=2, default=json_default, ensure_ascii=False))


def when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def parse_when(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[clean(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
