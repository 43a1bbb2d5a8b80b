"""`appeals`: the secretariat's command line, a door that proves who acts.

A person signs in once (`appeals login`); every command then acts as them: it parses its input and
asks the desk (desk/: the same operations the web interface uses), which signs their openings and
decisions for them and gives every change an idempotency key. The commands live by group in
cli.cases, cli.users, cli.audit, cli.report, cli.outbox, cli.session, cli.services, cli.store and
cli.keys; this module assembles them and turns every failure into one line on standard error and an
exit code (cli.common).

Only `appeals worker`, `appeals store init-db` and `appeals keys rotate-master` (and `--help`)
need nobody signed in; `appeals users bootstrap` is the first setup, before anyone can sign in;
`appeals audit store`, `public-key` and `checkpoint` show no personal data and need no sign-in
(cli.audit).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence

import click

from cli.common import (
    STATE,
    BadInput,
    CliError,
    Env,
    exit_code,
    is_database_down,
    one_line,
)
from desk.errors import DeskError

# Each command (or group of commands) by name: the module that defines it and its name there.
# A command's module is imported when that command runs (or `--help` lists it), not before: a
# script calling `appeals case show` in a loop pays for what `case` needs only.
COMMANDS = {
    "case": ("cli.cases", "case"),
    "audit": ("cli.audit", "audit"),
    "outbox": ("cli.outbox", "outbox"),
    "users": ("cli.users", "users"),
    "login": ("cli.session", "login"),
    "logout": ("cli.session", "logout"),
    "whoami": ("cli.session", "whoami"),
    "worker": ("cli.services", "worker"),
    "store": ("cli.store", "store"),
    "report": ("cli.report", "report"),
    "keys": ("cli.keys", "keys"),
}


class LazyGroup(click.Group):
    """The top-level group: its commands are imported on first use (COMMANDS), each given the
    refused `--as` option then (_with_refused_as)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, name = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)
            _with_refused_as(command)
            self.commands[cmd_name] = command
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Urgent appeals: the secretariat's command line. Sign in first with `appeals login`.

    Exit codes: 0 done; 1 verification failed or unexpected error; 2 bad input; 3 not found;
    4 refused (by the workflow or the users log, or not allowed for you); 5 a service
    unreachable; 6 not signed in (or the session ended).
    """
    ctx.obj = Env()
    ctx.call_on_close(ctx.obj.close)


def _refuse_as(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise BadInput("--as", "is no longer accepted: every command acts as the person signed "
                       "in; sign in as that person with `appeals login USERNAME`")


def _with_refused_as(command: click.Command) -> None:
    """`--as` anywhere (before or after a command) is refused with a clear message rather than
    Click's "no such option"."""
    command.params.append(click.Option(["--as"], metavar="USERNAME", expose_value=False,
                                       hidden=True, is_eager=True, callback=_refuse_as))
    if isinstance(command, click.Group) and not isinstance(command, LazyGroup):
        for sub in command.commands.values():
            _with_refused_as(sub)


_with_refused_as(cli)  # the top level now; each command when it is loaded (LazyGroup)


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
    except DeskError as exc:
        click.echo(one_line(exc.message), err=True)
        code = exit_code(exc)
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
    if STATE["temporal"]:
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
    from desk.cases import rpc_status
    if rpc_status(exc) == "UNAVAILABLE":
        click.echo("Temporal server not reachable — is `make run` running?", err=True)
        return 5
    if is_database_down(exc):
        click.echo("event store not reachable (see APPEALS_DATABASE_URL)", err=True)
        return 5
    from store.cipher import MasterKeyError
    if isinstance(exc, MasterKeyError):  # a data key no configured master key unwraps
        click.echo(f"settings: {one_line(str(exc))}", err=True)
        return 2
    if os.environ.get("APPEALS_DEBUG"):
        traceback.print_exception(exc)
    click.echo(f"appeals: unexpected error ({type(exc).__name__}); see the worker log", err=True)
    return 1


if __name__ == "__main__":
    main()
