"""Issue 13, part C: on the real PostgreSQL, the application's role cannot rewrite the audit trail.

`appeals store init-db`, run as the schema owner, creates the tables, the append-only triggers and
the grants; the application's role then opens the store, records and reads cases, and gets an
error for UPDATE, DELETE and TRUNCATE of the events, the chain and the decision proofs, from the
grants, and from the trigger when it was granted them by mistake. Each test makes its own database
and roles (unique names) and drops them afterwards; skipped, saying why, without PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from store.app import CaseStore
from store.recorder import SchemaNotReady
from store.roles import APPEND_ONLY_TABLES, RoleSetupError, set_up_database
from tests.backends import PG_ADMIN_URL, PostgresRoles, fresh_postgres_roles, new_key, postgres_reason
from tests.factories import T0, open_args
from worker.settings import SchemaSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
REF = "UA-2026-0001"
Roles = PostgresRoles
KEY = new_key()


def _admin(*statements: str) -> None:
    import psycopg
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def roles() -> Iterator[Roles]:
    with fresh_postgres_roles() as made:
        yield made


def init_db(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`appeals store init-db` as an operator runs it: a process with only these settings."""
    return subprocess.run([sys.executable, "-m", "cli.main", "store", "init-db", *args], cwd=ROOT,
                          env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
                          timeout=120)


@contextlib.contextmanager
def opened(url: str) -> Iterator[CaseStore]:
    store = CaseStore(url, KEY)
    try:
        yield store
    finally:
        store.close()



def record_a_case(store: CaseStore) -> None:
    store.open_case(**open_args(REF, actions=["mfa"]))
    store.execute(REF, "add_further_information", {"at": T0, "information": "Summons received."},
                  "olga", "i1")


@pytest.fixture
def set_up(roles: Roles, tmp_path: Path) -> Roles:
    """The database set up by `appeals store init-db` (password-less: trust authentication; the
    password file path is exercised by the settings tests below), with one case recorded by the
    application's role."""
    done = init_db({"APPEALS_SCHEMA_DATABASE_URL": roles.owner_url,
                    "APPEALS_DATABASE_URL": roles.app_url})
    assert done.returncode == 0, done.stderr
    with opened(roles.app_url) as store:
        record_a_case(store)
    return roles


# ============================================================================== the set-up command
def test_init_db_twice_then_the_app_role_records_reads_and_keeps_its_other_tables(
        roles: Roles) -> None:
    env = {"APPEALS_SCHEMA_DATABASE_URL": roles.owner_url, "APPEALS_DATABASE_URL": roles.app_url}
    first = init_db(env)
    assert first.returncode == 0, first.stderr
    assert f"by {roles.owner} for {roles.app}" in first.stdout
    again = init_db(env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout

    with opened(roles.app_url) as store:
        record_a_case(store)
        assert [e.event for e in store.trail(REF)][-1] == "FurtherInformationAdded"
        assert store.verify(REF).ok
        # The tables the application keeps up to date stay writable: the users table (through
        # the users log), the case index, sign-ins (a sequence), sessions, requests.
        store.add_user("hana", "Hana", "hana@example.org", ["head"])
        store.set_roles("hana", ["head", "case_officer"])
        assert store.user_roles("hana") == {"head", "case_officer"}
        attempt = store.record_sign_in("hana", datetime.now(UTC), ok=False, reason="password")
        store.settle_sign_in(attempt, ok=True)
        store.reserve_reference("req-1", "UA-2026-0009", "hana", datetime.now(UTC))
        store.release_reference("req-1")
        assert store.verify_users().ok
    # Another process of the application starts on the existing tables and reads the case.
    with opened(roles.app_url) as store:
        assert len(store.trail(REF)) == 2 and store.verify(REF).ok


def test_the_schema_owner_password_comes_from_a_file(roles: Roles, tmp_path: Path) -> None:
    """The URL without password plus APPEALS_SCHEMA_DATABASE_PASSWORD_FILE, as docker-compose
    gives them (trust authentication ignores the password; that it reached the URL is checked by
    the settings test below)."""
    password = tmp_path / "owner-password"
    password.write_text("not-used-with-trust\n")
    done = init_db({"APPEALS_SCHEMA_DATABASE_URL": roles.owner_url,
                    "APPEALS_SCHEMA_DATABASE_PASSWORD_FILE": str(password),
                    "APPEALS_DATABASE_URL": roles.app_url})
    assert done.returncode == 0, done.stderr
    assert "not-used-with-trust" not in done.stdout + done.stderr


def test_starting_as_the_app_role_before_init_db_says_what_to_run(roles: Roles) -> None:
    with pytest.raises(SchemaNotReady, match="appeals store init-db"):
        CaseStore(roles.app_url, KEY)


def test_init_db_refuses_roles_that_would_make_the_grants_meaningless(roles: Roles) -> None:
    with pytest.raises(RoleSetupError, match="schema owner itself"):
        set_up_database(roles.owner_url, roles.owner)
    with pytest.raises(RoleSetupError, match="superuser"):
        set_up_database(roles.owner_url, "postgres")
    with pytest.raises(RoleSetupError, match="does not exist"):
        set_up_database(roles.owner_url, f"{roles.app}_missing")
    with pytest.raises(RoleSetupError, match="PostgreSQL only"):
        set_up_database("sqlite:///events.sqlite", roles.app)
    _admin(f"GRANT {roles.owner} TO {roles.app}")
    try:
        with pytest.raises(RoleSetupError, match="member of the schema owner"):
            set_up_database(roles.owner_url, roles.app)
    finally:
        _admin(f"REVOKE {roles.owner} FROM {roles.app}")
    # Nothing was created by the refused runs.
    with roles.connect(roles.owner) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'appeals%'"
                            ).fetchone()[0] == 0


