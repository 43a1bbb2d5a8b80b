"""Reports across cases (issue 14): what the secretariat reports each year, for both doors.

Every figure comes from the cases' events (codes and times only, never free text), read through
the store's public API (`CaseStore.trail`) and boiled down to one small summary per case, the
case's *facts* (`case_facts`). The facts are cached in a table of their own,
`appeals_report_facts`, keyed by the case's reference and the version of its last event: the
cache is filled lazily when a report is built and a case's row is computed again as soon as the
case index shows a newer version (the index is written in the same transaction as the events).
The cache holds codes and times only; dropping it loses nothing (it is rebuilt from the events).
An erased case (its data key destroyed) is counted nowhere and its cached facts are deleted by the
next report: erasure removes what the case was about, codes included.

Periods: a case is counted as opened (and with its country, threat types, rights affected and
at-risk groups) when its opening falls in the period; every other figure counts the events that
fall in the period (a consent, a clearance, a message sent, a response, a check-in reporting
reprisals, a closing with its outcome, a fund chosen or applied to). The time to first dispatch is
counted for cases whose first message went out in the period, the time to a response for responses
recorded in the period.

Small counts are suppressed (`SMALL`): any count from 1 to 2 is shown as "<3" (0 stays 0), in
every format. Where a table's cells add up to a total that is shown (cases per month, per country,
outcomes, time to first dispatch), one hidden cell could be worked out from the total; so further
cells are hidden as well ("*", secondary suppression: smallest first) until at least two cells are
hidden and together they hold at least SMALL; if the table has no such cells, the total is hidden
too ("*"). This protects each table on its own: figures of different tables with the same total
(cases per month and per country) are each protected, not against one another. Times (medians)
are shown only over at least SMALL cases. No figure carries a name.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, delete, insert, select
from sqlalchemy import exc as sa_exc

from desk.errors import InvalidRequest, NotAllowed
from domain.countries import country_name, is_country_code
from domain.vocab import Action, Outcome
from store.app import StoreError

# Counts below this (and above 0) are never shown.
SMALL = 3
SUPPRESSED = "<3"
HIDDEN = "*"  # a cell hidden so that a suppressed one cannot be worked out from a total
# Who may build a report: aggregated, suppressed figures without names, for the secretariat's
# staff; not for the ministry's liaisons (they see their own decisions in their inbox).
REPORT_ROLES = frozenset({"head", "auditor", "case_officer"})
# The shape of the cached facts: raise it when `case_facts` changes and every row is rebuilt.
FACTS_SHAPE = 1
# The longest period one report may cover (a few years, for multi-year comparisons).
MAX_DAYS = 366 * 5
# Buckets of the time from intake to first dispatch, in hours: label, upper bound (exclusive).
DISPATCH_BUCKETS: tuple[tuple[str, float], ...] = (
    ("under 24 h", 24), ("1–3 days", 72), ("3–7 days", 168), ("over 7 days", float("inf")))
CHANNELS = tuple(a.value for a in Action)
DECISIONS = ("proposed", "consented", "refused", "withdrawn", "cleared", "denied", "sent")

# ------------------------------------------------------------------- events that count (hooks)
# Reprisals: each check-in that says reprisals=yes (cases with tracks also record
# ReprisalReported with it, one for one: counting the check-ins covers older cases too and counts
# each reprisal once).
REPRISAL_EVENTS: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "DefenderCheckInRecorded": lambda d: d.get("reprisals") is True,
}
# Re-assessments of a case's risk (domain.tracked: a re-assessment on its own, or with a check-in
# or further information), counted as `reassessments`.
REASSESSMENT_EVENTS: frozenset[str] = frozenset({"RiskReassessed"})

metadata = MetaData()
# The per-case facts cache (see the module's docstring). Not a projection the store keeps: a
# cache that reports fill and refresh from the events.
report_facts = Table(
    "appeals_report_facts",
    metadata,
    Column("reference", String(40), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("shape", Integer, nullable=False),
    Column("facts", JSON, nullable=False),
)


# ===================================================================================== facts
def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return str(value)


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def case_facts(trail: Iterable[Any]) -> dict[str, Any]:
    """One case's facts from its decrypted events (store.app.TrailEntry: `event`, `details`,
    `version`): codes and times (ISO 8601, UTC) only. The time of an event is its `at` (the
    workflow's clock), not the moment it was stored."""
    f: dict[str, Any] = {
        "version": 0, "country": "", "opened_at": None, "urgency": "", "risk_level": None,
        "threat_types": [], "rights": [], "groups": [], "proposed": [],
        "decisions": [],  # [channel, decision, at]
        "first_sent": {},  # channel -> at of its first appeal
        "responses": [],  # [channel, at, hours since that channel's first appeal]
        "reprisals": [],  # at of each reported reprisal
        "reassessments": [],
        "escalations": [],
        "funds": [],  # [fund, "chosen" | "applied", at]
        "closed_at": None, "outcome": None,
    }
    intake: Mapping[str, Any] = {}
    for entry in trail:
        name, d = entry.event, entry.details
        at = _iso(d.get("at", getattr(entry, "at", "")))
        f["version"] = entry.version
        if name == "Opened":
            intake = d.get("intake") or {}
            f["opened_at"] = at
            f["proposed"] = sorted(intake.get("requested_actions") or [])
        elif name == "VerificationRecorded":
            v = d.get("verification") or {}
            if v.get("verdict") == "verified":
                from domain.policies import risk_level
                f["risk_level"] = risk_level(v["probability"], v["impact"]).value
        elif name == "FurtherInformationAdded" and d.get("intake"):
            intake = d["intake"]
        elif name in ("ConsentGranted", "ConsentRefused", "ConsentWithdrawn", "ClearanceGranted",
                      "ClearanceDenied"):
            decision = {"ConsentGranted": "consented", "ConsentRefused": "refused",
                        "ConsentWithdrawn": "withdrawn", "ClearanceGranted": "cleared",
                        "ClearanceDenied": "denied"}[name]
            f["decisions"].append([d.get("action", ""), decision, at])
        elif name == "MessageDispatched" and d.get("kind") == "appeal":
            channel = d.get("action", "")
            if channel not in f["first_sent"]:
                f["first_sent"][channel] = at
                f["decisions"].append([channel, "sent", at])
            if d.get("fund"):
                f["funds"].append([d["fund"], "applied", at])
        elif name == "FundsChosen":
            f["funds"].extend([fund, "chosen", at] for fund in sorted(d.get("funds") or {}))
        elif name == "FundApplicationSubmitted":
            f["funds"].append([d.get("fund", ""), "applied", at])
        elif name == "ResponseRecorded":
            channel = d.get("action", "")
            sent = _when(f["first_sent"].get(channel))
            hours = None if sent is None else (datetime.fromisoformat(at) - sent).total_seconds() / 3600
            f["responses"].append([channel, at, hours])
        elif name == "DeadlineEscalated":
            f["escalations"].append(at)
        elif name == "Closed":
            f["closed_at"], f["outcome"] = at, d.get("outcome")
        if name in REPRISAL_EVENTS and REPRISAL_EVENTS[name](d):
            f["reprisals"].append(at)
        if name in REASSESSMENT_EVENTS:
            f["reassessments"].append(at)
    f["country"] = str(intake.get("country") or "")
    f["urgency"] = str(intake.get("urgency") or "")
    f["threat_types"] = sorted(set(intake.get("threat_types") or []))
    f["rights"] = sorted(set(intake.get("rights_affected") or []))
    f["groups"] = sorted({g for person in intake.get("defenders") or []
                          for g in (person.get("at_risk_groups") or [])})
    return f


class FactsCache:
    """The cached facts of every case, refreshed from the events where the index moved on."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._ready = False

    def ensure_table(self) -> None:
        if self._ready:
            return
        for attempt in range(5):  # two processes creating it at once on PostgreSQL: look again
            try:
                metadata.create_all(self.store.engine, checkfirst=True)
                break
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                if attempt == 4:
                    raise
        self._ready = True

    def all(self, references: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Reference -> facts, for every case of the index (or these references) except erased
        ones (`erased_case_ids`): their cached facts are deleted and they are counted nowhere."""
        from store import schema
        self.ensure_table()
        idx = schema.case_index
        wanted = None if references is None else set(references)
        with self.store.engine.connect() as conn:
            erased = erased_case_ids(conn)
            versions = {r: v for r, v, cid in conn.execute(
                select(idx.c.reference, idx.c.version, idx.c.case_id))
                if (wanted is None or r in wanted) and cid not in erased}
            gone = [r for (r, cid) in conn.execute(select(idx.c.reference, idx.c.case_id))
                    if cid in erased] if erased else []
            cached = {r: (v, s, facts) for r, v, s, facts in conn.execute(
                select(report_facts.c.reference, report_facts.c.version, report_facts.c.shape,
                       report_facts.c.facts))
                if r in versions}
        if gone:
            with self.store.engine.begin() as conn:
                conn.execute(delete(report_facts).where(report_facts.c.reference.in_(gone)))
        out: dict[str, dict[str, Any]] = {}
        stale: list[tuple[str, dict[str, Any]]] = []
        for reference, version in versions.items():
            hit = cached.get(reference)
            if hit is not None and hit[0] >= version and hit[1] == FACTS_SHAPE:
                out[reference] = hit[2]
                continue
            try:
                trail = self.store.trail(reference)
            except StoreError:
                continue  # erased (or gone) since the index was read: counted nowhere
            if any((e.details or {}).get("erased") is True for e in trail):
                continue  # an erased case's trail: chain rows only, nothing to count
            facts = case_facts(trail)
            out[reference] = facts
            stale.append((reference, facts))
        if stale:
            self._write(stale)
        return out

    def _write(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        t = report_facts
        try:
            with self.store.engine.begin() as conn:
                for start in range(0, len(rows), 500):
                    chunk = rows[start:start + 500]
                    conn.execute(delete(t).where(t.c.reference.in_([r for r, _ in chunk])))
                    conn.execute(insert(t), [dict(reference=r, version=f["version"],
                                                  shape=FACTS_SHAPE, facts=f) for r, f in chunk])
        except sa_exc.IntegrityError:
            pass  # another report wrote the same rows meanwhile: it is only a cache


def erased_case_ids(conn: Any) -> set[str]:
    """Ids of the cases whose data key was destroyed (erasure with per-case keys: the store's
    `appeals_case_keys.destroyed_at`); empty where the store has no per-case keys."""
    from store import schema
    keys = getattr(schema, "case_keys", None)
    if keys is None or "destroyed_at" not in keys.c:
        return set()
    return {str(cid) for (cid,) in conn.execute(
        select(keys.c.case_id).where(keys.c.destroyed_at.is_not(None)))}


# ================================================================================= the period
@dataclass(frozen=True)
class Period:
    start: date  # first day, inclusive
    end: date  # last day, inclusive

    @property
    def label(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"

    def holds(self, when: str | datetime | None) -> bool:
        if when is None:
            return False
        moment = datetime.fromisoformat(when) if isinstance(when, str) else when
        day = moment.astimezone(UTC).date()
        return self.start <= day <= self.end

    def months(self) -> list[str]:
        out, y, m = [], self.start.year, self.start.month
        while (y, m) <= (self.end.year, self.end.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise InvalidRequest(option, f"must be a date written YYYY-MM-DD, not {value!s:.20}") from None


def parse_period(*, start: str | None = None, end: str | None = None, year: str | None = None,
                 quarter: str | None = None, today: date | None = None,
                 names: Mapping[str, str] | None = None) -> Period:
    """The period of a report from `--from/--to`, `--year 2026` or `--quarter 2026Q3` (one way
    only); the current year when nothing is given. Errors name the option (`names` maps the
    keys from, to, year, quarter to what the door calls them)."""
    n = {"from": "--from", "to": "--to", "year": "--year", "quarter": "--quarter", **(names or {})}
    given = [k for k, v in (("from", start), ("to", end), ("year", year), ("quarter", quarter)) if v]
    if year and (quarter or start or end):
        other = next(k for k in given if k != "year")
        raise InvalidRequest(n["year"], f"cannot be combined with {n[other]}")
    if quarter and (start or end):
        raise InvalidRequest(n["quarter"], f"cannot be combined with {n['from'] if start else n['to']}")
    if quarter:
        m = re.fullmatch(r"\s*(\d{4})\s*-?\s*[Qq]([1-4])\s*", quarter)
        if not m:
            raise InvalidRequest(n["quarter"], "must be a year and a quarter, e.g. 2026Q3")
        y, q = int(m.group(1)), int(m.group(2))
        last_month = q * 3
        return Period(date(y, last_month - 2, 1),
                      date(y, last_month, calendar.monthrange(y, last_month)[1]))
    if year:
        if not re.fullmatch(r"\s*\d{4}\s*", year):
            raise InvalidRequest(n["year"], "must be a year, e.g. 2026")
        y = int(year)
        return Period(date(y, 1, 1), date(y, 12, 31))
    today = today or datetime.now(UTC).date()
    first = _day(start, n["from"]) if start else date(today.year, 1, 1)
    last = _day(end, n["to"]) if end else (date(first.year, 12, 31) if start else today)
    if last < first:
        raise InvalidRequest(n["to"], f"must not be before {n['from']} ({first.isoformat()})")
    if (last - first).days > MAX_DAYS:
        raise InvalidRequest(n["to"], f"the period may cover at most {MAX_DAYS} days")
    return Period(first, last)


def parse_country(value: str | None, option: str = "--country") -> str | None:
    if value is None or not value.strip():
        return None
    code = value.strip().upper()
    if not is_country_code(code):
        raise InvalidRequest(option, f"must be an ISO 3166-1 alpha-2 country code (e.g. KE), "
                                     f"not {value!s:.10}")
    return code


# ============================================================================== suppression
def shown(count: int) -> str:
    """A count as any output shows it: 0, "<3" for 1 and 2, else the number."""
    return "0" if count == 0 else SUPPRESSED if count < SMALL else str(count)


@dataclass
class Cell:
    key: str
    count: int  # the true count: never leaves this module's callers unshown
    text: str = ""  # what is shown: a number, "0", "<3" or "*"

    def __post_init__(self) -> None:
        if not self.text:
            self.text = shown(self.count)

    @property
    def hidden(self) -> bool:
        return self.text in (SUPPRESSED, HIDDEN)


@dataclass
class Figures:
    """One table of counts: cells by key; `total` shown when the cells add up to it."""

    name: str
    title: str
    cells: list[Cell]
    total: Cell | None = None
    note: str = ""

    def protect(self) -> Figures:
        """Secondary suppression (see the module's docstring) for a table with a total."""
        if self.total is None:
            return self
        hidden = [c for c in self.cells if c.hidden]
        if not hidden:
            return self
        candidates = sorted((c for c in self.cells if not c.hidden and c.count > 0),
                            key=lambda c: (c.count, c.key))
        while len(hidden) < 2 or sum(c.count for c in hidden) < SMALL:
            if not candidates:
                self.total.text = HIDDEN
                break
            extra = candidates.pop(0)
            extra.text = HIDDEN
            hidden.append(extra)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "cells": {c.key: c.text for c in self.cells},
                **({"total": self.total.text} if self.total is not None else {}),
                **({"note": self.note} if self.note else {})}


@dataclass
class Duration:
    """A median time over `n` items, shown only over at least SMALL of them."""

    name: str
    title: str
    hours: list[float]

    @property
    def n(self) -> str:
        return shown(len(self.hours))

    @property
    def median(self) -> str:
        if len(self.hours) < SMALL:
            return ""
        return _hours(statistics.median(self.hours))

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "count": self.n, "median": self.median or None}


def _hours(value: float) -> str:
    return f"{value:.1f} h" if value < 48 else f"{value / 24:.1f} days"


@dataclass
class Report:
    period: Period
    country: str | None
    built_at: datetime
    tables: dict[str, Figures] = field(default_factory=dict)
    actions: dict[str, dict[str, Cell]] = field(default_factory=dict)  # channel -> decision -> cell
    durations: dict[str, Duration] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def scope(self) -> str:
        where = f"{country_name(self.country)} ({self.country})" if self.country else "all countries"
        return f"{self.period.label}, {where}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": {"from": self.period.start.isoformat(), "to": self.period.end.isoformat()},
            "country": self.country, "built_at": self.built_at.isoformat(),
            "suppression": f"counts from 1 to {SMALL - 1} are shown as {SUPPRESSED}; {HIDDEN}: "
                           "hidden so that such a count cannot be worked out from a total",
            "tables": {k: t.as_dict() for k, t in self.tables.items()},
            "actions": {ch: {d: c.text for d, c in row.items()} for ch, row in self.actions.items()},
            "times": {k: d.as_dict() for k, d in self.durations.items()},
            "notes": self.notes,
        }


# ================================================================================ the report
def require_reporter(store: Any, username: str) -> None:
    roles = store.user_roles(username)
    if not roles & REPORT_ROLES:
        raise NotAllowed("Only a head, an auditor or a case officer may build reports; "
                         "nothing was shown.")


def build_report(facts: Mapping[str, Mapping[str, Any]], period: Period, country: str | None,
                 *, now: datetime | None = None) -> Report:
    """The report over these cases' facts (FactsCache.all), for the period and country."""
    cases = [f for f in facts.values() if country is None or f["country"] == country]
    report = Report(period, country, now or datetime.now(UTC))
    holds = period.holds
    opened = [f for f in cases if holds(f["opened_at"])]
    closed = [f for f in cases if holds(f["closed_at"])]
    months = Counter(str(f["opened_at"])[:7] for f in opened)
    t = report.tables
    t["opened"] = Figures("opened", "Cases opened, by month",
                          [Cell(m, months[m]) for m in period.months()],
                          Cell("total", len(opened))).protect()
    if country is None:
        by_country = Counter(f["country"] for f in opened)
        t["countries"] = Figures("countries", "Cases opened, by country",
                                 [Cell(c, n) for c, n in sorted(by_country.items())],
                                 Cell("total", len(opened))).protect()
    outcomes = Counter(str(f["outcome"]) for f in closed)
    t["outcomes"] = Figures("outcomes", "Cases closed, by outcome",
                            [Cell(o.value, outcomes[o.value]) for o in Outcome],
                            Cell("total", len(closed))).protect()
    for name, key, title in (("threats", "threat_types", "Threat types (cases opened)"),
                             ("rights", "rights", "Rights affected (cases opened)"),
                             ("groups", "groups", "At-risk groups (cases opened)")):
        counts = Counter(code for f in opened for code in f[key])
        t[name] = Figures(name, title, [Cell(k, n) for k, n in sorted(counts.items())],
                          note="a case may count under several")
    # Actions per channel: proposed at the opening; the rest by the date of their event.
    counts2: Counter[tuple[str, str]] = Counter()
    for f in cases:
        if holds(f["opened_at"]):
            counts2.update((ch, "proposed") for ch in f["proposed"])
        counts2.update((ch, d) for ch, d, at in f["decisions"] if holds(at))
    report.actions = {ch: {d: Cell(d, counts2[(ch, d)]) for d in DECISIONS} for ch in CHANNELS}
    responses = Counter(ch for f in cases for ch, at, _ in f["responses"] if holds(at))
    t["responses"] = Figures("responses", "Responses received, by channel",
                             [Cell(ch, responses[ch]) for ch in CHANNELS],
                             Cell("total", sum(responses.values()))).protect()
    for ch in CHANNELS:
        report.durations[f"response_{ch}"] = Duration(
            f"response_{ch}", f"Time to a response ({ch.replace('_', ' ')})",
            [h for f in cases for c, at, h in f["responses"] if c == ch and holds(at) and h is not None])
    firsts = []
    for f in cases:
        sent = [datetime.fromisoformat(at) for at in f["first_sent"].values()]
        if sent and f["opened_at"] and holds(min(sent)):
            firsts.append((min(sent) - datetime.fromisoformat(f["opened_at"])).total_seconds() / 3600)
    report.durations["first_dispatch"] = Duration("first_dispatch",
                                                  "Time from intake to first dispatch", firsts)
    buckets = Counter(next(label for label, top in DISPATCH_BUCKETS if h < top) for h in firsts)
    t["first_dispatch"] = Figures("first_dispatch", "Time from intake to first dispatch",
                                  [Cell(label, buckets[label]) for label, _ in DISPATCH_BUCKETS],
                                  Cell("total", len(firsts))).protect()
    reprisals = [at for f in cases for at in f["reprisals"] if holds(at)]
    with_reprisals = sum(1 for f in cases if any(holds(at) for at in f["reprisals"]))
    reassessed = sum(1 for f in cases for at in f["reassessments"] if holds(at))
    funds = Counter(kind for f in cases for _, kind, at in f["funds"] if holds(at))
    t["summary"] = Figures("summary", "In the period", [
        Cell("cases opened", len(opened)), Cell("cases closed", len(closed)),
        Cell("reprisals reported", len(reprisals)), Cell("cases with reprisals reported", with_reprisals),
        Cell("risk re-assessments", reassessed),
        Cell("fund applications chosen", funds["chosen"]),
        Cell("fund applications made", funds["applied"]),
    ])
    report.notes.append("Funds granted: not counted: no event records a fund's decision yet "
                        "(responses from funds are counted under emergency fund).")
    return report


def build(store: Any, username: str, period: Period, country: str | None,
          *, now: datetime | None = None) -> Report:
    """The report for a signed-in member of staff (REPORT_ROLES), from the cached facts."""
    require_reporter(store, username)
    return build_report(FactsCache(store).all(), period, country, now=now)


# ============================================================================== the formats
def rows(report: Report) -> list[tuple[str, str, str]]:
    """Every shown figure as (section, item, value): what table and CSV print."""
    out: list[tuple[str, str, str]] = [("report", "period", report.period.label),
                                       ("report", "country", report.country or "all")]
    order = ["summary", "opened", "countries", "threats", "rights", "groups", "outcomes",
             "responses", "first_dispatch"]
    for name in order:
        t = report.tables.get(name)
        if t is None:
            continue
        out.extend((name, c.key, c.text) for c in t.cells)
        if t.total is not None:
            out.append((name, "total", t.total.text))
    for ch, row in report.actions.items():
        out.extend((f"actions:{ch}", d, c.text) for d, c in row.items())
    for d in report.durations.values():
        out.append(("times", f"{d.name} count", d.n))
        out.append(("times", f"{d.name} median", d.median or "not shown"))
    return out


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "item", "value"])
    w.writerows(rows(report))
    return buf.getvalue()


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False)


def to_table(report: Report) -> str:
    data = rows(report)
    widths = [max(len(r[i]) for r in data) for i in range(2)]
    lines = [f"Report {report.scope} (counts 1-{SMALL - 1} shown as {SUPPRESSED}; "
             f"{HIDDEN} hidden so that they cannot be worked out from a total)"]
    section = ""
    for s, item, value in data:
        if s != section:
            lines.append("")
            section = s
        lines.append(f"{s.ljust(widths[0])}  {item.ljust(widths[1])}  {value}")
    lines.extend(["", *report.notes])
    return "\n".join(lines) + "\n"


def within(days: int, now: datetime) -> tuple[datetime, datetime]:
    return now, now + timedelta(days=days)
