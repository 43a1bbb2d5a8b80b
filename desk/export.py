"""The audit trail of a case for people and reports, for both doors: entries with a summary of codes
(never names or free text), and JSON, CSV and HTML exports (the details do hold case data: for
authorised staff only; the web passes the trail through desk.redaction first).
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# The trail's summary column shows these codes only, never free text.
SUMMARY_KEYS = ("action", "stage", "step", "level", "verdict", "risk_level", "granted",
                "public_naming", "kind", "fund", "outcome", "reprisals", "new_deadline", "message_id")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


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
    return _CONTROL.sub("?", " ".join(parts))


def trail_entries(trail: Sequence[Any]) -> list[dict[str, Any]]:
    """The trail (store.app.TrailEntry) as plain entries: version, time, actor, event, command id,
    summary (codes) and details."""
    return [{"version": e.version, "time": e.at, "actor": e.actor, "event": e.event,
             "command_id": e.command_id, "summary": trail_summary(e.details), "details": e.details}
            for e in trail]


def csv_cell(value: Any) -> str:
    """Text for a spreadsheet: a leading formula character is neutralised."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def flat_details(details: Any, prefix: str = "") -> dict[str, str]:
    """An event's details as columns: nested objects by dotted path (`verification.verdict`),
    lists of plain values joined with "; ", lists of objects by index (`consents.0.given_by`)."""
    out: dict[str, str] = {}
    if isinstance(details, dict):
        for key, value in details.items():
            out.update(flat_details(value, f"{prefix}{key}."))
    elif isinstance(details, list | tuple) and any(isinstance(v, dict | list) for v in details):
        for i, value in enumerate(details):
            out.update(flat_details(value, f"{prefix}{i}."))
    else:
        if isinstance(details, list | tuple | set | frozenset):
            text = "; ".join(when(v) if isinstance(v, datetime) else str(v) for v in details)
        elif isinstance(details, bool):
            text = "true" if details else "false"
        else:
            text = when(details)
        out[prefix.rstrip(".")] = text
    return out


def chain_summary(report: Any) -> dict[str, Any]:
    """A chain verification (store.chain.ChainReport) as plain data: `ok`, `events`,
    `broken_version`, `reason` and a one-line `text` (the shape store.audit reports)."""
    return {"ok": bool(report.ok), "events": report.events,
            "broken_version": report.broken_version, "reason": report.reason,
            "text": report.describe()}


def trail_json(reference: str, entries: Sequence[dict[str, Any]], *, chain: Any = None,
               generated_at: datetime | None = None) -> dict[str, Any]:
    """The trail as one JSON document: `reference` and `entries`; with `generated_at` and `chain`
    (a ChainReport) when given. Dump it with `default=json_default`."""
    document: dict[str, Any] = {"reference": reference}
    if generated_at is not None:
        document["generated_at"] = generated_at
    if chain is not None:
        document["chain"] = chain_summary(chain)
    document["entries"] = list(entries)
    return document


def trail_csv(entries: Sequence[dict[str, Any]], chain: Any = None) -> str:
    """One row an event; its details in columns of their own (`details.<path>`), the union of
    every event's paths, so that a spreadsheet can filter and sort by any of them; with `chain`
    (a ChainReport), a last row saying whether the audit chain verifies."""
    flat = [flat_details(e["details"] or {}) for e in entries]
    paths = sorted({p for f in flat for p in f if p})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["version", "time", "actor", "event", "command_id", "summary",
                     *(f"details.{p}" for p in paths)])
    for e, f in zip(entries, flat, strict=True):
        writer.writerow([e["version"], when(e["time"]), csv_cell(e["actor"]), e["event"],
                         csv_cell(e["command_id"]), csv_cell(e["summary"]),
                         *(csv_cell(f.get(p, "")) for p in paths)])
    if chain is not None:
        writer.writerow([])
        writer.writerow(["chain", csv_cell(chain.describe())])
    return out.getvalue()


def trail_html(reference: str, entries: Sequence[dict[str, Any]]) -> str:
    esc = html.escape
    rows = "\n".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>".format(
            esc(str(e["version"])), esc(when(e["time"])), esc(str(e["actor"])), esc(str(e["event"])),
            esc(str(e["summary"])),
            esc(json.dumps(e["details"], indent=1, default=json_default, ensure_ascii=False,
                           sort_keys=True)))
        for e in entries)
    title = esc(f"Audit trail {reference}")
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
