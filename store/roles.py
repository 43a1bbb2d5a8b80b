"""PostgreSQL roles of the event store: a schema owner and an application role that cannot rewrite
the audit trail (issue 13; docs/operations.md, "Database roles").

- The schema owner creates the tables, the append-only triggers and the grants
  (`appeals store init-db`, which calls `set_up_database`). Running it again is harmless: it
  creates what is missing and puts the triggers and grants back as they should be.
- The application's role (the worker's and the web interface's `APPEALS_DATABASE_URL`) may only
  INSERT and SELECT on the append-only tables (APPEND_ONLY_TABLES: the events of cases and of the
  users log, the audit chain and its signatures, the decision proofs); on the other tables, which
  the application keeps up to date (case index, sessions, sign-ins, drafts, case keys, ...), it
  may also UPDATE and DELETE.
  It may create nothing.
- A trigger on each append-only table refuses UPDATE, DELETE and TRUNCATE, whoever asks, so that a
  grant given by mistake (or to PUBLIC) does not open the trail. The table owner can still drop the
  trigger: this guards against the application and its stolen credentials, not against the
  database owner; the signed chain and the checkpoints outside the database are what catch him.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eventsourcing.utils import Environment
from sqlalchemy import Connection, Engine, make_url, text
from sqlalchemy import exc as sa_exc

from store import schema
from store.recorder import AppealsFactory, AuditingRecorder, SchemaNotReady

# The application's name in store.app.CaseStore: eventsourcing names the events table after it.
APPLICATION_NAME = "Appeals"
# Tables the application only ever adds rows to.
APPEND_ONLY_TABLES = (schema.EVENTS_TABLE, schema.chain.name, schema.chain_signatures.name,
                      schema.decision_proofs.name)
TRIGGER_FUNCTION = "appeals_refuse_rewrite"
TRIGGER = "appeals_append_only"
# What the application's role may do on the other tables of the store.
READ_WRITE = "SELECT, INSERT, UPDATE, DELETE"
APPEND_ONLY = "SELECT, INSERT"
# A plain PostgreSQL role name (no quoting tricks, no upper case that would need quoting).
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleSetupError(Exception):
    """The roles cannot be set up as asked; the message says why and what to do (no secret)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SetupReport:
    owner: str
    app_role: str
    schema_name: str
    append_only: tuple[str, ...]
    read_write: tuple[str, ...]
    sequences: tuple[str, ...]


def store_tables() -> tuple[str, ...]:
    """Every table of the event store: the events table and store.schema's tables."""
    return (schema.EVENTS_TABLE, *(t.name for t in schema.metadata.sorted_tables))


def role_of(database_url: str) -> str | None:
    """The user name a database URL connects as (None when it names none, or is not a URL)."""
    try:
        return make_url(database_url).username
    except sa_exc.ArgumentError:
        return None


def is_postgres(database_url: str) -> bool:
    try:
        return make_url(database_url).get_backend_name() == "postgresql"
    except sa_exc.ArgumentError:
        return False


def trigger_function_sql() -> str:
    return f"""
CREATE OR REPLACE FUNCTION {TRIGGER_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the audit trail is append-only', TG_OP, TG_TABLE_NAME
        USING HINT = 'see docs/operations.md, "Database roles"';
END
$$"""


def trigger_sql(table: str) -> list[str]:
    """The append-only trigger of one table, replaced (statement-level, so that it refuses even
    an UPDATE or DELETE that matches no row)."""
    return [
        f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}",
        f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER_FUNCTION}()",
    ]


def set_up_database(owner_url: str, app_role: str) -> SetupReport:
    """As the schema owner (`owner_url`): create the store's missing tables, the append-only
    triggers, and the grants of `app_role` (triggers and grants in one transaction).
    Idempotent. RoleSetupError when it cannot be done safely (not PostgreSQL, the roles are the
    same, the app role is a superuser or may act as the owner, a table belongs to another role):
    then nothing is changed, except, when the app role would keep a privilege through a role it
    belongs to (found last), the missing tables, which are created before the grants."""
    if not is_postgres(owner_url):
        raise RoleSetupError("APPEALS_SCHEMA_DATABASE_URL: database roles exist on PostgreSQL "
                             "only (postgresql+psycopg://OWNER@HOST/DATABASE)")
    if not ROLE_NAME.match(app_role):
        raise RoleSetupError("--app-role: a PostgreSQL role name of lower-case letters, digits "
                             "and underscores")
    factory = AppealsFactory(Environment(APPLICATION_NAME, {"SQLALCHEMY_URL": owner_url,
                                                             "CREATE_TABLE": "n"}))
    try:
        recorder = factory.application_recorder()
        engine = factory.datastore.engine
        assert isinstance(engine, Engine) and isinstance(recorder, AuditingRecorder)
        with engine.begin() as conn:
            owner = _check_roles(conn, app_role)
        try:
            recorder.create_table()
        except SchemaNotReady:
            raise RoleSetupError(f"{owner} may not create tables here: the schema owner needs "
                                 "CREATE on the schema (make it the database's owner)") from None
        with engine.begin() as conn:
            report = _apply(conn, owner, app_role)
        return report
    finally:
        factory.close()


