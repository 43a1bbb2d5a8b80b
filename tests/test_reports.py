"""Reports across cases (desk.reports), on 300 seeded cases in a real SQLite event store: every
figure against a count made here independently from the decrypted events, small counts suppressed
in every format (tables, CSV, JSON, the HTML page), totals that do not give a suppressed count
away, no name of a defender or an organisation in any output, and the facts cache refreshed when a
case moves on (also on the real PostgreSQL)."""

from __future__ import annotations

import base64
import json
import os
import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from benchmarks.report_seed import SMALL_COUNTRY, names, seed
from desk import reports
from desk.charts import CHARTS, chart_png
from desk.errors import InvalidRequest, NotAllowed
from desk.report_html import standalone_html
from desk.reports import HIDDEN, SUPPRESSED, Cell, Figures, parse_period
from store.app import CaseStore, sqlite_url
from tests.backends import Backend

CASES = 300
YEAR = reports.Period(date(2026, 1, 1), date(2026, 12, 31))
Q1 = reports.Period(date(2026, 1, 1), date(2026, 3, 31))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CaseStore, list[str]]]:
    path = tmp_path_factory.mktemp("reports") / "events.sqlite"
    store = CaseStore(sqlite_url(str(path)), base64.b64encode(os.urandom(32)).decode())
    store.add_user("hana", "Hana Head", "hana@example.org", ["head"])
    store.add_user("lina", "Lina Liaison", "lina@example.org", ["ministry_liaison"])
    store.add_user("aldo", "Aldo Auditor", "aldo@example.org", ["auditor"])
    refs = seed(store, CASES)
    try:
        yield store, refs
    finally:
        store.close()


# ------------------------------------------------------------------ the independent count
def in_period(period: reports.Period, at: Any) -> bool:
    moment = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    return period.start <= moment.astimezone(UTC).date() <= period.end


def independent(store: CaseStore, refs: list[str], period: reports.Period,
                country: str | None = None) -> dict[str, Any]:
    """What every figure must be, counted straight from each case's events (store.trail)."""
    c: dict[str, Any] = {k: Counter() for k in (
        "months", "countries", "outcomes", "threats", "rights", "groups", "actions",
        "responses", "summary", "buckets")}
    firsts: list[float] = []
    response_hours: dict[str, list[float]] = {}
    for ref in refs:
        trail = store.trail(ref)
        opened = trail[0]
        assert opened.event == "Opened"
        intake = opened.details["intake"]
        if country and intake["country"] != country:
            continue
        opened_at = opened.details["at"]
        if in_period(period, opened_at):
            c["months"][opened_at.strftime("%Y-%m")] += 1
            c["countries"][intake["country"]] += 1
            c["summary"]["cases opened"] += 1
            c["threats"].update(intake["threat_types"])
            c["rights"].update(intake["rights_affected"])
            c["groups"].update({g for d in intake["defenders"] for g in d["at_risk_groups"]})
            c["actions"].update((a, "proposed") for a in intake["requested_actions"])
        first_sent: dict[str, datetime] = {}
        for e in trail:
            d, at = e.details, e.details["at"]
            if e.event == "MessageDispatched" and d["kind"] == "appeal" \
                    and d["action"] not in first_sent:
                first_sent[d["action"]] = at
                if in_period(period, at):
                    c["actions"][(d["action"], "sent")] += 1
            if not in_period(period, at):
                continue
            names_of = {"ConsentGranted": "consented", "ConsentRefused": "refused",
                        "ConsentWithdrawn": "withdrawn", "ClearanceGranted": "cleared",
                        "ClearanceDenied": "denied"}
            if e.event in names_of:
                c["actions"][(d["action"], names_of[e.event])] += 1
            elif e.event == "Closed":
                c["outcomes"][d["outcome"]] += 1
                c["summary"]["cases closed"] += 1
            elif e.event == "ResponseRecorded":
                c["responses"][d["action"]] += 1
                response_hours.setdefault(d["action"], []).append(
                    (at - first_sent[d["action"]]).total_seconds() / 3600)
            elif e.event == "DefenderCheckInRecorded" and d["reprisals"]:
                c["summary"]["reprisals reported"] += 1
            elif e.event == "FundsChosen":
                c["summary"]["fund applications chosen"] += len(d["funds"])
            elif e.event == "FundApplicationSubmitted" or (
                    e.event == "MessageDispatched" and d.get("fund")):
                c["summary"]["fund applications made"] += 1
        if any(e.event == "DefenderCheckInRecorded" and e.details["reprisals"]
               and in_period(period, e.details["at"]) for e in trail):
            c["summary"]["cases with reprisals reported"] += 1
        if first_sent and in_period(period, min(first_sent.values())):
            hours = (min(first_sent.values()) - opened_at).total_seconds() / 3600
            firsts.append(hours)
            c["buckets"]["under 24 h" if hours < 24 else "1–3 days" if hours < 72
                         else "3–7 days" if hours < 168 else "over 7 days"] += 1
    c["firsts"] = firsts
    c["response_hours"] = response_hours
    return c


