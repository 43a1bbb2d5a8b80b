"""The light read path: the sessions and the case index over SQLAlchemy Core and store.schema only.

No eventsourcing, no domain aggregates, no cipher: what a door reads without events (the session
check of every command, `appeals case list`, the web's queue and counts) costs the import of
SQLAlchemy and no more. `CaseStore` (store.app) reads the case index through this module too
(`CaseStore.index`, over its own engine), so each read has one implementation.

`open_engine` makes an engine as the event store has it made (eventsourcing-sqlalchemy calls
SQLAlchemy's `create_engine(url)` with no options; a SQLite file is created private, 0600; a
server's pool pre-pings): a process that only reads opens no `CaseStore` at all. The SQLite
journal (WAL) is a property of the database file, set by the store that created it, so a reader
needs no pragma. A database whose tables are not there yet fails a read here
(`missing_schema(exc)`); the caller then opens the full store, which creates them (or says what to
run, store.recorder.SchemaNotReady).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, func, make_url, select, update

from domain.rules import stage_detail_of
from store import schema

# A session's last_seen_at is written at most this often (not on every request).
SEEN_RESOLUTION = timedelta(minutes=1)
MAX_TOKEN_LENGTH = 200
# PostgreSQL's SQLSTATEs for a table or a column that is not there.
_UNDEFINED = frozenset({"42P01", "42703"})


# =================================================================================== the engine
def private_sqlite_file(database_url: str) -> None:
    """A SQLite event store is a file only its owner may read or write (0600), created so."""
    url = make_url(database_url)
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def pre_ping(engine: Engine) -> None:
    """A pool that survives dropped connections (a database restart, a proxy closing idle
    connections): each connection is tested when taken from the pool and replaced if dead, as
    create_engine(pool_pre_ping=True) does. The event store's engine is made by
    eventsourcing-sqlalchemy, which passes no engine options, so the flag is set on its pool
    (SQLAlchemy 2.0's Pool._pre_ping, read at every checkout); `open_engine` does the same. Not for
    SQLite files: their connections do not drop."""
    if engine.dialect.name != "sqlite":
        engine.pool._pre_ping = True


def open_engine(database_url: str) -> Engine:
    """An engine on the event store's database made as the store makes its own (see the module's
    docstring). ModuleNotFoundError when the URL's driver is not installed."""
    private_sqlite_file(database_url)
    engine = create_engine(database_url)
    pre_ping(engine)
    return engine


def missing_schema(exc: BaseException) -> bool:
    """Whether `exc` is a read that found a table or column of store.schema missing (a database
    no store has set up yet, or one set up by an older version)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in _UNDEFINED:
        return True
    text = str(orig if orig is not None else exc)
    return "no such table" in text or "no such column" in text


# ================================================================================== the sessions
def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_user(engine: Engine, token: str, now: datetime, *,
                 idle: timedelta | None = None) -> str | None:
    """The username of a live session, else None: unknown token, expired, revoked (signed
    out, all revoked, password changed, deactivated), the user deactivated, or (with `idle`)
    unused for longer than that (to within SEEN_RESOLUTION). Marks the session as seen."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    s, u = schema.sessions, schema.users
    sid = token_id(token)
    now = now.astimezone(UTC)
    with engine.begin() as conn:
        row = conn.execute(
            select(s.c.username, s.c.expires_at, s.c.last_seen_at, s.c.revoked_at,
                   u.c.active)
            .select_from(s.outerjoin(u, s.c.username == u.c.username))
            .where(s.c.id == sid)).first()
        if row is None or row.revoked_at is not None or not row.active:
            return None
        expires, seen = schema.utc(row.expires_at), schema.utc(row.last_seen_at)
        assert expires is not None and seen is not None
        if now >= expires or (idle is not None and now - seen > idle):
            return None
        if now - seen >= SEEN_RESOLUTION:
            conn.execute(update(s).where(s.c.id == sid).values(last_seen_at=now))
    username: str = row.username
    return username