def _check_roles(conn: Connection, app_role: str) -> str:
    owner = str(conn.execute(text("SELECT current_user")).scalar_one())
    if app_role == owner:
        raise RoleSetupError(f"--app-role: {app_role} is the schema owner itself; the application "
                             "needs a role of its own")
    row = conn.execute(text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"),
                       {"r": app_role}).first()
    if row is None:
        raise RoleSetupError(
            f"--app-role: role {app_role} does not exist; create it first, as a user who may "
            f"create roles: CREATE ROLE {app_role} LOGIN PASSWORD '...' (docs/operations.md)")
    if row.rolsuper:
        raise RoleSetupError(f"--app-role: {app_role} is a superuser, which no grant or trigger "
                             "can hold back; give the application an ordinary role")
    if conn.execute(text("SELECT pg_has_role(:r, current_user, 'USAGE')"),
                    {"r": app_role}).scalar_one():
        raise RoleSetupError(f"--app-role: {app_role} is a member of the schema owner {owner} and "
                             f"could act as it; REVOKE {owner} FROM {app_role} first")
    names = store_tables()
    foreign = conn.execute(text(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename = ANY(:names) AND tableowner <> current_user ORDER BY tablename"),
        {"names": list(names)}).all()
    if foreign:
        table, other = foreign[0]
        raise RoleSetupError(
            f"table {table} belongs to {other}, not to {owner}: run this as the owner of the "
            f"store's tables (or, as a superuser: REASSIGN OWNED BY {other} TO {owner})")
    return owner


def _apply(conn: Connection, owner: str, app_role: str) -> SetupReport:
    schema_name = str(conn.execute(text("SELECT current_schema()")).scalar_one())
    present = set(conn.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars())
    tables = [t for t in store_tables() if t in present]
    append_only = tuple(t for t in tables if t in APPEND_ONLY_TABLES)
    read_write = tuple(t for t in tables if t not in APPEND_ONLY_TABLES)
    conn.execute(text(trigger_function_sql()))
    for table in append_only:
        for statement in trigger_sql(table):
            conn.execute(text(statement))
    # The application creates nothing: PostgreSQL before 15 lets PUBLIC create in "public".
    if conn.execute(text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"),
                    {"r": app_role}).scalar_one():
        conn.execute(text(f'REVOKE CREATE ON SCHEMA "{schema_name}" FROM PUBLIC'))
        conn.execute(text(f'REVOKE CREATE ON SCHEMA "{schema_name}" FROM {app_role}'))
    conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema_name}" TO {app_role}'))
    for table in tables:
        conn.execute(text(f"REVOKE ALL ON {table} FROM {app_role}"))
        conn.execute(text(f"GRANT {APPEND_ONLY if table in append_only else READ_WRITE} "
                          f"ON {table} TO {app_role}"))
    for table in append_only:
        conn.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM PUBLIC"))
    sequences = tuple(conn.execute(text(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() "
        "AND sequencename LIKE 'appeals\\_%' ORDER BY sequencename")).scalars())
    for sequence in sequences:
        quoted = conn.dialect.identifier_preparer.quote(sequence)
        conn.execute(text(f"REVOKE ALL ON SEQUENCE {quoted} FROM {app_role}"))
        conn.execute(text(f"GRANT USAGE ON SEQUENCE {quoted} TO {app_role}"))
    _check_result(conn, app_role, append_only, schema_name)
    return SetupReport(owner, app_role, schema_name, append_only, read_write, sequences)


def _check_result(conn: Connection, app_role: str, append_only: tuple[str, ...],
                  schema_name: str) -> None:
    """What the app role may still do through PUBLIC or roles it belongs to: refused (the whole
    set-up is rolled back) rather than reported done."""
    for table in append_only:
        for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
            if conn.execute(text("SELECT has_table_privilege(:r, :t, :p)"),
                            {"r": app_role, "t": table, "p": privilege}).scalar_one():
                raise RoleSetupError(
                    f"--app-role: {app_role} may still {privilege} {table} through a role it "
                    "belongs to; revoke that role's grant first (the trigger would refuse, but the "
                    "grant should not be there)")
    if conn.execute(text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"),
                    {"r": app_role}).scalar_one():
        raise RoleSetupError(f"--app-role: {app_role} may still create tables in schema "
                             f"{schema_name} through a role it belongs to; revoke that first")