def check_cell(cell: Cell, expected: int, where: str) -> None:
    assert cell.count == expected, where
    if cell.text == HIDDEN:
        assert expected >= 0, where
    elif 1 <= expected <= 2:
        assert cell.text == SUPPRESSED, where
    else:
        assert cell.text == str(expected), where


def check_report(report: reports.Report, truth: dict[str, Any], country: str | None) -> int:
    """Every figure of the report against the independent count; returns how many were checked."""
    checked = 0
    t = report.tables
    pairs: list[tuple[str, Counter[Any]]] = [
        ("opened", truth["months"]), ("outcomes", truth["outcomes"]),
        ("threats", truth["threats"]), ("rights", truth["rights"]), ("groups", truth["groups"]),
        ("responses", truth["responses"]), ("first_dispatch", truth["buckets"]),
        ("summary", truth["summary"])]
    if country is None:
        pairs.append(("countries", truth["countries"]))
    for name, counter in pairs:
        keys = {cell.key for cell in t[name].cells}
        assert set(k for k, v in counter.items() if v) <= keys, name
        for cell in t[name].cells:
            check_cell(cell, counter[cell.key], f"{name}:{cell.key}")
            checked += 1
        if t[name].total is not None:
            check_cell(t[name].total, sum(counter.values()), f"{name}:total")  # type: ignore[arg-type]
    for channel, row in report.actions.items():
        for decision, cell in row.items():
            check_cell(cell, truth["actions"][(channel, decision)], f"actions:{channel}:{decision}")
            checked += 1
    firsts = truth["firsts"]
    d = report.durations["first_dispatch"]
    assert sorted(d.hours) == pytest.approx(sorted(firsts))
    if len(firsts) >= 3:
        assert d.median == reports._hours(statistics.median(firsts))
    for channel, hours in truth["response_hours"].items():
        assert sorted(report.durations[f"response_{channel}"].hours) == pytest.approx(sorted(hours))
    return checked


# ------------------------------------------------------------------------------------ tests
def test_every_figure_matches_an_independent_count_from_the_events(
        seeded: tuple[CaseStore, list[str]]) -> None:
    store, refs = seeded
    facts = reports.FactsCache(store).all()
    assert len(facts) == CASES
    for period, country in ((YEAR, None), (Q1, None), (YEAR, "KE"), (Q1, "UG"),
                            (YEAR, SMALL_COUNTRY)):
        report = reports.build(store, "hana", period, country)
        truth = independent(store, refs, period, country)
        checked = check_report(report, truth, country)
        assert checked > 60
    # The seeded mix reaches every kind of figure in the year's report.
    year = reports.build(store, "hana", YEAR, None)
    summary = {c.key: c.count for c in year.tables["summary"].cells}
    assert summary["cases opened"] > 200 and summary["cases closed"] > 60
    assert summary["reprisals reported"] >= 3 and summary["fund applications made"] >= 3
    assert all(year.actions[ch]["sent"].count >= 3 for ch in year.actions)
    assert any(c.text == SUPPRESSED for t in year.tables.values() for c in t.cells)


