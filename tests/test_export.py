"""The audit CSV (desk.export, both doors): details in columns of their own, formulas neutralised."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from desk.export import flat_details, trail_csv


def entry(version: int, event: str, details: dict[str, object]) -> dict[str, object]:
    return {"version": version, "time": datetime(2026, 11, 2, 8, 0, tzinfo=UTC), "actor": "olga",
            "event": event, "command_id": f"c{version}", "summary": "", "details": details}


def test_details_become_columns_by_path() -> None:
    assert flat_details({"verification": {"verdict": "verified", "probability": 4},
                         "consents": [{"given_by": "lawyer"}], "send_to": ["mfa", "rapporteur"],
                         "reprisals": False}) == {
        "verification.verdict": "verified", "verification.probability": "4",
        "consents.0.given_by": "lawyer", "send_to": "mfa; rapporteur", "reprisals": "false"}


def test_every_event_has_every_column_and_no_cell_is_a_formula() -> None:
    text = trail_csv([entry(1, "VerificationRecorded", {"verification": {"verdict": "verified"}}),
                      entry(2, "CommentAdded", {"comment": "=HYPERLINK(\"http://x\")"})])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["version", "time", "actor", "event", "command_id", "summary",
                             "details.comment", "details.verification.verdict"]
    assert rows[0]["details.verification.verdict"] == "verified" and rows[0]["details.comment"] == ""
    assert rows[1]["details.comment"].startswith("'=")