def test_init_db_errors_are_one_line_with_the_setting_and_an_exit_code(roles: Roles) -> None:
    missing = init_db({"APPEALS_DATABASE_URL": roles.app_url})
    assert missing.returncode == 2
    assert missing.stderr.startswith("APPEALS_SCHEMA_DATABASE_URL: is required")
    assert "Traceback" not in missing.stderr
    superuser = init_db({"APPEALS_SCHEMA_DATABASE_URL": roles.owner_url}, "--app-role", "postgres")
    assert superuser.returncode == 2 and "superuser" in superuser.stderr
    assert len(superuser.stderr.strip().splitlines()) == 1
    down = init_db({"APPEALS_SCHEMA_DATABASE_URL":
                    f"postgresql+psycopg://{roles.owner}:secret-pw@127.0.0.1:1/{roles.database}",
                    "APPEALS_DATABASE_URL": roles.app_url})
    assert down.returncode == 5 and "APPEALS_SCHEMA_DATABASE_URL" in down.stderr
    assert "secret-pw" not in down.stderr


# ================================================================= what the application's role may not do
REWRITES = {
    "update": "UPDATE {table} SET {column} = {column}",
    "delete": "DELETE FROM {table}",
    "truncate": "TRUNCATE {table}",
}
COLUMN = {"appeals_events": "topic", "appeals_chain": "actor", "appeals_chain_signatures": "key_id",
          "appeals_decision_proofs": "username"}


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_the_app_role_gets_an_error_for_update_delete_and_truncate(set_up: Roles,
                                                                    table: str) -> None:
    import psycopg

    with set_up.connect(set_up.app) as conn:
        before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for statement in REWRITES.values():
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match=f"permission denied for table {table}"):
                conn.execute(statement.format(table=table, column=COLUMN[table]))
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == before
        # Nor can it take the guards away: the trigger, the table, or make a table of its own.
        for statement in (f"ALTER TABLE {table} DISABLE TRIGGER ALL",
                          f"DROP TRIGGER appeals_append_only ON {table}", f"DROP TABLE {table}",
                          "CREATE TABLE appeals_scratch (n integer)",
                          "SET session_replication_role = replica"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    if table not in ("appeals_decision_proofs", "appeals_chain_signatures"):
        assert before > 0  # (a store opened without the signing key signs no link)
    with opened(set_up.app_url) as store:
        assert store.verify(REF).ok


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_a_role_granted_update_by_mistake_is_stopped_by_the_trigger(set_up: Roles,
                                                                    table: str) -> None:
    import psycopg

    with set_up.connect(set_up.owner) as conn:
        conn.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON {table} TO {set_up.app}")
    with set_up.connect(set_up.app) as conn:
        before = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        statements = [s.format(table=table, column=COLUMN[table]) for s in REWRITES.values()]
        # Statement-level: even a rewrite that matches no row is refused.
        statements.append(f"DELETE FROM {table} WHERE false")
        for statement in statements:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == before
    # Running init-db again takes the mistaken grant back.
    assert set_up_database(set_up.owner_url, set_up.app).app_role == set_up.app
    with set_up.connect(set_up.app) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"DELETE FROM {table}")