def test_a_small_country_shows_only_suppressed_counts(seeded: tuple[CaseStore, list[str]]) -> None:
    store, _ = seeded
    small = reports.build(store, "hana", parse_period(start="2025-01-01", end="2026-12-31"),
                          SMALL_COUNTRY)
    texts = [c.text for t in small.tables.values() for c in t.cells]
    texts += [c.text for row in small.actions.values() for c in row.values()]
    texts += [t.total.text for t in small.tables.values() if t.total is not None]
    assert small.tables["summary"].cells[0].count == 2
    assert set(texts) <= {"0", SUPPRESSED, HIDDEN}, texts
    assert all(d.median == "" for d in small.durations.values())
    for output in (reports.to_table(small), reports.to_csv(small), reports.to_json(small)):
        assert "<3" in output
        # No count of 1 or 2 anywhere: every value cell is 0, <3 or *.
        for line in reports.to_csv(small).splitlines()[3:]:
            value = line.rsplit(",", 1)[1]
            assert value in ("0", SUPPRESSED, HIDDEN, "not shown"), line


def test_secondary_suppression_keeps_a_suppressed_cell_from_being_worked_out() -> None:
    def table(*counts: int) -> Figures:
        return Figures("t", "T", [Cell(str(i), n) for i, n in enumerate(counts)],
                       Cell("total", sum(counts))).protect()

    plain = table(5, 7, 0, 9)  # nothing small: nothing hidden
    assert [c.text for c in plain.cells] == ["5", "7", "0", "9"] and plain.total.text == "21"  # type: ignore[union-attr]
    one = table(1, 7, 4, 9)  # one <3: the smallest other count is hidden too
    assert [c.text for c in one.cells] == [SUPPRESSED, "7", HIDDEN, "9"]
    assert one.total.text == "21"  # type: ignore[union-attr]
    pair = table(1, 1, 5, 8)  # two cells of 1 add up to 2: one more is hidden (sum >= 3)
    assert [c.text for c in pair.cells] == [SUPPRESSED, SUPPRESSED, HIDDEN, "8"]
    alone = table(2, 0, 0)  # nothing else to hide: the total goes too
    assert [c.text for c in alone.cells] == [SUPPRESSED, "0", "0"] and alone.total.text == HIDDEN  # type: ignore[union-attr]
    # Whatever the table, a reader cannot narrow a suppressed cell to one value from the rest.
    for counts in ((1, 3, 3), (2, 2, 40), (1, 2, 3, 4), (0, 1, 0, 30), (2, 5)):
        t = table(*counts)
        hidden = [c.count for c in t.cells if c.hidden]
        if t.total.text != HIDDEN:  # type: ignore[union-attr]
            assert len(hidden) >= 2 and sum(hidden) >= 3, counts
    multi = Figures("m", "M", [Cell("a", 1), Cell("b", 4)]).protect()  # no total: nothing more
    assert [c.text for c in multi.cells] == [SUPPRESSED, "4"]
    assert reports.shown(0) == "0" and reports.shown(1) == reports.shown(2) == SUPPRESSED
    assert reports.shown(3) == "3"


def test_no_output_carries_a_name(seeded: tuple[CaseStore, list[str]]) -> None:
    store, _ = seeded
    outputs = []
    for period, country in ((YEAR, None), (Q1, "KE"), (YEAR, SMALL_COUNTRY)):
        report = reports.build(store, "aldo", period, country)
        outputs += [reports.to_table(report), reports.to_csv(report), reports.to_json(report),
                    standalone_html(report)]
        outputs += [chart_png(report, name).decode("latin-1") for name in CHARTS]
    # The cache holds codes and times only, too.
    with store.engine.connect() as conn:
        outputs += [json.dumps(f) for f in conn.execute(select(reports.report_facts.c.facts)).scalars()]
    lowered = [o.lower() for o in outputs]
    for name in names(CASES):
        assert not any(name.lower() in o for o in lowered), name
    for text in ("Plainclothes", "Nairobi", "Trusted partner", "She was followed", "Too risky"):
        assert not any(text.lower() in o for o in lowered), text


