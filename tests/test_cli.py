"""The `appeals` command line, run as a subprocess against the real stack: the Temporal dev server,
a worker process, the SQLite event store and an SMTP sink on loopback.

Each exit code is shown here: 0 done, 1 failed verification, 2 bad input (one line), 3 not found,
4 rejected by the workflow, 5 a service unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import mailbox
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from activities.directories import load_fund_directory
from tests.dev_stack import (
    ROOT,
    CuttableProxy,
    PauseActivity,
    Stack,
    appeals_async,
    fails,
    free_port,
    in_process_worker,
    ok,
)
from tests.factories import intake, verification
from tests.workflow_env import settle
from workflows.case import CaseWorkflow
from workflows.inputs import CaseStart

EXAMPLES = ROOT / "examples"
REFERENCE = re.compile(r"^UA-\d{4}-\d{4}$")


def appeals(stack: Stack, *args: str, user: str | None = "olga", stdin: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
    """`appeals ARGS` as `user`, signed in on their own machine (None: nobody signed in)."""
    return stack.appeals(*args, user=user, stdin=stdin, **env)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


# =================================================================================== a full case
RELATIVE = ("--given-by", "relative", "--relationship", "sister", "--channel", "phone")


async def test_a_full_case_through_the_command_line(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()
    ref = ok(appeals(stack, "case", "open", str(EXAMPLES / "intake.json"))).strip()
    assert REFERENCE.match(ref), ref
    # The number is the next free one: other tests on the shared dev server may hold lower ones.
    assert [c["reference"] for c in stack.store.list_cases()] == [ref]
    handle = stack.client.get_workflow_handle(ref)
    assert (await handle.describe()).workflow_type == "UrgentCaseTracks"

    status = as_json(appeals(stack, "case", "show", ref, "--json"))
    assert status["stage"] == "verification" and status["urgency"] == "high" and status["tracked"]
    assert status["represented"] == [True]  # the journalist is held incommunicado
    assert "stage verification" in ok(appeals(stack, "case", "show", ref))

    out = ok(appeals(stack, "case", "verify", ref, str(EXAMPLES / "verification.json")))
    assert out.startswith(f"{ref}: stage consent; pending: grant_or_refuse_consent")
    # Consent per action, with who gave it for each defender: she cannot consent personally.
    assert fails(appeals(stack, "case", "consent", ref, "rapporteur", "--grant"), 2).startswith(
        "--given-by: who consented? defender, relative, lawyer")
    assert fails(appeals(stack, "case", "consent", ref, "rapporteur", "--grant", "--given-by",
                         "defender", "--channel", "phone"), 2).startswith(
        "consents[0].given_by: defender 0 is disappeared or held incommunicado")
    assert fails(appeals(stack, "case", "consent", ref, "rapporteur", "--grant", "--given-by",
                         "relative", "--channel", "phone"), 2) == (
        "--relationship: is required when a relative consents (e.g. sister, their lawyer)")
    assert fails(appeals(stack, "case", "consent", ref, "rapporteur", "--grant", *RELATIVE,
                         "--given-at", "2026-11-03T09:30"), 2).startswith("--given-at: needs a time zone")
    ok(appeals(stack, "case", "consent", ref, "rapporteur", "--grant", *RELATIVE, "--naming",
               "initials_only", "--conditions", "Initials only <b>in any</b> public report."))
    # The detailed form: one record per defender from a file, each person's naming on its own.
    records = tmp_path / "consents.yaml"
    records.write_text("- defender: 0\n  given_by: lawyer\n  relationship: her lawyer\n"
                       "  channel: in_person\n  given_at: '2026-11-03T09:30:00+03:00'\n")
    assert fails(appeals(stack, "case", "consent", ref, "mfa", "--grant", "--consents", str(records),
                         "--channel", "phone"), 2) == "--channel: give it in the --consents file instead"
    assert fails(appeals(stack, "case", "consent", ref, "mfa", "--grant", "--publicity", "zero"),
                 2).startswith("--publicity: write N=NAMING")
    ok(appeals(stack, "case", "consent", ref, "mfa", "--grant", "--consents", str(records),
               "--naming", "full_names", "--publicity", "0=initials_only"))
    ok(appeals(stack, "case", "consent", ref, "emergency_fund", "--grant", *RELATIVE))
    status = as_json(appeals(stack, "case", "consent", ref, "eu_delegation", "--refuse", "--reason",
                             "The grantee fears publicity", "--json"))
    tracks = status["tracks"]
    assert tracks["eu_delegation"]["step"] == "ended" and tracks["eu_delegation"]["ended"] == "refused"
    assert tracks["rapporteur"]["step"] == tracks["mfa"]["step"] == "clearance"
    assert tracks["emergency_fund"]["step"] == "fund_choice"  # not held back by the clearances
    stored = stack.store.get(ref)
    assert stored.consent_givers("mfa") == [{
        "defender": 0, "given_by": "lawyer", "relationship": "her lawyer", "channel": "in_person",
        "given_at": "2026-11-03T09:30:00+03:00"}]
    assert [r["given_by"] for r in stored.consent_givers("rapporteur")] == ["relative"]
    assert stored.publicity_of(0) == "initials_only"

    # The emergency funds: suggested with why, excluded with why not (EU-backed: EU refused).
    advice = as_json(appeals(stack, "case", "funds", ref, "--json"))
    suggested = {s["fund_id"]: s for s in advice["suggested"]}
    excluded = {e["fund_id"]: e["reasons"] for e in advice["excluded"]}
    assert {"solidarity", "protection_grant"} <= set(suggested)
    assert "funds family support" in suggested["protection_grant"]["reasons"]
    assert "the grantee refused EU involvement" in excluded["eu_defenders_mechanism"]
    assert excluded["freedom_house_eap"] == ["the fund is closed"]
    table = ok(appeals(stack, "case", "funds", ref))
    assert "EUR 2,500 for family_support; track step fund_choice" in table
    listed = table.split("excluded:", 1)[1]
    assert "eu_defenders_mechanism" in listed and "the grantee refused EU involvement" in listed
    assert "Amara" not in table  # codes and reasons only
    # One fund per purpose, from the directory; the prepared text only once it is chosen.
    assert fails(appeals(stack, "case", "choose-funds", ref, "nosuch"), 2).startswith(
        "FUND: nosuch is not in the fund directory")
    assert "Only one fund may be chosen" in fails(
        appeals(stack, "case", "choose-funds", ref, "solidarity", "protection_grant"), 4)
    assert fails(appeals(stack, "case", "fund-application", ref, "protection_grant"), 4) == (
        f"Fund protection_grant is not chosen for {ref}; choose it first with "
        "`appeals case choose-funds`.")
    status = as_json(appeals(stack, "case", "choose-funds", ref, "protection_grant", "--reason",
                             "Covers family support", "--json"))
    assert status["tracks"]["emergency_fund"]["funds"] == {"protection_grant": "to_submit"}
    assert any(p["decision"] == "record_fund_submission" and p["fund"] == "protection_grant"
               for p in status["pending"])
    application = ok(appeals(stack, "case", "fund-application", ref, "protection_grant"))
    assert "Apply through: the fund's web form at https://" in application
    assert "EUR 2,500" in application and "family support" in application
    ok(appeals(stack, "case", "fund-submitted", ref, "protection_grant", "--note", "receipt 4711"))

    # The ministry liaison sees the case in their inbox; olga (a case officer) may not clear it.
    mine = as_json(appeals(stack, "case", "list", "--mine", "--json", user="lina"))
    assert [r["reference"] for r in mine] == [ref]
    assert fails(appeals(stack, "case", "clear", ref, "mfa", "--grant", user="olga"), 4) == (
        "Only a ministry liaison may clear or deny; nothing was recorded.")
    for action in ("rapporteur", "mfa"):
        ok(appeals(stack, "case", "clear", ref, action, "--grant", "--reason", "cleared", user="lina"))

    # The OHCHR letter is held until the grantee's contact person is known; the MFA brief goes.
    status = await settle(handle, lambda s: bool(s["held"]) and s["tracks"]["mfa"]["dispatch"] == "sent",
                          "held rapporteur")
    assert status["held"] == {"rapporteur": ["organisation.contact_name"]}
    shown = ok(appeals(stack, "case", "show", ref))
    assert "add_further_information rapporteur (case_officer) missing organisation.contact_name" in shown
    assert "held: missing organisation.contact_name" in shown and "funds: protection_grant submitted" in shown
    assert re.search(r"stage dispatch \(dispatch: 1, follow-up: 2, ended: 1\)", shown), shown
    ok(appeals(stack, "case", "inform", ref, "--text", "The lawyer filed for habeas corpus.",
               "--changes", str(EXAMPLES / "changes.json")))
    status = await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")

    ohchr = status["tracks"]["rapporteur"]["recipients"][0]
    ok(appeals(stack, "case", "respond", ref, "rapporteur", "--recipient", ohchr, "--summary",
               "OHCHR acknowledged receipt."))
    assert fails(appeals(stack, "case", "respond", ref, "mfa", "--recipient", "nobody@example.org",
                         "--summary", "x"), 4) == "recipient: is not one of the recipients of mfa"
    ok(appeals(stack, "case", "respond", ref, "mfa", "--summary", "The desk raised it with the embassy."))
    assert fails(appeals(stack, "case", "extend", ref, "--until", "2030-01-01T10:00:00Z", "--reason",
                         "x", user="hana"), 2).startswith("--action: the case is past its verification")
    later = (datetime.fromisoformat(status["tracks"]["mfa"]["deadline"]) + timedelta(days=3)).isoformat()
    out = ok(appeals(stack, "case", "extend", ref, "--action", "mfa", "--until", later, "--reason",
                     "Hearing moved.", user="hana"))
    assert "stage follow_up" in out
    # Further information to the recipients of chosen actions only; the fund took a web form.
    assert fails(appeals(stack, "case", "inform", ref, "--text", "x", "--send-to", "emergency_fund"),
                 2) == ("--send-to: emergency_fund has no earlier recipient who may be informed "
                        "(mfa, rapporteur)")
    ok(appeals(stack, "case", "inform", ref, "--send-to", "mfa", "--text", "She was released on bail."))
    ok(appeals(stack, "case", "checkin", ref, "--summary", "Safe at home; no reprisals."))
    out = ok(appeals(stack, "case", "close", ref, "--outcome", "resolved", "--summary", "Released."))
    assert out.strip() == f"{ref}: stage closed; pending: nothing"
    assert await handle.result() == "resolved"

    # A closed case can be read (from the store now) but not changed.
    closed = as_json(appeals(stack, "case", "show", ref, "--json"))
    assert closed["stage"] == "closed" and closed["tracks"]["mfa"]["ended"] == "closed"
    assert "closed" in fails(appeals(stack, "case", "checkin", ref, "--summary", "again"), 4)
    listed_cases = as_json(appeals(stack, "case", "list", "--stage", "closed", "--json"))
    assert [r["reference"] for r in listed_cases] == [ref]
    assert as_json(appeals(stack, "case", "list", "--stage", "consent", "--json")) == []

    # The sink received each appeal once (none for the refused EU delegation, none for the fund
    # that takes web forms), the held notice and the further information to the MFA only.
    kinds: dict[str, list[Message]] = {}
    for _, _, message in stack.sink.messages:
        kinds.setdefault(str(message["X-Appeal-Kind"]), []).append(message)
    assert sorted(str(m["X-Appeal-Action"]) for m in kinds["appeal"]) == ["mfa", "rapporteur"]
    assert len(kinds["dispatch-held"]) == 1
    assert [str(m["X-Appeal-Action"]) for m in kinds["further_information"]] == ["mfa"]

    # The audit trail: table, JSON, CSV, HTML; verified and cross-checked against Temporal.
    trail = stack.store.trail(ref)
    dispatched = {e.details["message_id"] for e in trail if e.event == "MessageDispatched"}
    assert dispatched == {str(m["Message-ID"]) for k in ("appeal", "further_information")
                          for m in kinds[k]}
    table = ok(appeals(stack, "audit", ref, user="aldo"))
    assert "ConsentGranted" in table and "action=rapporteur" in table and "outcome=resolved" in table
    assert "funds=protection_grant" in table and "fund=protection_grant" in table
    assert "Amara" not in table and "Plainclothes" not in table  # the summary holds codes only
    report = ok(appeals(stack, "audit", ref, "--verify"))
    assert report.splitlines()[-1] == "OK"
    assert "audit chain verified" in report and "agree (16 decisions" in report
    verified = as_json(appeals(stack, "audit", ref, "--verify", "--format", "json"))
    assert verified["ok"] and verified["history"]["decisions"] == 16

    entries = as_json(appeals(stack, "audit", ref, "--format", "json"))["entries"]
    assert [e["event"] for e in entries] == [e.event for e in trail]
    rows = list(csv.DictReader(io.StringIO(ok(appeals(stack, "audit", ref, "--format", "csv")))))
    assert [r["event"] for r in rows] == [e.event for e in trail]
    page = ok(appeals(stack, "audit", ref, "--format", "html"))
    assert "<b>" not in page and "&lt;b&gt;in any&lt;/b&gt;" in page  # escaped, never markup
    cells = _TableCells()
    cells.feed(page)
    assert cells.rows[0][:5] == ["version", "time (UTC)", "actor", "event", "summary"]
    assert [r[3] for r in cells.rows[1:]] == [e.event for e in trail]


# The event store's library and what only it needs: `case list` and `case show` of a running case
# read the session and the case index over SQLAlchemy alone (store.index) and ask the workflow.
EVENT_STORE_MODULES = ("eventsourcing", "eventsourcing_sqlalchemy", "sqlalchemy_utils", "store.app",
                       "store.cipher", "domain.case", "domain.tracked")


def imported_by(stack: Stack, *args: str) -> tuple[str, set[str]]:
    """Standard output of `appeals ARGS` (as olga) and every module it imported (-X importtime)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli.main", *args], cwd=ROOT,
                          env=stack.cli_env("olga"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:")}
    return done.stdout, modules


async def test_case_list_and_show_of_a_running_case_do_not_open_the_event_store(stack: Stack) -> None:
    stack.start_worker()
    ref = ok(appeals(stack, "case", "open", str(EXAMPLES / "intake.json"))).strip()
    for args in (["case", "list", "--json"], ["case", "show", ref, "--json"]):
        out, modules = imported_by(stack, *args)
        loaded = sorted(m for m in modules
                        if any(m == name or m.startswith(name + ".") for name in EVENT_STORE_MODULES))
        assert loaded == [], args
    listed, _ = imported_by(stack, "case", "list", "--json")
    assert [row["reference"] for row in json.loads(listed)] == [ref]
    shown, _ = imported_by(stack, "case", "show", ref, "--json")
    assert json.loads(shown)["stage"] == "verification"


async def test_case_funds_lists_excluded_funds_with_their_reasons(stack: Stack, tmp_path: Path) -> None:
    """Before the verification: the intake's refusal of the EU delegation excludes EU-backed funds,
    an unverified threat has no established link to the rights work, and every fund says why not."""
    stack.start_worker()
    data = json.loads((EXAMPLES / "intake.json").read_text())
    data.update(requested_actions=["mfa", "emergency_fund"], refused_actions=["eu_delegation"],
                eu_grant=None, fund_request={"amount_eur": 4000, "purpose": "legal_fees",
                                             "costs_already_incurred": True, "in_exile": False})
    path = tmp_path / "intake.json"
    path.write_text(json.dumps(data))
    ref = ok(appeals(stack, "case", "open", str(path))).strip()
    advice = as_json(appeals(stack, "case", "funds", ref, "--json"))
    assert advice["step"] == "consent" and advice["purpose"] == "legal_fees"
    excluded = {e["fund_id"]: e["reasons"] for e in advice["excluded"]}
    assert excluded["eu_defenders_mechanism"][0] == "the grantee refused EU involvement"
    assert "does not pay costs already incurred" in excluded["protection_grant"]
    assert "only for LGBTI defenders" in excluded["lgbti_defenders"]
    assert "needs a causal link between the danger and the person's rights work" in (
        excluded["solidarity"])
    assert advice["suggested"] == []
    assert set(excluded) == {f.id for f in load_fund_directory()}  # the whole directory, with why
    text = ok(appeals(stack, "case", "funds", ref))
    assert "suggested, best first: none" in text
    rows = text.split("excluded:", 1)[1].splitlines()
    assert any(r.split()[0] == "protection_grant" and "does not pay costs already incurred" in r
               for r in rows if r.strip())
    assert fails(appeals(stack, "case", "funds", "UA-2026-9999"), 3) == "case UA-2026-9999 not found"


class _TableCells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


async def test_a_case_opened_before_tracks_takes_the_same_commands(stack: Stack) -> None:
    """A case of the older workflow type (UrgentCase) keeps working: the same decisions by name,
    one naming choice for everyone, and the per-action options refused rather than ignored."""
    stack.start_worker()
    ref = "UA-2026-OLD1"
    handle = await stack.client.start_workflow(CaseWorkflow.run, CaseStart(ref, intake(), "olga"),
                                               id=ref, task_queue=stack.settings.task_queue)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")
    path = stack.home / "verification.json"
    path.write_text(json.dumps(verification()))
    ok(appeals(stack, "case", "verify", ref, str(path)))
    assert fails(appeals(stack, "case", "consent", ref, "mfa", "--grant", *RELATIVE), 2) == (
        "--given-by: this case was opened before per-person consent records; use --naming for "
        "everyone")
    for action in ("rapporteur", "mfa", "eu_delegation"):
        ok(appeals(stack, "case", "consent", ref, action, "--grant", "--naming", "initials_only"))
    for action in ("rapporteur", "mfa", "eu_delegation"):
        ok(appeals(stack, "case", "clear", ref, action, "--grant", user="lina"))
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
    shown = ok(appeals(stack, "case", "show", ref))
    assert "stage follow_up" in shown and "actions:" in shown and "tracks:" not in shown
    assert fails(appeals(stack, "case", "extend", ref, "--action", "mfa", "--until",
                         "2030-01-01T10:00:00Z", "--reason", "x", user="hana"), 2).startswith(
        "--action: this case was opened before per-action tracks")
    assert fails(appeals(stack, "case", "inform", ref, "--text", "x", "--send-to", "mfa"), 2).startswith(
        "--send-to: this case was opened before per-action tracks")
    assert fails(appeals(stack, "case", "choose-funds", ref, "solidarity"), 4) == (
        "This case was opened before per-action tracks; it does not take choose_funds.")
    ok(appeals(stack, "case", "inform", ref, "--send", "--text", "She was released on bail."))
    assert fails(appeals(stack, "case", "close", ref, "--outcome", "resolved"), 2) == (
        "--summary: is required: say in a sentence how the case ended")
    ok(appeals(stack, "case", "close", ref, "--outcome", "resolved", "--summary", "Released."))
    assert await handle.result() == "resolved"
    assert ok(appeals(stack, "audit", ref, "--verify")).splitlines()[-1] == "OK"


# ==================================================================================== exit codes
async def test_each_exit_code(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()
    # 0: opened from YAML, under the reference the file gives; the same command again (a retry)
    # answers with the same case and opens nothing new.
    data = (EXAMPLES / "intake.yaml").read_text() + "reference: UA-2026-CLI7\n"
    (tmp_path / "case.yaml").write_text(data)
    assert ok(appeals(stack, "case", "open", str(tmp_path / "case.yaml"))).strip() == "UA-2026-CLI7"
    again = appeals(stack, "case", "open", str(tmp_path / "case.yaml"))
    assert ok(again).strip() == "UA-2026-CLI7" and "nothing new was opened" in again.stderr
    # 2: bad input, nothing started: another request for the same reference, a person named
    # instead of signed in, a bad option value.
    assert fails(appeals(stack, "case", "open", str(tmp_path / "case.yaml"), "--request-id", "r2"),
                 2) == "reference: a case UA-2026-CLI7 already exists"
    assert fails(appeals(stack, "--as", "lina", "case", "list"), 2).startswith(
        "--as: is no longer accepted: every command acts as the person signed in")
    assert fails(appeals(stack, "case", "list", "--mine", "--as", "ghost"), 2).startswith("--as: ")
    assert fails(appeals(stack, "case", "list", APPEALS_USER="lina"), 2).startswith(
        "APPEALS_USER: is no longer read")
    # 6: nobody signed in.
    assert fails(appeals(stack, "case", "consent", "UA-2026-CLI7", "mfa", "--grant", user=None),
                 6).startswith("Not signed in: sign in first with `appeals login USERNAME`")
    assert as_json(appeals(stack, "case", "list", "--mine", "--json", user="lina")) == []
    assert fails(appeals(stack, "case", "extend", "UA-2026-CLI7", "--until", "2030-01-01T10:00",
                         "--reason", "x", user="hana"), 2).startswith("--until: needs a time zone")
    assert fails(appeals(stack, "case", "close", "UA-2026-CLI7", "--outcome", "won"), 2).startswith(
        "--outcome: must be one of resolved, ")
    # 3: no such case.
    assert fails(appeals(stack, "case", "show", "UA-2026-9999"), 3) == "case UA-2026-9999 not found"
    assert fails(appeals(stack, "case", "checkin", "UA-2026-9999", "--summary", "x"), 3) == (
        "case UA-2026-9999 not found")
    assert fails(appeals(stack, "audit", "UA-2026-9999"), 3) == "case UA-2026-9999 not found"
    # 4: rejected by the workflow, with its message, or not allowed for the person; nothing
    # recorded.
    before = len(stack.store.trail("UA-2026-CLI7"))
    assert fails(appeals(stack, "case", "clear", "UA-2026-CLI7", "mfa", "--grant", user="lina"), 4) == (
        "This case is not verified yet; a clearance decision can only be recorded after the "
        "verification.")
    assert fails(appeals(stack, "case", "checkin", "UA-2026-CLI7", "--summary", "x", user="lina"), 4) == (
        "Only a case officer may record a check-in with the defenders; nothing was recorded.")
    assert len(stack.store.trail("UA-2026-CLI7")) == before
    # 5: Temporal (or the event store) not reachable.
    port = free_port()
    down = {"APPEALS_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"}
    assert fails(appeals(stack, "case", "show", "UA-2026-CLI7", **down), 5) == (
        f"Temporal server not reachable at 127.0.0.1:{port} — is `make run` running?")
    assert fails(appeals(stack, "case", "open", str(EXAMPLES / "intake.json"), **down), 5) == (
        f"Temporal server not reachable at 127.0.0.1:{port} — is `make run` running?")
    no_db = {"APPEALS_DATABASE_URL": f"postgresql+psycopg://appeals:s3cret-pw@127.0.0.1:{port}/appeals"}
    line = fails(appeals(stack, "case", "list", **no_db), 5)
    assert line == f"event store not reachable at postgresql+psycopg://appeals:***@127.0.0.1:{port}/appeals"
    # 1: a verification that finds a disagreement (a decision Temporal never made).
    stack.store.execute("UA-2026-CLI7", "record_verification",
                        {"verification": json.loads((EXAMPLES / "verification.json").read_text()),
                         "at": datetime.now(UTC)},
                        "olga", "UA-2026-CLI7/update/forged-update-id")
    result = appeals(stack, "audit", "UA-2026-CLI7", "--verify")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "disagree" in result.stdout and "forged-update-id" in result.stdout
    assert result.stdout.splitlines()[-1] == "FAILED"


# ===================================================================================== bad files
def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _intake(**changes: Any) -> str:
    data = json.loads((EXAMPLES / "intake.json").read_text())
    data.update(changes)
    return json.dumps(data)


async def test_bad_files_give_exit_2_and_one_clear_line(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: 50 MB that take no disk space
    without_country = json.loads(_intake())
    del without_country["country"]
    cases = {
        str(big): "FILE: larger than 1 MB",
        _write(tmp_path / "broken.json", '{\n  "country": "KE",\n  "urgency": high\n}'):
            "FILE: not valid JSON (line 3)",
        _write(tmp_path / "broken.yaml", "country: KE\nurgency: [high\n"): "FILE: not valid YAML (line 3)",
        _write(tmp_path / "list.json", "[1, 2]"): "FILE: must hold an object of named fields",
        _write(tmp_path / "intake.txt", "{}"): "FILE: must be a .json, .yaml or .yml file",
        str(tmp_path / "missing.json"): f"FILE: no such file: {tmp_path / 'missing.json'}",
        _write(tmp_path / "no_country.json", json.dumps(without_country)):
            "country: must be an ISO 3166-1 alpha-2 country code, e.g. KE",
        _write(tmp_path / "no_defenders.json", _intake(defenders=[])): "defenders: needs at least one entry",
        _write(tmp_path / "action.json", _intake(requested_actions=["rapporteur", "press_release"])):
            "requested_actions[1]: must be one of: rapporteur, mfa, eu_delegation, emergency_fund",
        _write(tmp_path / "future.json", _intake(incident={"date": "2999-01-01", "place": "x",
                                                            "description": "y"})):
            "incident.date: is in the future",
        _write(tmp_path / "ref.json", _intake(reference="UA 2026 / 1")):
            "reference: must look like UA-2026-0001 (letters, digits and dashes)",
    }
    for path, expected in cases.items():
        assert fails(appeals(stack, "case", "open", path), 2) == expected, path
    assert stack.store.list_cases() == []  # nothing was started

    assert fails(appeals(stack, "case", "verify", "UA-2026-0001", str(big)), 2) == "FILE: larger than 1 MB"
    assert fails(appeals(stack, "case", "verify", "UA-2026-0001",
                         _write(tmp_path / "v.json", '{"probability": 9}')), 2) == (
        "threat_questions: must be an object with named fields")
    assert fails(appeals(stack, "case", "inform", "UA-2026-0001", "--text", "x", "--changes",
                         _write(tmp_path / "c.json", '{"country": "UG"}')), 2).startswith(
        "--changes: country cannot be changed after intake")
    # Unknown action names and missing options, as one line too (not Click's usage block).
    assert fails(appeals(stack, "case", "consent", "UA-2026-0001", "press", "--grant"), 2) == (
        "ACTION: must be one of rapporteur, mfa, eu_delegation, emergency_fund")
    assert fails(appeals(stack, "case", "respond", "UA-2026-0001", "mfa"), 2) == "--summary: is required"
    assert fails(appeals(stack, "case", "consent", "UA-2026-0001"), 2) == "ACTION: is required"
    assert fails(appeals(stack, "case", "list", "--colour"), 2) == "--colour: no such option"
    assert fails(appeals(stack, "audit", "UA-2026-0001", "--format", "pdf"), 2) == (
        "--format: must be one of table, json, csv, html")
    # Re-assessing the risk: all three options, in range.
    assert fails(appeals(stack, "case", "reassess", "UA-2026-0001"), 2) == (
        "--probability: is required (with --impact and --risk-reason)")
    assert fails(appeals(stack, "case", "reassess", "UA-2026-0001", "--probability", "6",
                         "--impact", "2", "--risk-reason", "x"), 2) == (
        "--probability: must be between 1 and 5")
    assert fails(appeals(stack, "case", "checkin", "UA-2026-0001", "--summary", "ok",
                         "--probability", "2"), 2) == (
        "--impact: is required to re-assess the risk (a whole number from 1 to 5)")
    assert fails(appeals(stack, "case", "confirm-public", "UA-2026-0001"), 2) == "--reason: is required"


# ======================================================================================== outbox
def _message(to: str, subject: str, body: str, day: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "urgent-appeals@secretariat.example.org"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2026, 11, day, 9, 0, tzinfo=UTC))
    message["Message-ID"] = make_msgid(domain="secretariat.example.org")
    message.set_content(body)
    message.add_alternative(f"<p>{body}</p>", subtype="html")
    return message


async def test_outbox_lists_and_shows_the_sinks_messages(stack: Stack) -> None:
    assert ok(appeals(stack, "outbox", "list")).strip() == "no messages"
    box = mailbox.Maildir(str(stack.settings.var_dir / "outbox"), create=True)
    second = _message("desk@mfa.example.org", "Urgent: case UA-2026-0002", "Second body.", 5)
    first = _message("defenders@ohchr.example.org", "Urgent appeal – UA-2026-0001", "First body.", 4)
    key2, key1 = box.add(second), box.add(first)

    listed = as_json(appeals(stack, "outbox", "list", "--json"))
    assert [m["id"] for m in listed] == [key1, key2]  # oldest first
    assert listed[0]["to"] == "defenders@ohchr.example.org"
    assert listed[0]["subject"] == "Urgent appeal – UA-2026-0001"
    assert listed[0]["message_id"] == str(first["Message-ID"])
    table = ok(appeals(stack, "outbox", "list"))
    assert key1 in table and "desk@mfa.example.org" in table

    shown = ok(appeals(stack, "outbox", "show", key1))
    assert "Subject: Urgent appeal – UA-2026-0001" in shown
    assert shown.rstrip().endswith("First body.") and "<p>" not in shown
    by_id = as_json(appeals(stack, "outbox", "show", str(second["Message-ID"]), "--json"))
    assert by_id["id"] == key2 and by_id["text"].strip() == "Second body."
    assert fails(appeals(stack, "outbox", "show", "nope"), 3) == "ID: no message nope in the outbox"


# ========================================================================================= users
async def test_users_add_list_and_set_roles(stack: Stack) -> None:
    out = ok(appeals(stack, "users", "add", "nadia", "--name", "Nadia Example", "--email",
                     "nadia@secretariat.example.org", "--role", "case_officer", "--role", "head",
                     user="hana"))
    assert out.strip() == "added nadia (case_officer, head)"
    assert stack.store.user_roles("nadia") == {"case_officer", "head"}
    users = {u["username"]: u for u in as_json(appeals(stack, "users", "list", "--json"))}
    assert users["nadia"]["roles"] == ["case_officer", "head"] and "lina" in users
    assert "Nadia Example" in ok(appeals(stack, "users", "list"))

    assert ok(appeals(stack, "users", "set-roles", "nadia", "auditor", user="hana")).strip() == (
        "nadia: auditor")
    assert stack.store.user_roles("nadia") == {"auditor"}
    assert fails(appeals(stack, "users", "add", "nadia", "--name", "N", "--email", "n@example.org",
                         "--role", "head", user="hana"), 4) == "User nadia already exists."
    assert fails(appeals(stack, "users", "add", "ivo", "--name", "Ivo", "--email", "not an address",
                         "--role", "head", user="hana"), 2) == (
        "--email: expected one plain address (user@domain)")
    assert fails(appeals(stack, "users", "add", "ivo", "--name", "Ivo", "--email", "ivo@example.org",
                         "--role", "boss", user="hana"), 2) == (
        "--role: must be one of case_officer, ministry_liaison, head, auditor")
    assert fails(appeals(stack, "users", "set-roles", "ghost", "head", user="hana"), 3) == (
        "No user ghost.")
    # The users log says who did each, and verifies.
    log = as_json(appeals(stack, "users", "log", "--json", user="aldo"))
    assert [(e["actor"], e["event"]) for e in log if e["details"].get("username") == "nadia"] == [
        ("hana", "UserAdded"), ("hana", "RolesChanged")]
    assert ok(appeals(stack, "users", "verify", user="aldo")).splitlines()[-1] == "OK"


async def test_users_passwd_sets_an_argon2_hash_and_refuses_short_passwords(stack: Stack) -> None:
    def passwd(password: str) -> subprocess.CompletedProcess[str]:
        return appeals(stack, "users", "passwd", "omar", "--password-stdin", user="hana",
                       stdin=password + "\n")

    assert fails(passwd("short"), 2).startswith("password: A password needs at least 12")
    assert stack.store.password_hash("omar") is None
    assert "password set" in ok(passwd("correct horse battery staple"))
    stored = stack.store.password_hash("omar")
    assert stored and stored.startswith("$argon2") and "horse" not in stored


@pytest.mark.parametrize("args", [["--help"], ["case", "--help"], ["audit", "--help"]])
def test_help_works_without_any_service(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "Usage: appeals" in result.stdout


def test_a_command_on_a_store_without_its_tables_creates_them_and_asks_for_a_sign_in(
        tmp_path: Path) -> None:
    """The session check reads the index without the event store; on a SQLite file no store has
    set up yet, the event store is opened (it creates its tables) and the command says why it
    cannot go on, as before."""
    from types import SimpleNamespace

    from cli.config import Session, save_session

    database = f"sqlite:///{tmp_path / 'events.sqlite'}"
    env = {"PATH": os.environ["PATH"], "APPEALS_VAR_DIR": str(tmp_path / "var"),
           "APPEALS_CONFIG_DIR": str(tmp_path / "config"), "APPEALS_DATABASE_URL": database}

    def listed() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "case", "list"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    assert fails(listed(), 6).startswith("Not signed in: sign in first")
    save_session(SimpleNamespace(config_dir=tmp_path / "config", database_url=database),
                 Session("olga", "a-token-this-store-never-gave", datetime.now(UTC)))
    (tmp_path / "events.sqlite").unlink()  # a store that is not set up yet, again
    assert fails(listed(), 6).startswith("Your session has ended")
    with contextlib.closing(sqlite3.connect(tmp_path / "events.sqlite")) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"appeals_sessions", "appeals_case_index", "appeals_events"} <= tables


# ==================================================================== safe retries, clean output
def _mfa_intake(tmp_path: Path) -> str:
    data = json.loads((EXAMPLES / "intake.json").read_text())
    data.update(requested_actions=["mfa"], refused_actions=[], eu_grant=None)
    path = tmp_path / "mfa-intake.json"
    path.write_text(json.dumps(data))
    return str(path)


def _events(stack: Stack, ref: str, name: str) -> int:
    return sum(1 for e in stack.store.trail(ref) if e.event == name)


async def _cut_after_recording(stack: Stack, proxy: CuttableProxy, pause: PauseActivity,
                               env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command through the proxy; once the worker has recorded (the activity done, its
    answer held), the connection is cut; the command's outcome is unknown to it."""
    pause.arm()
    running = asyncio.ensure_future(appeals_async(env, *args))
    await asyncio.wait_for(pause.reached.wait(), 60)
    proxy.cut()
    pause.release.set()
    result = await running
    proxy.restore()
    return result


def _unknown_outcome(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 5, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "it may have taken effect; repeating the same command is safe" in result.stderr


async def test_commands_cut_off_after_the_server_recorded_them_are_repeated_safely(
        stack: Stack, tmp_path: Path) -> None:
    """A case opening, a decision and a further-information send, each cut off from Temporal
    after the worker recorded it: the command says it may have taken effect; repeating it as is
    gives one case, one event and one message."""
    stack.cli_env("olga"), stack.cli_env("lina")  # signed in before the worker runs in-process
    proxy = await CuttableProxy(stack.settings.temporal_address).start()
    through = {"APPEALS_TEMPORAL_ADDRESS": proxy.address}
    olga, lina = stack.cli_env("olga", **through), stack.cli_env("lina", **through)
    opening, deciding = PauseActivity("open_tracked_case"), PauseActivity("apply_command")
    sending = PauseActivity("send_further_information")
    intake_file = _mfa_intake(tmp_path)
    try:
        async with in_process_worker(stack, opening.interceptor(), deciding.interceptor(),
                                     sending.interceptor()):
            # The opening: recorded in the store, then the connection is lost.
            _unknown_outcome(await _cut_after_recording(stack, proxy, opening, olga,
                                                        "case", "open", intake_file))
            assert len(stack.store.list_cases()) == 1
            again = await appeals_async(olga, "case", "open", intake_file)
            ref = ok(again).strip()
            assert REFERENCE.match(ref) and "nothing new was opened" in again.stderr
            assert [c["reference"] for c in stack.store.list_cases()] == [ref]
            assert _events(stack, ref, "Opened") == 1

            ok(await appeals_async(olga, "case", "verify", ref, str(EXAMPLES / "verification.json")))
            # A decision: recorded, then the connection is lost; the same command again
            # records nothing new and answers with the first result.
            consent = ("case", "consent", ref, "mfa", "--grant", *RELATIVE)
            _unknown_outcome(await _cut_after_recording(stack, proxy, deciding, olga, *consent))
            assert _events(stack, ref, "ConsentGranted") == 1
            out = ok(await appeals_async(olga, *consent))
            assert out.startswith(f"{ref}: stage clearance")
            assert _events(stack, ref, "ConsentGranted") == 1

            ok(await appeals_async(lina, "case", "clear", ref, "mfa", "--grant"))
            handle = stack.plain.get_workflow_handle(ref)
            await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up")
            # Further information sent to the MFA desk: sent and recorded, then the connection
            # is lost; repeated, nothing is recorded or sent again.
            inform = ("case", "inform", ref, "--send-to", "mfa", "--text", "Released on bail.")
            _unknown_outcome(await _cut_after_recording(stack, proxy, sending, olga, *inform))
            ok(await appeals_async(olga, *inform))
            await asyncio.sleep(1)  # anything sent twice would have arrived by now
    finally:
        await proxy.stop()
    assert _events(stack, ref, "FurtherInformationAdded") == 1
    further = [m for _, _, m in stack.sink.messages if m["X-Appeal-Kind"] == "further_information"]
    assert len(further) == 1
    assert ok(appeals(stack, "audit", ref, "--verify")).splitlines()[-1] == "OK"


async def test_json_output_parses_while_the_sdk_logs_retries(stack: Stack, tmp_path: Path) -> None:
    """Temporal goes away for a few seconds while `case open --json` waits for the case: the SDK
    retries and says so, on standard error; standard output is the JSON document alone."""
    stack.cli_env("olga")
    proxy = await CuttableProxy(stack.settings.temporal_address).start()
    env = stack.cli_env("olga", APPEALS_TEMPORAL_ADDRESS=proxy.address)
    opening = PauseActivity("open_tracked_case", after=False)
    try:
        async with in_process_worker(stack, opening.interceptor()):
            opening.arm()
            running = asyncio.ensure_future(appeals_async(env, "case", "open", _mfa_intake(tmp_path),
                                                          "--json"))
            await asyncio.wait_for(opening.reached.wait(), 60)  # the CLI now polls the status
            proxy.cut()
            # Long enough for the SDK to retry (and say so), well inside its retry budget
            # (about ten retries over some ten seconds) even on a loaded machine.
            await asyncio.sleep(2.5)
            proxy.restore()
            opening.release.set()
            result = await running
    finally:
        await proxy.stop()
    status = json.loads(ok(result))
    assert status["stage"] == "verification" and REFERENCE.match(status["reference"])
    assert "retried" in result.stderr and "WARN" in result.stderr, result.stderr
    assert "WARN" not in result.stdout


async def test_a_reference_captured_from_case_open_is_the_reference_alone(stack: Stack) -> None:
    stack.start_worker()
    env = {**stack.cli_env("olga"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = f'REF=$({sys.executable} -m cli.main case open examples/intake.json); echo "[$REF]"'
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\[UA-\d{4}-\d{4}\]\n", done.stdout), done.stdout


async def test_misspelt_fields_in_intake_and_decision_files_are_refused_by_name(
        stack: Stack, tmp_path: Path) -> None:
    data = json.loads((EXAMPLES / "intake.json").read_text())
    data["organisation"]["contact_nmae"] = data["organisation"].pop("contact_email")
    path = tmp_path / "intake.json"
    path.write_text(json.dumps(data))
    assert fails(appeals(stack, "case", "open", str(path)), 2) == (
        "organisation.contact_nmae: is not a known field")
    data = json.loads((EXAMPLES / "intake.json").read_text())
    data["urgncy"] = data.pop("urgency")
    path.write_text(json.dumps(data))
    assert fails(appeals(stack, "case", "open", str(path)), 2) == "urgncy: is not a known field"
    assert stack.store.list_cases() == []
    verification = json.loads((EXAMPLES / "verification.json").read_text())
    verification["threat_questions"]["fcats"] = verification["threat_questions"].pop("facts")
    path = tmp_path / "verification.json"
    path.write_text(json.dumps(verification))
    assert fails(appeals(stack, "case", "verify", "UA-2026-0001", str(path)), 2) == (
        "threat_questions.fcats: is not a known field")
    changes = tmp_path / "changes.json"
    changes.write_text(json.dumps({"organisation": {"contact_nmae": "Wanjiru Example"}}))
    assert fails(appeals(stack, "case", "inform", "UA-2026-0001", "--text", "x", "--changes",
                         str(changes)), 2) == "organisation.contact_nmae: is not a known field"
    # Nobody decides in another's name by writing it into a file either.
    verification = json.loads((EXAMPLES / "verification.json").read_text())
    path.write_text(json.dumps({**verification, "actor": "lina"}))
    assert fails(appeals(stack, "case", "verify", "UA-2026-0001", str(path)), 2) == (
        "actor: is not a known field")


async def test_the_loser_of_a_race_is_told_what_was_recorded_and_by_whom(stack: Stack) -> None:
    stack.start_worker()
    ref = ok(appeals(stack, "case", "open", str(EXAMPLES / "intake.json"))).strip()
    ok(appeals(stack, "case", "verify", ref, str(EXAMPLES / "verification.json")))
    commands = {"olga": ("case", "consent", ref, "mfa", "--grant", *RELATIVE),
                "omar": ("case", "consent", ref, "mfa", "--refuse", "--reason", "Too risky")}
    envs = {user: stack.cli_env(user) for user in commands}
    procs = {user: subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT,
                                    env=envs[user], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for user, args in commands.items()}
    done = {user: (proc.wait(120), proc.communicate()) for user, proc in procs.items()}
    winners = [user for user, (code, _) in done.items() if code == 0]
    losers = [user for user, (code, _) in done.items() if code == 4]
    assert len(winners) == 1 and len(losers) == 1, done
    outcome = "granted" if winners == ["olga"] else "refused"
    said = done[losers[0]][1][1].strip()
    assert re.fullmatch(rf"Consent for mfa was already recorded by {winners[0]} at "
                        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d UTC \({outcome}\); nothing new was "
                        r"recorded\.", said), said
    decided = [e for e in stack.store.trail(ref) if e.event in ("ConsentGranted", "ConsentRefused")]
    assert [e.actor for e in decided] == winners


async def test_case_claim_assign_and_the_queue_filters(stack: Stack) -> None:
    """`appeals case claim` / `case assign` through the desk (events on the case), and `case list`
    with the queue's filters; no workflow needed: the cases are put straight in the store."""
    from tests.factories import T0, open_args

    a, b = "UA-2026-0301", "UA-2026-0302"
    stack.store.open_case(**open_args(a, actions=["rapporteur"]), tracked=True)
    stack.store.open_case(**open_args(b, actions=["rapporteur"], country="UG"), tracked=True)
    stack.store.execute(b, "close", {"outcome": "resolved", "summary": "", "at": T0}, "olga", "cz")
    assert ok(appeals(stack, "case", "claim", a, user="omar")).strip() == f"{a}: held by omar"
    assert fails(appeals(stack, "case", "claim", b, user="omar"), 4).startswith("This case is closed")
    assert fails(appeals(stack, "case", "claim", a, user="lina"), 4) == (
        "Only a case officer may hold a case; nothing was recorded.")
    assert fails(appeals(stack, "case", "assign", a, "lina", user="hana"), 2) == (
        "case officer: lina is not an active case officer")
    assert as_json(appeals(stack, "case", "assign", a, "olga", "--json", user="hana"))[
        "assignee"] == "olga"
    held = as_json(appeals(stack, "case", "list", "--held", "--state", "open", "--json",
                           user="olga"))
    assert [r["reference"] for r in held] == [a]
    assert held[0]["threat_types"] == ["arbitrary_arrest_or_detention", "judicial_harassment"]
    listed = as_json(appeals(stack, "case", "list", "--search", "ug", "--state", "closed",
                             "--json", user="olga"))
    assert [r["reference"] for r in listed] == [b]
    assert fails(appeals(stack, "case", "list", "--threat", "rudeness", user="olga"), 2).startswith(
        "--threat: ")
    assert [e.event for e in stack.store.trail(a)][-2:] == ["CaseClaimed", "CaseReassigned"]
    # Internal comments: staff of the case's roles, closed cases too; never an auditor, never empty.
    assert ok(appeals(stack, "case", "comment", b, "--text", "Lawyer confirms the release.",
                      user="lina")).strip() == f"{b}: comment added"
    [note] = [e for e in stack.store.trail(b) if e.event == "CommentAdded"]
    assert (note.actor, note.details["comment"]) == ("lina", "Lawyer confirms the release.")
    assert fails(appeals(stack, "case", "comment", a, "--text", "x", user="aldo"), 4).startswith(
        "Only a case officer, a ministry liaison or a head may comment")
    assert fails(appeals(stack, "case", "comment", a, "--text", " ", user="olga"), 2) == (
        "--text: is required")
    assert fails(appeals(stack, "case", "comment", a, "--text", "y" * 5001, user="olga"), 2) == (
        "comment: is too long (at most 5000 characters)")
    assert [e.event for e in stack.store.trail(a)][-1] == "CaseReassigned"
