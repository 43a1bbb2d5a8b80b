"""`appeals store init-db`: the event store's tables, append-only triggers and grants on PostgreSQL,
run as the schema owner (store.roles; docs/operations.md, "Database roles"). Acts for no person
and needs no sign-in: it is a deployment step, like `appeals worker`."""

from __future__ import annotations

import click

from cli.common import BadInput, CliError, Unreachable, is_database_down, one_line


@click.group("store")
def store() -> None:
    """The event store's set-up on PostgreSQL (needs no sign-in)."""


@store.command("init-db")
@click.option("--app-role", metavar="ROLE",
              help="The application's PostgreSQL role (default: the user of "
                   "APPEALS_DATABASE_URL). It must exist already.")
def init_db(app_role: str | None) -> None:
    """Create the event store's missing tables, the triggers that refuse UPDATE, DELETE and
    TRUNCATE on the events, the chain and the decision proofs, and the application role's grants
    (INSERT and SELECT only there). Connects as APPEALS_SCHEMA_DATABASE_URL (password from
    APPEALS_SCHEMA_DATABASE_PASSWORD_FILE, never on the command line). Running it again is
    harmless."""
    from pydantic import ValidationError

    from store.roles import RoleSetupError, role_of, set_up_database
    from worker.settings import ENV_PREFIX, load_schema_settings

    try:
        settings = load_schema_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = one_line(first["msg"]).removeprefix("Value error, ")
        raise CliError(message if message.startswith(ENV_PREFIX) else f"{where}: {message}"
                       ) from None
    owner_url = settings.schema_database_url
    if not owner_url:
        raise BadInput("APPEALS_SCHEMA_DATABASE_URL", "is required: the schema owner's URL, "
                       "postgresql+psycopg://OWNER@HOST/DATABASE (password from "
                       "APPEALS_SCHEMA_DATABASE_PASSWORD_FILE)")
    role = app_role or (role_of(settings.database_url) if settings.database_url else None)
    if not role:
        raise BadInput("--app-role", "is required when APPEALS_DATABASE_URL names no user")
    try:
        report = set_up_database(owner_url, role)
    except RoleSetupError as exc:
        raise BadInput("store init-db", exc.message) from None
    except Exception as exc:
        if is_database_down(exc):
            raise Unreachable(f"the database at APPEALS_SCHEMA_DATABASE_URL "
                              f"({_shown(owner_url)}) is not reachable or refused the login"
                              ) from None
        raise
    click.echo(f"Event store set up in schema {report.schema_name} by {report.owner} for "
               f"{report.app_role}:")
    click.echo(f"  append-only (INSERT, SELECT; UPDATE, DELETE, TRUNCATE refused by trigger): "
               f"{', '.join(report.append_only)}")
    click.echo(f"  read and write: {', '.join(report.read_write)}")
    click.echo(f"  sequences (USAGE): {', '.join(report.sequences) or 'none'}")


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - an unparsable URL is shown by its scheme only
        return url.split(":", 1)[0] + ":..."