def test_who_may_build_reports_and_bad_periods(seeded: tuple[CaseStore, list[str]]) -> None:
    store, _ = seeded
    with pytest.raises(NotAllowed):
        reports.build(store, "lina", YEAR, None)  # a ministry liaison
    with pytest.raises(NotAllowed):
        reports.build(store, "nobody", YEAR, None)
    assert reports.build(store, "aldo", YEAR, None).tables["summary"].cells[0].count > 0
    assert parse_period(quarter="2026Q3") == reports.Period(date(2026, 7, 1), date(2026, 9, 30))
    assert parse_period(year="2025") == reports.Period(date(2025, 1, 1), date(2025, 12, 31))
    assert parse_period(start="2026-02-01", end="2026-02-28").months() == ["2026-02"]
    assert parse_period(today=date(2026, 5, 4)) == reports.Period(date(2026, 1, 1), date(2026, 5, 4))
    for kwargs, field, words in (
            ({"start": "2026-13-01"}, "--from", "YYYY-MM-DD"),
            ({"start": "2026-03-01", "end": "2026-02-01"}, "--to", "must not be before --from"),
            ({"quarter": "2026Q5"}, "--quarter", "e.g. 2026Q3"),
            ({"year": "26"}, "--year", "e.g. 2026"),
            ({"year": "2026", "start": "2026-01-01"}, "--year", "cannot be combined with --from"),
            ({"start": "2010-01-01", "end": "2026-01-01"}, "--to", "at most")):
        with pytest.raises(InvalidRequest) as err:
            parse_period(**kwargs)  # type: ignore[arg-type]
        assert err.value.field == field and words in err.value.reason, kwargs
    assert reports.parse_country(" ke ") == "KE"
    with pytest.raises(InvalidRequest) as bad:
        reports.parse_country("Kenya")
    assert bad.value.field == "--country"


def _cached_version(store: CaseStore, ref: str) -> int:
    t = reports.report_facts
    with store.engine.connect() as conn:
        return int(conn.execute(select(t.c.version).where(t.c.reference == ref)).scalar_one())


def test_the_facts_cache_follows_the_events(backend: Backend) -> None:
    """The cache is filled on first use, used while the case stands still, and computed again
    from the events once the case moves on (SQLite and PostgreSQL)."""
    from tests.factories import T0, open_args
    store = backend.open()
    try:
        store.add_user("hana", "Hana Head", "hana@example.org", ["head"])
        store.open_case(**open_args("UA-2026-9001", actions=["rapporteur"]), tracked=True)
        store.open_case(**open_args("UA-2026-9002", actions=["mfa"], country="UG"), tracked=True)
        period = parse_period(year=str(T0.year))
        first = reports.build(store, "hana", period, None)
        assert first.tables["summary"].cells[1].count == 0  # closed
        assert _cached_version(store, "UA-2026-9001") == 1
        # A stale row (as a crashed writer might leave) is not trusted once the index moved on.
        store.execute("UA-2026-9001", "close", {"outcome": "resolved", "summary": "",
                                                "at": T0 + timedelta(days=1)}, "hana", "c1")
        again = reports.build(store, "hana", period, None)
        assert again.tables["summary"].cells[1].count == 1
        assert {c.key: c.count for c in again.tables["outcomes"].cells}["resolved"] == 1
        assert _cached_version(store, "UA-2026-9001") == 2
        # Further information that corrects the intake's codes: the report follows the latest.
        store.execute("UA-2026-9002", "add_further_information",
                      {"information": "More detail.", "at": T0 + timedelta(days=2),
                       "intake_changes": {"threat_types": ["death_threat"],
                                          "rights_affected": ["life"]}}, "hana", "fi1")
        # A case opened before per-action tracks (domain.case.Case) counts the same way.
        store.open_case(**open_args("UA-2026-9003", actions=["mfa"], country="UG"))
        store.execute("UA-2026-9003", "close", {"outcome": "duplicate", "summary": "",
                                                "at": T0 + timedelta(days=1)}, "hana", "c3")
        third = reports.build(store, "hana", period, "UG")
        threats = {c.key: c.count for c in third.tables["threats"].cells}
        assert threats == {"death_threat": 1, "arbitrary_arrest_or_detention": 1,
                           "judicial_harassment": 1}
        assert {c.key: c.count for c in third.tables["rights"].cells}["life"] == 1
        assert {c.key: c.count for c in third.tables["outcomes"].cells}["duplicate"] == 1
        assert third.actions["mfa"]["proposed"].count == 2
        assert third.tables["summary"].cells[0].text == "<3"
        # A second store object on the same database reads the same cache.
        other = backend.open()
        try:
            assert reports.FactsCache(other).all()["UA-2026-9002"]["country"] == "UG"
        finally:
            other.close()
    finally:
        store.close()