def test_the_trigger_stops_the_owner_too_until_he_drops_it(set_up: Roles) -> None:
    """What the trigger does not do (docs/operations.md): the table owner may drop it. The signed
    chain and the checkpoints outside the database are what catch him then."""
    import psycopg

    with set_up.connect(set_up.owner) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM appeals_chain")
        conn.execute("DROP TRIGGER appeals_append_only ON appeals_chain")
        conn.execute("DELETE FROM appeals_chain WHERE version = 1")
    with opened(set_up.app_url) as store:
        assert not store.verify(REF).ok
    # init-db puts the trigger back.
    set_up_database(set_up.owner_url, set_up.app)
    with set_up.connect(set_up.owner) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("DELETE FROM appeals_chain")


def test_two_app_role_writers_lose_nothing(set_up: Roles) -> None:
    """Inserts as the application's role serialise on the advisory lock (it may not LOCK the
    events table): two processes' worth of writers on one case, every command recorded once."""
    import threading

    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with opened(set_up.app_url) as store:
                for i in range(5):
                    store.execute(REF, "add_further_information",
                                  {"at": T0, "information": f"Note {n}-{i}."}, "olga", f"w{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with opened(set_up.app_url) as store:
        assert len(store.trail(REF)) == 2 + 10 and store.verify(REF).ok


# ======================================================================================= settings
def test_the_schema_owner_settings_put_the_password_file_into_the_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = tmp_path / "owner"
    password.write_text("s3cret'pw\n")
    monkeypatch.setenv("APPEALS_SCHEMA_DATABASE_URL", "postgresql+psycopg://owner@db/events")
    monkeypatch.setenv("APPEALS_SCHEMA_DATABASE_PASSWORD_FILE", str(password))
    monkeypatch.delenv("APPEALS_SCHEMA_DATABASE_PASSWORD", raising=False)
    from sqlalchemy import make_url
    url = SchemaSettings().schema_database_url
    assert url is not None and make_url(url).password == "s3cret'pw"
    monkeypatch.delenv("APPEALS_SCHEMA_DATABASE_URL")
    with pytest.raises(ValidationError, match="APPEALS_SCHEMA_DATABASE_URL too"):
        SchemaSettings()


def test_the_schema_settings_are_documented_settings() -> None:
    """init-db's own settings class reads a subset of the documented settings, nothing else."""
    for name, field in SchemaSettings.model_fields.items():
        assert name in Settings.model_fields, name
        assert name in Settings.secret_file_fields
        assert Settings.model_fields[name].annotation in (field.annotation, str), name
    settings = Settings(schema_database_url="postgresql+psycopg://owner@db/events",
                        schema_database_password=SecretStr("pw"))
    assert settings.schema_database_url == "postgresql+psycopg://owner:pw@db/events"


# ======================================================================== starting before init-db
def test_the_worker_started_as_the_app_role_before_init_db_says_what_to_run(
        roles: Roles, tmp_path: Path) -> None:
    """No traceback: one line naming the command to run, exit status 2."""
    started = subprocess.run([sys.executable, "-m", "worker"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120,
                             env={"PATH": os.environ["PATH"], "APPEALS_VAR_DIR": str(tmp_path),
                                  "APPEALS_DATABASE_URL": roles.app_url})
    assert started.returncode == 2, started.stderr
    assert "worker: cannot start: the event store's tables are missing" in started.stderr
    assert "appeals store init-db" in started.stderr and "Traceback" not in started.stderr


def test_a_command_as_the_app_role_before_init_db_says_what_to_run(roles: Roles,
                                                                   tmp_path: Path) -> None:
    """`appeals case list` reads the index without the event store (store.index); before init-db
    it still says, in one line, what to run, whether or not someone is signed in."""
    from types import SimpleNamespace

    from cli.config import Session, save_session

    env = {"PATH": os.environ["PATH"], "APPEALS_VAR_DIR": str(tmp_path),
           "APPEALS_CONFIG_DIR": str(tmp_path / "config"), "APPEALS_DATABASE_URL": roles.app_url}
    for signed_in in (False, True):
        if signed_in:  # a session file left from before (its store cannot know it)
            save_session(SimpleNamespace(config_dir=tmp_path / "config", database_url=roles.app_url),
                         Session("olga", "a-token-from-before", datetime.now(UTC)))
        listed = subprocess.run([sys.executable, "-m", "cli.main", "case", "list"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 1, listed.stderr
        assert listed.stderr.startswith("APPEALS_DATABASE_URL: the event store's tables are missing")
        assert "appeals store init-db" in listed.stderr and "Traceback" not in listed.stderr


# ============================================================== docs/operations.md's SQL, run as written
def _documented_sql(after: str, index: int = 0) -> str:
    """The `index`th ```sql block after the heading or sentence `after` in docs/operations.md."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    rest = guide[guide.index(after):]
    blocks = re.findall(r"```sql\n(.*?)```", rest, re.S)
    return str(blocks[index])


def _psql(url: str, sql: str) -> None:
    import shutil
    if shutil.which("psql") is None:
        pytest.skip("psql (PostgreSQL's client) is not installed")
    done = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-q", url], input=sql, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_store_the_application_user_made_is_handed_to_an_owner_as_documented(
        roles: Roles) -> None:
    """An event store written by the current code as a user who owns everything (before these
    roles) keeps working after the documented SQL and init-db: the case loads and verifies, the
    user becomes the application's role and can no longer rewrite the trail."""
    import psycopg

    _admin(f"GRANT CREATE ON DATABASE {roles.database} TO {roles.app}")
    with roles.connect(roles.owner) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {roles.app}")
    with opened(roles.app_url) as store:  # the old way: the application creates its tables
        record_a_case(store)
    with roles.connect(roles.app) as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'appeals_events'"
                            ).fetchone()[0] == roles.app
    new_owner = f"{roles.owner}_new"
    sql = _documented_sql("### Setting the roles up by hand on an existing database")
    for old, new in ((r"\bappeals_owner\b", new_owner), (r"\bappeals_events\b", roles.database),
                     (r"\bappeals\b", roles.app)):
        sql = re.sub(old, new, sql)
    try:
        _psql(PG_ADMIN_URL.rsplit("/", 1)[0] + "/postgres", sql)
        set_up_database(roles.url(new_owner), roles.app)
        with opened(roles.app_url) as store:
            assert store.verify(REF).ok and len(store.trail(REF)) == 2
            store.execute(REF, "add_further_information", {"at": T0, "information": "More."},
                          "olga", "i2")
        with roles.connect(roles.app) as conn:
            for statement in ("DELETE FROM appeals_events", "UPDATE appeals_chain SET actor = 'x'",
                              "CREATE TABLE appeals_scratch (n integer)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    finally:
        _admin(f"DROP DATABASE IF EXISTS {roles.database} WITH (FORCE)",
               f"DROP ROLE IF EXISTS {new_owner}")


def test_temporal_databases_are_handed_to_their_own_user_as_documented() -> None:
    """The documented SQL gives every table, view, sequence and function of a database the
    superuser owned to Temporal's new user (an extension's functions stay with the extension)."""
    if postgres_reason():
        pytest.skip(str(postgres_reason()))
    n = os.urandom(5).hex()
    user, database = f"t_tsrv_{n}", f"t_temporal_{n}"
    sql = _documented_sql("Temporal's databases of such a deployment")
    head, block = sql.split("-- in each of the two databases", 1)
    block = block.split("\n", 1)[1]
    head = head.replace("temporal_server", user)
    head = re.sub(r"\btemporal_visibility\b", database, re.sub(r"\btemporal\b", database, head))
    head = head.replace(f"DATABASE {database}, {database}", f"DATABASE {database}")
    block = block.replace("temporal_server", user)
    assert "temporal_server" not in head + block and user in head
    admin = PG_ADMIN_URL.rsplit("/", 1)[0]
    _admin(f"CREATE DATABASE {database}")
    try:
        _psql(f"{admin}/{database}", """
            CREATE EXTENSION IF NOT EXISTS btree_gin;
            CREATE TABLE executions (id serial PRIMARY KEY, n integer);
            CREATE SEQUENCE standalone_seq;
            CREATE VIEW open_executions AS SELECT * FROM executions;
            CREATE FUNCTION convert_ts(s VARCHAR) RETURNS TIMESTAMP AS $$
            BEGIN RETURN s::timestamptz AT TIME ZONE 'UTC'; END $$ LANGUAGE plpgsql IMMUTABLE;
        """)
        _psql(f"{admin}/postgres", head)
        _psql(f"{admin}/{database}", block)
        import psycopg
        with psycopg.connect(f"{admin}/{database}", autocommit=True) as conn:
            owners = dict(conn.execute(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace "
                "ns ON ns.oid = c.relnamespace WHERE ns.nspname = 'public' AND c.relkind <> 'i'"
            ).fetchall())
            function = conn.execute("SELECT pg_get_userbyid(proowner) FROM pg_proc "
                                    "WHERE proname = 'convert_ts'").fetchone()[0]
            database_owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            ).fetchone()[0]
        assert set(owners) == {"executions", "executions_id_seq", "standalone_seq",
                               "open_executions"}
        assert set(owners.values()) == {user} and function == user and database_owner == user
    finally:
        _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", f"DROP ROLE IF EXISTS {user}")