# ================================================================================ the case index
class IndexReader:
    """The session check and the case index's reads over one engine (the store's, or one of
    its own from `open`)."""

    # How the case list may be sorted (the queue's `sort`): soonest deadline first (cases without
    # one last), newest opening first, or by reference.
    SORTS = ("deadline", "opened", "reference")

    def __init__(self, engine: Engine, *, owned: bool = False) -> None:
        self.engine = engine
        self._owned = owned

    @classmethod
    def open(cls, database_url: str) -> IndexReader:
        """A reader with an engine of its own (`close` disposes of it)."""
        return cls(open_engine(database_url), owned=True)

    def connect(self) -> None:
        """Connect now (the connection goes back to the pool for the next read), so that a
        database that is down says so before anything else is read."""
        with self.engine.connect():
            pass

    def probe(self) -> None:
        """One read of the sessions table: an error when the store's tables are not there."""
        with self.engine.connect() as conn:
            conn.execute(select(schema.sessions.c.id).limit(1)).first()

    def close(self) -> None:
        if self._owned:
            self.engine.dispose()

    def session_user(self, token: str, now: datetime, *,
                     idle: timedelta | None = None) -> str | None:
        return session_user(self.engine, token, now, idle=idle)

    def list_cases(self, *, stage: str | None = None, risk: str | None = None,
                   assignee: str | None = None, overdue_at: datetime | None = None,
                   limit: int | None = None, country: str | None = None,
                   search: str | None = None, threat: str | None = None,
                   state: str | None = None, sort: str = "deadline",
                   details: bool = False, offset: int = 0,
                   where: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The case index, filtered (every filter optional; both doors' lists go through here, via
        desk.cases.Desk.cases): `stage` (the earliest), `risk` (urgency until verified),
        `assignee` (who holds it), `overdue_at` (deadline before then), `country` (ISO code),
        `search` (part of the reference, any case, or the country code), `threat` (one threat
        type), `state` ("open", "closed", None for both); sorted by `sort` (SORTS).
        `details`: each row also gets `threat_types` (codes) and `stage_detail` ("consent: 1,
        follow-up: 2"; "" before the verification and for cases opened before per-action
        tracks). `limit` and `offset`: one page of the list; `where`: further SQL conditions on
        the case index (pending_for)."""
        idx = schema.case_index
        if sort not in self.SORTS:
            raise ValueError(f"sort must be one of {', '.join(self.SORTS)}")
        order: dict[str, tuple[Any, ...]] = {
            "deadline": (idx.c.next_deadline.is_(None), idx.c.next_deadline, idx.c.reference),
            "opened": (idx.c.opened_at.desc(), idx.c.reference),
            "reference": (idx.c.reference,),
        }
        q = select(idx).order_by(*order[sort]).where(*self.case_filters(
            stage=stage, risk=risk, assignee=assignee, overdue_at=overdue_at, country=country,
            search=search, threat=threat, state=state), *where)
        if limit:
            q = q.limit(limit)
        if offset:
            q = q.offset(offset)
        now = overdue_at or datetime.now(UTC)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
            if details and rows:
                threats, steps = self.details_of(conn, [r["reference"] for r in rows])
        for row in rows:
            for key in ("next_deadline", "opened_at", "updated_at"):
                row[key] = schema.utc(row[key])
            row["overdue"] = bool(row["next_deadline"] and row["next_deadline"] < now)
            if details:
                row["threat_types"] = threats.get(row["reference"], [])
                # Before the verification no action has begun: the stage says it all.
                row["stage_detail"] = ("" if row["stage"] == "verification"
                                       else stage_detail_of(steps.get(row["reference"], [])))
        return rows

    @staticmethod
    def details_of(conn: Any, references: list[str]) -> tuple[dict[str, list[str]],
                                                              dict[str, list[str]]]:
        """Threat types and track steps of these cases (two queries, whatever their number)."""
        th, tr = schema.case_threats, schema.track_index
        threats: dict[str, list[str]] = {}
        steps: dict[str, list[str]] = {}
        for start in range(0, len(references), 500):  # below every database's parameter limit
            chunk = references[start:start + 500]
            for reference, code in conn.execute(
                    select(th.c.reference, th.c.threat_type).where(th.c.reference.in_(chunk))
                    .order_by(th.c.reference, th.c.threat_type)):
                threats.setdefault(reference, []).append(code)
            for reference, step in conn.execute(
                    select(tr.c.reference, tr.c.step).where(tr.c.reference.in_(chunk))):
                steps.setdefault(reference, []).append(step)
        return threats, steps

    @staticmethod
    def case_filters(*, stage: str | None = None, risk: str | None = None,
                     assignee: str | None = None, overdue_at: datetime | None = None,
                     country: str | None = None, search: str | None = None,
                     threat: str | None = None, state: str | None = None) -> list[Any]:
        """The WHERE clauses of list_cases and count_cases."""
        idx = schema.case_index
        out: list[Any] = []
        if stage:
            out.append(idx.c.stage == stage)
        if risk:
            out.append((idx.c.risk_level == risk)
                       | (idx.c.risk_level.is_(None) & (idx.c.urgency == risk)))
        if assignee:
            out.append(idx.c.assignee == assignee)
        if overdue_at is not None:
            out.append(idx.c.next_deadline < overdue_at)
        if country:
            out.append(idx.c.country == country.upper())
        if search:
            out.append(func.upper(idx.c.reference).contains(search.upper(), autoescape=True)
                       | (idx.c.country == search.upper()))
        if threat:
            th = schema.case_threats
            out.append(idx.c.reference.in_(
                select(th.c.reference).where(th.c.threat_type == threat)))
        if state == "open":
            out.append(idx.c.stage != "closed")
        elif state == "closed":
            out.append(idx.c.stage == "closed")
        return out

    def count_cases(self, *, where: Sequence[Any] = (), **filters: Any) -> int:
        """How many cases list_cases would list with these filters (one COUNT query); `where`:
        further SQL conditions, as in list_cases."""
        idx = schema.case_index
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(idx)
                                    .where(*self.case_filters(**filters), *where)).scalar() or 0)

    def open_case_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Open cases by stage and by risk (urgency until verified): two GROUP BY queries."""
        idx = schema.case_index
        level = func.coalesce(idx.c.risk_level, idx.c.urgency)
        with self.engine.connect() as conn:
            by_stage = {str(k): int(n) for k, n in conn.execute(
                select(idx.c.stage, func.count()).where(idx.c.stage != "closed")
                .group_by(idx.c.stage))}
            by_risk = {str(k): int(n) for k, n in conn.execute(
                select(level, func.count()).where(idx.c.stage != "closed").group_by(level))}
        return by_stage, by_risk

    def add_details(self, rows: list[dict[str, Any]]) -> None:
        """Give rows of list_cases(details=False) their `threat_types` and `stage_detail` (for
        the few rows a page shows)."""
        if not rows:
            return
        with self.engine.connect() as conn:
            threats, steps = self.details_of(conn, [r["reference"] for r in rows])
        for row in rows:
            row["threat_types"] = threats.get(row["reference"], [])
            row["stage_detail"] = ("" if row["stage"] == "verification"
                                   else stage_detail_of(steps.get(row["reference"], [])))