def test_the_charts_are_images_with_the_suppressed_bars(seeded: tuple[CaseStore, list[str]],
                                                        tmp_path: Path) -> None:
    from PIL import Image
    store, _ = seeded
    small = reports.build(store, "hana", YEAR, SMALL_COUNTRY)
    for name in CHARTS:
        png = chart_png(small, name)
        path = tmp_path / f"{name}.png"
        path.write_bytes(png)
        with Image.open(path) as img:
            assert img.size == (720, 340)
            colours = img.convert("RGB").getcolors(maxcolors=1 << 16) or []
            assert len(colours) > 10, name  # not blank
    # A suppressed bar is drawn in the hatched grey, never in the colour of a shown count.
    with Image.open(tmp_path / "cases_per_month.png") as img:
        pixels = {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 20) or []}
    assert (0xD9, 0xD9, 0xD9) in pixels and (0x1F, 0x5F, 0x99) not in pixels


# ------------------------------------------------------------------------------ the dashboard
def test_the_dashboard_figures_match_the_cases(seeded: tuple[CaseStore, list[str]]) -> None:
    """Each dashboard figure against a count made here from the case list and the events."""
    from desk.dashboard import build_dashboard, dashboard_for

    store, refs = seeded
    now = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
    # Two escalations now (the chain's time is when they were stored: this week).
    escalated = []
    for row in store.list_cases(state="open"):
        if row["stage"] == "verification" and len(escalated) < 2:
            store.execute(row["reference"], "escalate",
                          {"action": "", "step": "verification", "level": 1,
                           "notified": ["hana"], "at": now}, "system", f"esc-{row['reference']}")
            escalated.append(row["reference"])
    assert len(escalated) == 2
    d = build_dashboard(store, datetime.now(UTC))
    assert d.escalations == 2 and sorted(c["reference"] for c in d.escalated_cases) == sorted(escalated)
    d = build_dashboard(store, now)
    open_rows = store.list_cases(state="open")
    assert d.open_total == len(open_rows)
    by: Counter[tuple[str, str]] = Counter((r["stage"], r["risk_level"] or r["urgency"]) for r in open_rows)
    assert {(s, r): n for s, row in d.by_stage_risk.items() for r, n in row.items()} == dict(by)
    deadlines = [r["next_deadline"] for r in open_rows if r["next_deadline"]]
    assert d.overdue == sum(1 for x in deadlines if x < now)
    assert d.due_24h == sum(1 for x in deadlines if now <= x < now + timedelta(hours=24))
    assert d.due_7d == sum(1 for x in deadlines if now <= x < now + timedelta(days=7))
    assert [c["deadline"] for c in d.due_soon] == sorted(c["deadline"] for c in d.due_soon)
    # Waiting for clearance: every track the index says waits for it, longest first, since its
    # consent (from the events).
    waiting = []
    for ref in refs:
        case = store.get(ref)
        for action, track in getattr(case, "tracks", {}).items():
            if track.step == "clearance":
                consent = [e.details["at"] for e in store.trail(ref)
                           if e.event == "ConsentGranted" and e.details["action"] == action][-1]
                waiting.append((consent, ref, action))
    waiting.sort()
    assert len(waiting) >= 3
    assert [(w["since"], w["reference"], w["action"]) for w in d.waiting_clearance] == waiting[:15]
    with pytest.raises(NotAllowed):
        dashboard_for(store, "aldo", now)  # an auditor: reports, not the head's dashboard
    assert dashboard_for(store, "hana", now).open_total == d.open_total


