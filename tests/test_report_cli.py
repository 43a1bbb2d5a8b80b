"""`appeals report` as staff type it (a subprocess, signed in): every format, the period options,
bad input named by its option, who may run it, and no name in any output."""

from __future__ import annotations

import csv
import io
import json

from benchmarks.report_seed import SMALL_COUNTRY, names, seed
from tests.dev_stack import Stack, fails, ok

CASES = 40


async def test_appeals_report_in_every_format(stack: Stack) -> None:
    seed(stack.store, CASES, seed_value=3)
    period = ("--from", "2025-12-01", "--to", "2026-12-31")
    table = ok(stack.appeals("report", *period, user="hana"))
    assert table.startswith("Report 2025-12-01 to 2026-12-31, all countries")
    assert ["summary", "cases", "opened", str(CASES)] in [line.split() for line in table.splitlines()]
    data = json.loads(ok(stack.appeals("report", *period, "--format", "json", user="aldo")))
    assert data["period"] == {"from": "2025-12-01", "to": "2026-12-31"}
    assert data["tables"]["summary"]["cells"]["cases opened"] == str(CASES)
    rows = list(csv.reader(io.StringIO(ok(stack.appeals("report", *period, "--format", "csv",
                                                        user="olga")))))
    assert rows[0] == ["section", "item", "value"]
    assert ["summary", "cases opened", str(CASES)] in rows
    small = json.loads(ok(stack.appeals("report", *period, "--country", SMALL_COUNTRY.lower(),
                                        "--format", "json", user="hana")))
    assert small["country"] == SMALL_COUNTRY
    assert small["tables"]["summary"]["cells"]["cases opened"] == "<3"
    html = ok(stack.appeals("report", "--year", "2026", "--format", "html", user="hana"))
    assert html.startswith("<!doctype html>") and html.count("data:image/png;base64,") == 4
    assert "<script" not in html
    quarter = json.loads(ok(stack.appeals("report", "--quarter", "2026Q2", "--format", "json",
                                          user="hana")))
    assert quarter["period"] == {"from": "2026-04-01", "to": "2026-06-30"}
    everything = "\n".join([table, html, json.dumps(data), json.dumps(small)]).lower()
    for name in names(CASES):
        assert name.lower() not in everything, name
    # Bad input: one line naming the option, exit 2; a liaison may not; nobody signed in: 6.
    assert fails(stack.appeals("report", "--from", "2026-02-30", user="hana"), 2).startswith(
        "--from: must be a date written YYYY-MM-DD")
    assert fails(stack.appeals("report", "--from", "2026-03-01", "--to", "2026-01-01",
                               user="hana"), 2) == "--to: must not be before --from (2026-03-01)"
    assert fails(stack.appeals("report", "--country", "Kenya", user="hana"), 2).startswith(
        "--country: must be an ISO 3166-1 alpha-2 country code")
    assert fails(stack.appeals("report", "--format", "pdf", user="hana"), 2).startswith("--format:")
    assert fails(stack.appeals("report", "--quarter", "2026Q9", user="hana"), 2).startswith(
        "--quarter:")
    assert fails(stack.appeals("report", "--year", "2026", "--to", "2026-05-01", user="hana"),
                 2) == "--year: cannot be combined with --to"
    assert fails(stack.appeals("report", user="lina"), 4).startswith(
        "Only a head, an auditor or a case officer may build reports")
    fails(stack.appeals("report", user=None), 6)