@pytest.mark.skipif(not hasattr(CaseStore, "erase"), reason="this store has no erasure (per-case "
                    "keys) yet; the test runs once it has")
def test_an_erased_case_is_counted_nowhere_and_leaves_the_cache(tmp_path: Path) -> None:
    from tests.factories import T0, open_args
    store = CaseStore(sqlite_url(str(tmp_path / "e.sqlite")), base64.b64encode(os.urandom(32)).decode())
    try:
        store.add_user("hana", "Hana Head", "hana@example.org", ["head"])
        for ref in ("UA-2026-9101", "UA-2026-9102"):
            store.open_case(**open_args(ref, actions=["rapporteur"]), tracked=True)
            store.execute(ref, "close", {"outcome": "resolved", "summary": "",
                                         "at": T0 + timedelta(days=1)}, "hana", f"{ref}-c")
        period = parse_period(year=str(T0.year))
        assert reports.build(store, "hana", period, None).tables["summary"].cells[0].count == 2
        later = T0 + timedelta(days=4000)
        erase = store.erase  # type: ignore[attr-defined]
        asked = {"at": later, "retention_days": 1, "reason_code": "erasure-request",
                 "reason": "The grantee asked."}
        assert erase("UA-2026-9101", actor="hana", **asked).state == "requested"
        store.add_user("hera", "Hera Head", "hera@example.org", ["head"])
        assert erase("UA-2026-9101", actor="hera", **asked).state == "erased"
        after = reports.build(store, "hana", period, None)
        assert after.tables["summary"].cells[0].count == 1
        with store.engine.connect() as conn:
            cached = set(conn.execute(select(reports.report_facts.c.reference)).scalars())
        assert cached == {"UA-2026-9102"}
    finally:
        store.close()


def test_reassessments_and_reprisals_count_once_each(tmp_path: Path) -> None:
    """A re-assessment on its own, one with a check-in and one with further information are three
    re-assessments; a check-in reporting a reprisal (which also records ReprisalReported) is one
    reprisal."""
    from store.app import CaseStore, sqlite_url
    from tests.backends import new_key
    from tests.factories import T0, open_args, verification

    store = CaseStore(sqlite_url(str(tmp_path / "r.sqlite")), new_key())
    try:
        store.add_user("hana", "Hana Head", "hana@example.org", ["head"])
        ref = "UA-2026-9101"
        store.open_case(**open_args(ref, actions=["rapporteur"]), tracked=True)
        store.execute(ref, "record_verification", {"verification": verification(), "at": T0},
                      "olga", "v")
        again = {"probability": 2, "impact": 2, "reason": "Hearing postponed"}
        store.execute(ref, "reassess_risk", {**again, "at": T0}, "olga", "r1")
        store.execute(ref, "record_checkin", {"summary": "Searched", "reprisals": True,
                                              "reassessment": again, "at": T0}, "olga", "r2")
        store.execute(ref, "add_further_information", {"information": "More", "at": T0,
                                                       "reassessment": again}, "olga", "r3")
        assert [e.event for e in store.trail(ref)].count("ReprisalReported") == 1
        summary = {c.key: c.count for c in reports.build(
            store, "hana", parse_period(year=str(T0.year)), None).tables["summary"].cells}
        assert summary["risk re-assessments"] == 3
        assert summary["reprisals reported"] == 1
    finally:
        store.close()
