"""The staff web interface over HTTP (httpx against the ASGI app) with the real dev server and worker.

Access rules are checked twice: the web refuses what a role may not do (403, nothing sent to the
workflow), and the workflow refuses what the rules forbid at this stage (its message on the form).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from temporalio.client import Client

from desk.errors import (
    CaseNotFound,
    DeskError,
    InvalidRequest,
    NotAllowed,
    Rejected,
    Unreachable,
)
from desk.redaction import REDACTED, hidden_count, redact
from domain.errors import InvalidInput
from store.app import CaseStore, sqlite_url
from tests.dev_stack import CuttableProxy, PauseActivity, Stack, in_process_worker
from tests.factories import DEFENDER_NAME, T0, intake, open_args, verification
from tests.workflow_env import USERS, settle
from web import build_app, enable_totp, set_password
from web.app import desk_failure
from web.auth import GENERIC_REFUSAL, ThrottlePolicy
from worker.main import data_converter
from workflows.case import CaseWorkflow
from workflows.inputs import CaseStart, TracksStart
from workflows.tracks import TrackedCaseWorkflow as WF

PASSWORD = "correct horse battery staple"
SESSION_KEY = "test-session-key-0123456789abcdef0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
UPDATE_ID = re.compile(r'name="update_id" value="([0-9a-f]{32})"')
REQUEST_ID = re.compile(r'name="request_id" value="([0-9a-f]{32})"')
# Every page but sign-in, with a reference that need not exist: the session is checked first.
PAGES = ["/", "/cases/new", "/cases/UA-2026-0001", "/cases/UA-2026-0001/audit",
         "/cases/UA-2026-0001/audit/print", "/cases/UA-2026-0001/audit.csv",
         "/cases/UA-2026-0001/audit.json", "/audit", "/outbox", "/outbox/some-key",
         "/cases/UA-2026-0001/holder"]
POSTS = ["/sign-out", "/cases/new", "/cases/UA-2026-0001/decide/verification",
         "/cases/UA-2026-0001/decide/clearance", "/cases/UA-2026-0001/claim",
         "/cases/UA-2026-0001/assign"]


@dataclass
class Clock:
    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class BrowserClient(httpx.AsyncClient):
    """A client that, as a browser does, follows the redirect a refused form (or a preview)
    answers with (post/redirect/get to `...?form=<token>`): its POSTs return the page shown
    then, with the status code kept for it, and the redirect in `history`. Tests of the redirect
    itself look at `history[0]`."""

    async def post(self, url: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        response = await super().post(url, **kwargs)
        location = response.headers.get("location", "")
        if response.status_code == 303 and "?form=" in location:
            page = await self.get(location.split("#", 1)[0])
            page.history = [response]
            return page
        return response


@dataclass
class Web:
    stack: Stack
    app: Any
    clock: Clock
    outbox: Path

    def client(self) -> httpx.AsyncClient:
        return BrowserClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")

    @contextlib.asynccontextmanager
    async def signed_in(self, username: str, code: str = "") -> AsyncIterator[httpx.AsyncClient]:
        async with self.client() as client:
            response = await sign_in(client, username, PASSWORD, code)
            assert response.status_code == 303, response.text
            yield client


def set_passwords(stack: Stack) -> None:
    for username, _ in USERS:
        set_password(stack.store, username, PASSWORD)


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, username: str, password: str, code: str = "") -> httpx.Response:
    page = await client.get("/sign-in")
    return await client.post("/sign-in", data={"csrf_token": csrf_of(page.text), "username": username,
                                               "password": password, "code": code})


async def post_form(client: httpx.AsyncClient, page_url: str, action: str, data: dict[str, Any],
                    form_id: str | None = None) -> httpx.Response:
    """POST a form as the browser would: with the CSRF token (and the update id or request id)
    of the page."""
    page = await client.get(page_url)
    assert page.status_code == 200, page.text
    html = page.text
    if form_id is not None:
        start = html.find(f'id="{form_id}"')
        assert start >= 0, f"no form {form_id} on the page"
        html = html[start:]
    fields = {"csrf_token": csrf_of(page.text), **data}
    if (m := UPDATE_ID.search(html)) is not None:
        fields.setdefault("update_id", m.group(1))
    if (m := REQUEST_ID.search(html)) is not None:
        fields.setdefault("request_id", m.group(1))
    return await client.post(action, data=fields)


def verification_form() -> dict[str, str]:
    v = verification()
    data = {f"threat_questions.{k}": q for k, q in v["threat_questions"].items()}
    data.update({k: str(v[k]) for k in ("vulnerabilities", "capacities", "probability", "impact", "verdict",
                                        "verifying_source", "do_no_harm")})
    data["public_action_advised"] = "yes" if v["public_action_advised"] else "no"
    return data


@pytest.fixture
async def web(stack: Stack, tmp_path: Path) -> AsyncIterator[Web]:
    set_passwords(stack)
    clock = Clock()
    outbox = tmp_path / "outbox"
    app = build_app(stack.settings, stack.plain, stack.store, session_key=SESSION_KEY, outbox=outbox,
                    clock=clock, throttle=ThrottlePolicy(per_pair="5 per 15 minutes"))
    yield Web(stack, app, clock, outbox)


def consent_form(action: str, answer: str = "grant", given_by: str = "defender", relationship: str = "",
                 channel: str = "phone", naming: str = "initials_only") -> dict[str, str]:
    """The consent form for one action, with one consent record for the (one) defender."""
    return {"action": action, "answer": answer, "text": "", "consents[0].given_by": given_by,
            "consents[0].relationship": relationship, "consents[0].channel": channel,
            "consents[0].given_at": (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "publicity.0": naming}


async def open_case(w: Web, **changes: Any) -> str:
    """A case at the verification stage, opened through the workflow as the form does."""
    ref = f"UA-2026-W{uuid.uuid4().hex[:6].upper()}"
    handle = await w.stack.client.start_workflow(
        WF.run, TracksStart(ref, intake(**changes), "olga"), id=ref,
        task_queue=w.stack.settings.task_queue)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")
    return ref


def events(w: Web, ref: str) -> list[str]:
    return [e.event for e in w.stack.store.trail(ref)]


# ------------------------------------------------------------------------------- access rules
async def test_every_page_but_sign_in_needs_a_session(web: Web) -> None:
    async with web.client() as client:
        page = await client.get("/sign-in")
        assert page.status_code == 200 and "Sign in" in page.text
        for url in PAGES:
            response = await client.get(url)
            assert response.status_code == 303, url
            assert response.headers["location"] == "/sign-in", url
        for url in POSTS:
            response = await client.post(url, data={"csrf_token": csrf_of(page.text)})
            assert response.status_code == 303 and response.headers["location"] == "/sign-in", url


async def test_security_headers_and_cookie_flags(web: Web) -> None:
    async with web.client() as client:
        for url in ("/sign-in", "/static/app.css"):
            response = await client.get(url)
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["x-content-type-options"] == "nosniff"
        page = await client.get("/sign-in")
        assert "<script" not in page.text and " style=" not in page.text  # nothing inline for the CSP
        assert page.headers["cache-control"] == "no-store"
        response = await sign_in(client, "olga", PASSWORD)
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    production = web.stack.settings.model_copy(update={"environment": "production"})
    app = build_app(production, web.stack.plain, web.stack.store, session_key=SESSION_KEY)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as c:
        page = await c.get("/sign-in")
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("__Host-") and "secure" in cookie.lower() and "httponly" in cookie.lower()
        assert (await c.get("/outbox")).status_code == 303  # and no outbox page once signed in (below)
        response = await c.post("/sign-in", data={"csrf_token": csrf_of(page.text), "username": "olga",
                                                  "password": PASSWORD})
        assert response.status_code == 303
        assert (await c.get("/outbox")).status_code == 404


async def test_a_form_without_its_csrf_token_is_refused(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web)
    async with web.signed_in("olga") as client:
        before = events(web, ref)
        response = await client.post(f"/cases/{ref}/decide/verification", data=verification_form())
        assert response.status_code == 403
        assert "security token" in response.text
        wrong = await client.post(f"/cases/{ref}/decide/verification",
                                  data={**verification_form(), "csrf_token": "forged"})
        assert wrong.status_code == 403
        assert events(web, ref) == before
        out = await client.post("/sign-out", data={})
        assert out.status_code == 403
        assert (await client.get("/")).status_code == 200  # still signed in
    async with web.client() as client:
        response = await client.post("/sign-in", data={"username": "olga", "password": PASSWORD})
        assert response.status_code == 403
        assert (await client.get("/")).status_code == 303


async def test_five_wrong_passwords_hold_back_the_next_try_from_that_address(web: Web) -> None:
    """The throttle in short (tests/test_web_signin.py has the rest): attempts past the window are
    refused before anything is checked, even with the right password, and recorded."""
    store = web.stack.store
    async with web.client() as client:
        for _ in range(5):
            response = await sign_in(client, "olga", "not the password")
            assert response.status_code == 401
            assert GENERIC_REFUSAL in response.text
        response = await sign_in(client, "olga", PASSWORD)  # the right password, too soon
        assert response.status_code == 429
        assert "Too many sign-in attempts" in response.text and "wait" in response.text
        assert (await client.get("/")).status_code == 303
        reasons = [row["reason"] for row in store.sign_in_log("olga")]
        assert reasons == ["throttled"] + ["password"] * 5
    # An unknown user name is recorded and answered exactly like a wrong password.
    async with web.client() as client:
        response = await sign_in(client, "nobody", PASSWORD)
        assert response.status_code == 401 and GENERIC_REFUSAL in response.text
        assert store.failed_sign_ins("nobody")[0] == 1


async def test_second_factor_when_set(web: Web) -> None:
    uri = enable_totp(web.stack.store, "lina", web.app.state.web.gate.totp_key)
    secret = pyotp.parse_uri(uri).secret
    async with web.client() as client:
        response = await sign_in(client, "lina", PASSWORD)
        assert response.status_code == 401 and GENERIC_REFUSAL in response.text
        assert "6-digit" not in response.text
        response = await sign_in(client, "lina", PASSWORD, "000000" if pyotp.TOTP(secret).now() != "000000"
                                 else "111111")
        assert response.status_code == 401 and GENERIC_REFUSAL in response.text
        response = await sign_in(client, "lina", PASSWORD, pyotp.TOTP(secret).now())
        assert response.status_code == 303
    # Where roles must have a second factor, a head without one signs in only to set it up.
    app = build_app(web.stack.settings, web.stack.plain, web.stack.store, session_key=SESSION_KEY,
                    second_factor_roles=["head"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        response = await sign_in(c, "hana", PASSWORD)
        assert response.status_code == 303 and response.headers["location"] == "/account/second-factor"
        assert (await c.get("/")).headers["location"] == "/account/second-factor"


async def test_sign_out_ends_the_session(web: Web) -> None:
    async with web.signed_in("olga") as client:
        page = await client.get("/")
        assert page.status_code == 200
        cookie = client.cookies.get("appeals_session")
        response = await client.post("/sign-out", data={"csrf_token": csrf_of(page.text)})
        assert response.status_code == 200 and "signed out" in response.text
        assert (await client.get("/")).status_code == 303
    async with web.client() as replay:  # the old cookie, replayed, no longer opens anything
        replay.cookies.set("appeals_session", cookie or "")
        assert (await replay.get("/")).status_code == 303


async def test_auditor_sees_no_decision_forms_and_cannot_decide(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web)
    async with web.signed_in("aldo") as client:
        page = await client.get(f"/cases/{ref}")
        assert page.status_code == 200
        assert "chain verified" in page.text
        assert "/decide/" not in page.text and "Your decisions" not in page.text
        before = events(web, ref)
        for decision in ("verification", "consent", "clearance", "close", "extend"):
            response = await client.post(f"/cases/{ref}/decide/{decision}",
                                         data={**verification_form(), "csrf_token": csrf_of(page.text),
                                               "action": "mfa", "answer": "grant", "outcome": "duplicate"})
            assert response.status_code == 403, decision
        assert events(web, ref) == before
        status = await web.stack.client.get_workflow_handle(ref).query(WF.status)
        assert status["stage"] == "verification"
        # The auditor's own pages: the audit trail with its exports and printable view.
        audit = await client.get(f"/cases/{ref}/audit")
        assert audit.status_code == 200 and "chain verified" in audit.text
        exported = await client.get(f"/cases/{ref}/audit.json")
        assert exported.json()["chain"]["ok"] is True
        assert [e["event"] for e in exported.json()["entries"]] == before
        assert exported.json()["reference"] == ref
        csv_text = (await client.get(f"/cases/{ref}/audit.csv")).text
        # The exports are desk.export's, as `appeals audit --format csv|json` prints them, with
        # the chain's verification.
        assert csv_text.startswith("version,time,actor,event,command_id,summary,details")
        assert csv_text.rstrip().splitlines()[-1].startswith(f"chain,{ref}: audit chain verified")
        assert (await client.get(f"/cases/{ref}/audit/print")).status_code == 200
        assert (await client.get("/cases/new")).status_code == 403
    async with web.signed_in("olga") as client:
        assert (await client.get(f"/cases/{ref}/audit")).status_code == 403


CONFIDENTIAL_NOTE = "Her cousin at the Vrennick port authority passed on the charge sheet"
SOURCE = verification()["verifying_source"]


async def test_confidential_values_are_hidden_unless_a_head_reveals_them_with_a_reason(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web, confidential_information=CONFIDENTIAL_NOTE)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        response = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                                   "form-verification")
        assert response.status_code == 303, response.text
    audit = f"/cases/{ref}/audit"

    async def hidden_everywhere(client: httpx.AsyncClient) -> str:
        page = (await client.get(audit)).text
        printable = (await client.get(f"{audit}/print")).text
        exports = [(await client.get(f"{audit}.{kind}")).text for kind in ("csv", "json")]
        for text in (page, printable, *exports):
            assert SOURCE not in text and CONFIDENTIAL_NOTE not in text
            assert REDACTED in text
        assert "Publicity could harden the prosecution" in page  # the do-no-harm note stays
        details = {e["event"]: e["details"] for e in json.loads(exports[1])["entries"]}
        assert details["VerificationRecorded"]["verification"]["verifying_source"] == REDACTED
        assert details["Opened"]["intake"]["confidential_information"] == REDACTED
        return page

    async with web.signed_in("aldo") as aldo:  # an auditor: hidden, and no way to reveal
        page = await hidden_everywhere(aldo)
        assert 'id="hidden-note"' in page and 'id="reveal-form"' not in page
        response = await aldo.post(f"{audit}/reveal", data={"csrf_token": csrf_of(page), "reason": "curious"})
        assert response.status_code == 403 and SOURCE not in response.text
    assert "ConfidentialRevealed" not in events(web, ref)
    async with web.signed_in("hana") as hana:  # a head: hidden too, until she gives a reason
        page = await hidden_everywhere(hana)
        assert 'id="reveal-form"' in page
        response = await hana.post(f"{audit}/reveal", data={"csrf_token": csrf_of(page), "reason": "  "})
        assert response.status_code == 422 and SOURCE not in response.text
        assert "Nothing was revealed" in response.text
        assert "ConfidentialRevealed" not in events(web, ref)
        response = await hana.post(f"{audit}/reveal", data={
            "csrf_token": csrf_of(page), "reason": "Donor audit of the verification", "view": "page"})
        assert response.status_code == 200
        assert SOURCE in response.text and CONFIDENTIAL_NOTE in response.text
        assert 'id="revealed-note"' in response.text
        [entry] = [e for e in web.stack.store.trail(ref) if e.event == "ConfidentialRevealed"]
        assert entry.actor == "hana" and entry.details["reason"] == "Donor audit of the verification"
        assert SOURCE not in json.dumps(entry.details, default=str)  # the reason only
        assert "Confidential revealed" in response.text  # the reveal is in the trail it shows
        # Once: the page again hides them.
        await hidden_everywhere(hana)
        # One export, revealed: a second reveal, recorded before the file is made.
        response = await hana.post(f"{audit}/reveal", data={
            "csrf_token": csrf_of(page), "reason": "Copy for the board", "view": "csv"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert SOURCE in response.text and "Copy for the board" in response.text
        assert events(web, ref).count("ConfidentialRevealed") == 2
    assert web.stack.store.verify(ref).ok
    # The workflow goes on with the case: the reveal changed nothing it keeps.
    status = await web.stack.client.get_workflow_handle(ref).query(WF.status)
    assert status["stage"] == "consent"


@pytest.mark.parametrize(("error", "code", "says"), [
    (NotAllowed("Only a case officer may open a case; nothing was recorded."), 403,
     "Only a case officer may open a case; nothing was recorded."),
    (CaseNotFound("UA-2026-0404"), 404, "Case UA-2026-0404 not found."),
    (Rejected("the case is not verified yet"), 409, "The case is not verified yet."),
    (InvalidRequest("defenders[0].age", "must be a whole number"), 422,
     "Defenders 1 age: must be a whole number."),
    (Unreachable("Temporal server not reachable at 127.0.0.1:7233", may_have_taken_effect=True),
     503, "Temporal server not reachable at 127.0.0.1:7233. It may have taken effect: sending the "
          "same form again is safe, it records nothing twice."),
    (Unreachable("no worker answered on task queue q within 60 s"), 503,
     "No worker answered on task queue q within 60 s."),
], ids=["not allowed", "not found", "rejected", "invalid", "may have taken effect", "unreachable"])
def test_each_desk_error_has_one_page(error: DeskError, code: int, says: str) -> None:
    """The web's one map of the desk's errors (desk.errors) to pages: the status code, and the
    sentence in the web's words (a field in plain words; a form, not a command, to send again)."""
    assert desk_failure(error)[0] == code
    assert desk_failure(error)[2] == says


@pytest.mark.parametrize("tracked", [False, True], ids=["older case", "case with tracks"])
def test_both_case_aggregates_record_a_reveal_with_its_reason_only(tmp_path: Path, tracked: bool) -> None:
    """The store records a reveal directly (no workflow), on both aggregates, open or closed; the
    event carries the reason only; `redact` hides the values again in every entry."""
    store = CaseStore(sqlite_url(str(tmp_path / "events.sqlite")), base64.b64encode(os.urandom(32)).decode())
    try:
        ref = "UA-2026-0042"
        store.open_case(**open_args(ref, confidential_information=CONFIDENTIAL_NOTE), tracked=tracked)
        store.execute(ref, "record_verification", {"verification": verification(), "at": T0}, "olga", "v1")
        with pytest.raises(InvalidInput):
            store.execute(ref, "reveal_confidential", {"reason": " ", "at": T0}, "hana", "r0")
        store.execute(ref, "close", {"outcome": "resolved", "summary": "", "at": T0}, "hana", "c1")
        store.execute(ref, "reveal_confidential", {"reason": "Year-end audit", "at": T0}, "hana", "r1")
        trail = store.trail(ref)
        assert trail[-1].event == "ConfidentialRevealed" and trail[-1].actor == "hana"
        assert set(trail[-1].details) == {"reason", "at"} and trail[-1].details["reason"] == "Year-end audit"
        assert hidden_count(trail) == 2
        text = json.dumps([e.details for e in redact(trail, reveal=False)], default=str)
        assert SOURCE not in text and CONFIDENTIAL_NOTE not in text and text.count(REDACTED) == 2
        shown = json.dumps([e.details for e in redact(trail, reveal=True)], default=str)
        assert SOURCE in shown and CONFIDENTIAL_NOTE in shown
        assert store.trail(ref)[1].details["verification"]["verifying_source"] == SOURCE  # untouched
        assert store.verify(ref).ok
    finally:
        store.close()


async def test_walk_through_decisions_and_a_case_officer_cannot_clear(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        assert DEFENDER_NAME in page and 'id="form-verification"' in page and "form-clearance" not in page
        response = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                                   "form-verification")
        assert response.status_code == 303, response.text
        # Per-person consent: the form asks who consented, how and when; nothing chosen is refused.
        response = await post_form(olga, url, f"{url}/decide/consent",
                                   {**consent_form("rapporteur"), "consents[0].given_by": ""},
                                   "form-consent-rapporteur")
        assert response.status_code == 422 and "consents[0].given by: choose one of" in response.text
        for action, answer in (("rapporteur", "grant"), ("mfa", "grant"), ("eu_delegation", "refuse")):
            response = await post_form(olga, url, f"{url}/decide/consent",
                                       consent_form(action, answer), f"form-consent-{action}")
            assert response.status_code == 303, response.text
        records = web.stack.store.get(ref).consent_givers("mfa")
        assert [(r["given_by"], r["channel"]) for r in records] == [("defender", "phone")]
        page = (await olga.get(url)).text
        assert "form-clearance" not in page  # the case waits for clearance, which is not hers
        before = events(web, ref)
        response = await olga.post(f"{url}/decide/clearance",
                                   data={"csrf_token": csrf_of(page), "action": "mfa", "granted": "yes"})
        assert response.status_code == 403
        assert events(web, ref) == before
    async with web.signed_in("lina") as lina:
        inbox = (await lina.get("/")).text
        assert ref in inbox.split('id="pending"')[1].split("</table>")[0]
        page = (await lina.get(url)).text
        assert 'id="form-clearance-mfa"' in page and 'id="form-clearance-rapporteur"' in page
        assert "form-verification" not in page and "form-consent" not in page
        for action in ("rapporteur", "mfa"):
            response = await post_form(lina, url, f"{url}/decide/clearance",
                                       {"action": action, "granted": "yes", "reason": "Cleared by the desk"},
                                       f"form-clearance-{action}")
            assert response.status_code == 303, response.text
    status = await settle(web.stack.client.get_workflow_handle(ref),
                          lambda s: all(a["dispatch"] == "sent" for n, a in s["actions"].items()
                                        if n != "eu_delegation"), "dispatched")
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        for message_id in status["actions"]["mfa"]["message_ids"]:
            assert message_id.strip("<>") in page or message_id in page
        assert 'id="form-response-mfa"' in page


def section(html: str, element_id: str) -> str:
    """The HTML of the element with this id, up to the end of its table, list or form."""
    start = html.find(f'id="{element_id}"')
    assert start >= 0, f"no element {element_id} on the page"
    ends = [i for i in (html.find(end, start) for end in ("</table>", "</form>", "</ul>", "</section>"))
            if i >= 0]
    return html[start:min(ends)]


FUND_CASE = {"requested_actions": ["rapporteur", "emergency_fund"], "refused_actions": ["eu_delegation"],
             "eu_grant": None, "fund_request": {"amount_eur": 3000, "purpose": "legal_fees"}}


async def test_the_case_page_lists_suggested_and_excluded_funds_with_their_reasons(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web, **FUND_CASE)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        excluded = section(page, "fund-exclusions")
        # Before the verification nothing links the danger to the rights work yet; every fund
        # of the directory is on the page, each with its reasons.
        assert "the grantee refused EU involvement" in section(page, "excluded-eu_defenders_mechanism")
        assert "the fund is closed" in section(page, "excluded-freedom_house_eap")
        assert "only for LGBTI defenders" in section(page, "excluded-lgbti_defenders")
        assert "needs a causal link between the danger" in excluded
        response = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                                   "form-verification")
        assert response.status_code == 303, response.text
        page = (await olga.get(url)).text
        assert "funds legal fees" in section(page, "suggested-protection_grant")
        assert "the grantee refused EU involvement" in section(page, "excluded-eu_defenders_mechanism")
        assert 'id="public-action">no<' in page
        assert "form-choose_funds" not in page  # consent first
        response = await post_form(olga, url, f"{url}/decide/consent", consent_form("emergency_fund"),
                                   "form-consent-emergency_fund")
        assert response.status_code == 303, response.text
        page = (await olga.get(url)).text
        choose = section(page, "form-choose_funds-emergency_fund")
        assert 'value="protection_grant"' in choose and 'value="eu_defenders_mechanism"' not in choose
        # An excluded fund is refused by the workflow, with its reasons, on the form.
        response = await post_form(olga, url, f"{url}/decide/choose_funds",
                                   {"action": "emergency_fund", "funds": "eu_defenders_mechanism"},
                                   "form-choose_funds-emergency_fund")
        assert response.status_code == 409 and "the grantee refused EU involvement" in response.text
        response = await post_form(olga, url, f"{url}/decide/choose_funds",
                                   {"action": "emergency_fund", "funds": "protection_grant",
                                    "reason": "Pays legal fees"}, "form-choose_funds-emergency_fund")
        assert response.status_code == 303, response.text
        # A fund that takes web forms: the prepared application on the page, then the record.
        page = (await olga.get(url)).text
        submission = section(page, "form-fund_submission-emergency_fund-protection_grant")
        assert "https://www.frontlinedefenders.org/" in submission
        assert "EUR 3,000" in submission and "Emergency grant application" in submission
        response = await post_form(olga, url, f"{url}/decide/fund_submission",
                                   {"action": "emergency_fund", "fund": "protection_grant",
                                    "note": "receipt 4711"},
                                   "form-fund_submission-emergency_fund-protection_grant")
        assert response.status_code == 303, response.text
        page = (await olga.get(url)).text
        assert "submitted" in section(page, "chosen-protection_grant")
        track = section(page, "action-emergency_fund")
        assert "follow up" in track and "protection_grant: submitted" in track
    events_ = events(web, ref)
    assert "FundsChosen" in events_ and "FundApplicationSubmitted" in events_
    assert not [m for _, _, m in web.stack.sink.messages if m["X-Appeal-Action"] == "emergency_fund"]


async def test_tracks_on_the_case_page_and_information_to_chosen_recipients(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web, requested_actions=["rapporteur", "mfa"], refused_actions=[],
                          eu_grant=None)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        await post_form(olga, url, f"{url}/decide/verification", verification_form(), "form-verification")
        for action in ("rapporteur", "mfa"):
            response = await post_form(olga, url, f"{url}/decide/consent", consent_form(action),
                                       f"form-consent-{action}")
            assert response.status_code == 303, response.text
    async with web.signed_in("lina") as lina:
        response = await post_form(lina, url, f"{url}/decide/clearance",
                                   {"action": "mfa", "granted": "yes", "reason": "ok"}, "form-clearance-mfa")
        assert response.status_code == 303, response.text
    handle = web.stack.client.get_workflow_handle(ref)
    await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up", "mfa sent")
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        # Each action's own step, deadline and escalation level; the stage is derived from them.
        assert "clearance: 1, follow-up: 1" in section(page, "stage-detail")
        rapporteur, mfa = section(page, "action-rapporteur"), section(page, "action-mfa")
        assert "clearance" in rapporteur and "UTC" in rapporteur
        assert "follow up" in mfa and "sent" in mfa and "by defender" in mfa
        # Further information: only the actions that went out are offered, by action.
        information = section(page, "form-information")
        assert 'value="mfa"' in information and 'value="rapporteur"' not in information
        response = await post_form(olga, url, f"{url}/decide/information",
                                   {"information": "She was released on bail.", "by_action": "yes",
                                    "send_to": "mfa"}, "form-information")
        assert response.status_code == 303, response.text
        further = [m for _, _, m in web.stack.sink.messages if m["X-Appeal-Kind"] == "further_information"]
        assert [m["X-Appeal-Action"] for m in further] == ["mfa"]
        # An action not sent yet cannot be chosen: the workflow says why, on the form.
        response = await post_form(olga, url, f"{url}/decide/information",
                                   {"information": "More.", "by_action": "yes", "send_to": "rapporteur"},
                                   "form-information")
        assert response.status_code == 409 and "nothing was sent for rapporteur" in response.text
        # The head moves one action's deadline, chosen on the form.
        assert "form-extend" not in page
    async with web.signed_in("hana") as hana:
        page = (await hana.get(url)).text
        extend = section(page, "form-extend")
        assert 'value="rapporteur"' in extend and 'value="mfa"' in extend
        before = (await handle.query(WF.status))["tracks"]
        later = datetime.fromisoformat(before["mfa"]["deadline"]) + timedelta(days=2)
        response = await post_form(hana, url, f"{url}/decide/extend",
                                   {"deadline_of": "mfa", "new_deadline": later.strftime("%Y-%m-%dT%H:%M"),
                                    "reason": "Hearing moved"}, "form-extend")
        assert response.status_code == 303, response.text
    after = (await handle.query(WF.status))["tracks"]
    assert datetime.fromisoformat(after["mfa"]["deadline"]) == later.replace(second=0, microsecond=0)
    assert after["rapporteur"]["deadline"] == before["rapporteur"]["deadline"]  # its own clock


async def test_a_case_opened_before_tracks_has_its_own_page_and_forms(web: Web) -> None:
    web.stack.start_worker()
    ref = f"UA-2026-W{uuid.uuid4().hex[:6].upper()}"
    handle = await web.stack.client.start_workflow(
        CaseWorkflow.run, CaseStart(ref, intake(), "olga"), id=ref,
        task_queue=web.stack.settings.task_queue)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        response = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                                   "form-verification")
        assert response.status_code == 303, response.text
        page = (await olga.get(url)).text
        consent = section(page, "form-consent-mfa")
        assert 'name="public_naming"' in consent and "consents[0]" not in consent
        assert 'id="funds"' not in page and 'id="action-mfa"' in page
        response = await post_form(olga, url, f"{url}/decide/consent",
                                   {"action": "mfa", "answer": "grant", "text": "",
                                    "public_naming": "initials_only"}, "form-consent-mfa")
        assert response.status_code == 303, response.text
    assert (await handle.query(WF.status))["actions"]["mfa"]["consent"] == "granted"


async def test_a_workflow_rejection_is_shown_on_the_form_and_nothing_recorded(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        before = events(web, ref)
        # A consent while the case is still at verification: the officer may record consent in
        # general, so the web lets it through, and the workflow refuses it at this stage.
        response = await olga.post(f"{url}/decide/consent",
                                   data={"csrf_token": csrf_of(page), **consent_form("mfa"),
                                         "update_id": uuid.uuid4().hex})
        assert response.status_code == 409
        assert "not verified yet" in response.text and 'class="error"' in response.text
        # A verification with an unusable verdict: the form's own check, shown on the form.
        response = await olga.post(f"{url}/decide/verification",
                                   data={**verification_form(), "verdict": "maybe",
                                         "csrf_token": csrf_of(page)})
        assert response.status_code == 422 and "verdict" in response.text
        assert 'id="form-verification"' in response.text
        # A verification with a missing answer is refused by the workflow's validator.
        response = await olga.post(f"{url}/decide/verification",
                                   data={**verification_form(), "do_no_harm": "",
                                         "csrf_token": csrf_of(page)})
        assert response.status_code == 409 and "do_no_harm" in response.text
        assert events(web, ref) == before


async def test_new_case_form_validates_inline_and_opens_the_case(web: Web) -> None:
    web.stack.start_worker()
    form = {"organisation.name": "Observatoire Vrennick", "defenders[0].name": DEFENDER_NAME,
            "defenders[0].role": "journalist", "country": "KE", "incident.date": "2026-01-05",
            "incident.place": "Nairobi", "incident.description": "Arrested outside the court.",
            "threat_types": "judicial_harassment", "action.mfa": "requested", "action.rapporteur": "refused",
            "urgency": "high", "defenders[0].age": "34"}
    async with web.signed_in("olga") as olga:
        response = await post_form(olga, "/cases/new", "/cases/new", {**form, "country": "XX"})
        assert response.status_code == 422
        assert 'id="error-country"' in response.text and "ISO 3166-1" in response.text
        assert DEFENDER_NAME in response.text  # what was typed is kept
        response = await post_form(olga, "/cases/new", "/cases/new", {**form, "defenders[0].age": "old"})
        assert response.status_code == 422 and 'id="error-defenders[0].age"' in response.text
        response = await post_form(olga, "/cases/new", "/cases/new", form)
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        ref = location.rsplit("/", 1)[1]
        assert re.fullmatch(rf"UA-{datetime.now(UTC).year}-\d{{4}}", ref)
        assert DEFENDER_NAME not in location
        assert web.stack.store.get(ref).intake["defenders"][0]["name"] == DEFENDER_NAME
        page = await olga.get(location)
        assert "opened" in page.text and 'id="form-verification"' in page.text
        description = await web.stack.client.get_workflow_handle(ref).describe()
        assert description.workflow_type == "UrgentCaseTracks"
        # The intake form says who sees the confidential information, and no more.
        form_page = (await olga.get("/cases/new")).text
        hint = form_page.split('id="confidential-hint">', 1)[1].split("</p>", 1)[0]
        assert "never sent out" not in form_page and "OHCHR" in hint
        assert "confidential part" in hint and "never sent to" in " ".join(hint.split())
    async with web.signed_in("lina") as lina:
        assert (await lina.get("/cases/new")).status_code == 403


# ------------------------------------------------------------------- forms sent more than once
INTAKE_FORM = {"organisation.name": "Observatoire Vrennick", "defenders[0].name": DEFENDER_NAME,
               "defenders[0].role": "journalist", "country": "KE", "incident.date": "2026-01-05",
               "incident.place": "Nairobi", "incident.description": "Arrested outside the court.",
               "threat_types": "judicial_harassment", "action.mfa": "requested",
               "action.rapporteur": "refused", "urgency": "high", "defenders[0].age": "34"}


async def new_case_form(client: httpx.AsyncClient) -> dict[str, str]:
    """The new-case form as the browser holds it: the intake, its CSRF token and its one-time
    request id (the same fields each time it is sent)."""
    page = await client.get("/cases/new")
    assert page.status_code == 200, page.text
    match = REQUEST_ID.search(page.text)
    assert match, "no request id on the new-case form"
    return {**INTAKE_FORM, "csrf_token": csrf_of(page.text), "request_id": match.group(1)}


async def decision_form(client: httpx.AsyncClient, url: str, form_id: str,
                        data: dict[str, str]) -> dict[str, str]:
    """A decision form as the browser holds it: its fields, CSRF token and update id."""
    page = (await client.get(url)).text
    start = page.find(f'id="{form_id}"')
    assert start >= 0, f"no form {form_id} on the page"
    match = UPDATE_ID.search(page[start:])
    assert match
    return {**data, "csrf_token": csrf_of(page), "update_id": match.group(1)}


def opened_cases(w: Web) -> list[str]:
    return [c["reference"] for c in w.stack.store.list_cases()]


async def test_the_same_new_case_form_sent_twice_opens_one_case(web: Web) -> None:
    """A double click (two posts at once) and Back-and-send-again (the same form later) open one
    case; each post lands on it. A new form is a new request: it opens the next case."""
    web.stack.start_worker()
    async with web.signed_in("olga") as olga:
        form = await new_case_form(olga)
        first, second = await asyncio.gather(olga.post("/cases/new", data=form),
                                             olga.post("/cases/new", data=form))
        assert first.status_code == second.status_code == 303, [
            re.findall(r'class="error[^"]*"[^>]*>(.*?)</', r.text, re.S) for r in (first, second)]
        location = first.headers["location"]
        assert second.headers["location"] == location
        ref = location.rsplit("/", 1)[1]
        assert opened_cases(web) == [ref]
        again = await olga.post("/cases/new", data=form)  # Back, and the same form again
        assert again.status_code == 303 and again.headers["location"] == location
        page = await olga.get(location)
        assert page.status_code == 200 and "This form was sent before" in page.text
        assert 'id="form-verification"' in page.text
        assert opened_cases(web) == [ref] and events(web, ref).count("Opened") == 1
        # The request id is checked: one that is not a form's is refused, and nothing opens.
        refused = await olga.post("/cases/new", data={**form, "request_id": "../../x"})
        assert refused.status_code == 422 and "request id" in refused.text
        assert DEFENDER_NAME in refused.text  # what was typed is kept
        assert opened_cases(web) == [ref]
        # A new form (a new request id) is a new case.
        response = await olga.post("/cases/new", data=await new_case_form(olga))
        assert response.status_code == 303 and response.headers["location"] != location
    assert len(opened_cases(web)) == 2


async def test_a_double_click_follows_its_first_attempt_past_a_reference_taken_elsewhere(
        web: Web) -> None:
    """The next reference is held in Temporal by a case this store does not know (another door's,
    still starting): both posts of a double click move on to the same next reference together and
    open one case."""
    from temporalio.exceptions import WorkflowAlreadyStartedError

    web.stack.start_worker()
    blocker = f"UA-{datetime.now(UTC).year}-0001"
    with contextlib.suppress(WorkflowAlreadyStartedError):  # held already by an earlier test
        await web.stack.client.start_workflow(
            WF.run, TracksStart(blocker, intake(), "olga"), id=blocker,
            task_queue=f"nobody-polls-{uuid.uuid4().hex[:8]}")
    async with web.signed_in("olga") as olga:
        form = await new_case_form(olga)
        first, second = await asyncio.gather(olga.post("/cases/new", data=form),
                                             olga.post("/cases/new", data=form))
        assert first.status_code == second.status_code == 303, [
            re.findall(r'class="error[^"]*"[^>]*>(.*?)</', r.text, re.S) for r in (first, second)]
        assert first.headers["location"] == second.headers["location"]
        assert not first.headers["location"].endswith(blocker)
    assert len(opened_cases(web)) == 1


async def test_a_decision_sent_twice_with_the_same_update_id_records_it_once(web: Web) -> None:
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        form = await decision_form(olga, url, "form-verification", verification_form())
        first, second = await asyncio.gather(olga.post(f"{url}/decide/verification", data=form),
                                             olga.post(f"{url}/decide/verification", data=form))
        assert first.status_code == second.status_code == 303, (first.text, second.text)
        again = await olga.post(f"{url}/decide/verification", data=form)  # Back, send again
        assert again.status_code == 303 and again.headers["location"] == url
        page = await olga.get(url)
        assert page.status_code == 200 and "Recorded: record the threat verification" in page.text
        assert events(web, ref).count("VerificationRecorded") == 1
        consent = await decision_form(olga, url, "form-consent-mfa", consent_form("mfa"))
        for _ in range(2):
            response = await olga.post(f"{url}/decide/consent", data=consent)
            assert response.status_code == 303, response.text
    assert events(web, ref).count("ConsentGranted") == 1
    assert web.stack.store.verify(ref).ok


async def test_a_temporal_outage_says_the_form_may_have_taken_effect_and_is_safe_to_resend(
        web: Web) -> None:
    """The web's connection to Temporal is cut after the worker recorded a case opening, then a
    decision: each page says (503) that it may have taken effect and that sending the same form
    again is safe; sent again once Temporal answers, it opens one case and records one event."""
    stack = web.stack
    proxy = await CuttableProxy(stack.settings.temporal_address).start()
    through = await Client.connect(proxy.address, data_converter=data_converter(stack.settings))
    app = build_app(stack.settings, through, stack.store, session_key=SESSION_KEY,
                    outbox=web.outbox, clock=web.clock)
    cut_off = Web(stack, app, web.clock, web.outbox)
    opening, deciding = PauseActivity("open_tracked_case"), PauseActivity("apply_command")

    async def cut_after_recording(pause: PauseActivity, post: Awaitable[httpx.Response]
                                  ) -> httpx.Response:
        pause.arm()
        sent = asyncio.ensure_future(post)
        await asyncio.wait_for(pause.reached.wait(), 60)
        proxy.cut()
        pause.release.set()
        response = await asyncio.wait_for(sent, 120)
        proxy.restore()
        return response

    def may_have_taken_effect(response: httpx.Response) -> None:
        assert response.status_code == 503, response.text
        text = " ".join(html.unescape(response.text).split())
        assert "It may have taken effect: sending the same form again is safe" in text, text
        assert "Traceback" not in text

    try:
        async with in_process_worker(stack, opening.interceptor(), deciding.interceptor()), \
                cut_off.signed_in("olga") as olga:
            form = await new_case_form(olga)
            response = await cut_after_recording(opening, olga.post("/cases/new", data=form))
            may_have_taken_effect(response)
            assert f'name="request_id" value="{form["request_id"]}"' in response.text  # kept
            assert DEFENDER_NAME in response.text
            [ref] = opened_cases(web)
            again = await olga.post("/cases/new", data=form)
            assert again.status_code == 303 and again.headers["location"] == f"/cases/{ref}"
            assert opened_cases(web) == [ref] and events(web, ref).count("Opened") == 1

            url = f"/cases/{ref}"
            decision = await decision_form(olga, url, "form-verification", verification_form())
            response = await cut_after_recording(
                deciding, olga.post(f"{url}/decide/verification", data=decision))
            may_have_taken_effect(response)
            assert events(web, ref).count("VerificationRecorded") == 1
            again = await olga.post(f"{url}/decide/verification", data=decision)
            assert again.status_code == 303, again.text
            assert events(web, ref).count("VerificationRecorded") == 1
            status = await stack.client.get_workflow_handle(ref).query(WF.status)
            assert status["stage"] == "consent"
    finally:
        await proxy.stop()


# ------------------------------------------------------------------- the queue: filters, holders
def _queue_cases(store: CaseStore) -> list[str]:
    """Three cases straight in the store (no workflow: the queue reads the case index): two in
    Kenya, one in Uganda with a death threat, one of the Kenyan ones closed."""
    refs = ["UA-2026-0101", "UA-2026-0102", "UA-2026-0103"]
    store.open_case(**open_args(refs[0], actions=["rapporteur"]), tracked=True)
    store.open_case(**open_args(refs[1], actions=["rapporteur"], country="UG",
                                threat_types=["death_threat"], urgency="critical"), tracked=True)
    store.open_case(**open_args(refs[2], actions=["rapporteur"]), tracked=True)
    store.execute(refs[2], "close", {"outcome": "resolved", "summary": "", "at": T0}, "olga", "q-z")
    return refs


def _queue_refs(html: str) -> list[str]:
    if 'id="queue"' not in html:
        return []
    table = html.split('id="queue"')[1].split("</table>")[0]
    return re.findall(r'<a href="/cases/(UA-[0-9-]+)">', table)


async def test_the_inbox_queue_searches_filters_sorts_and_refuses_unknown_filters(web: Web) -> None:
    a, b, c = _queue_cases(web.stack.store)
    async with web.signed_in("omar") as omar:
        page = await omar.get("/")
        assert page.status_code == 200
        assert _queue_refs(page.text) == [b, a]  # open only, soonest deadline (critical) first
        queue = page.text.split('id="queue"')[1].split("</table>")[0]
        assert "UG" in queue and "death threat" in queue and "judicial harassment" in queue
        assert re.search(r'class="countdown[^"]*">(in|overdue) \d', queue)
        assert DEFENDER_NAME not in page.text  # need to know: the list has no names
        assert _queue_refs((await omar.get("/?q=0102")).text) == [b]
        assert _queue_refs((await omar.get("/?q=ke&state=all")).text) == [a, c]
        assert _queue_refs((await omar.get("/?state=closed")).text) == [c]
        assert _queue_refs((await omar.get("/?threat=death_threat")).text) == [b]
        assert _queue_refs((await omar.get("/?risk=critical&country=UG")).text) == [b]
        assert _queue_refs((await omar.get("/?state=all&sort=reference")).text) == [a, b, c]
        assert _queue_refs((await omar.get("/?mine=held")).text) == []  # olga opened them
        # The filter form keeps what was chosen (a shareable link shows the same list).
        assert '<option value="death_threat" selected>' in (await omar.get("/?threat=death_threat")).text
        for url, field in (("/?stage=lunch", "stage"), ("/?sort=name", "sort"),
                           ("/?colour=red", "filter"), ("/?overdue=maybe", "overdue"),
                           ("/?q=%3Cscript%3E", "search")):
            refused = await omar.get(url)
            assert refused.status_code == 400, url
            assert f"The filter “{field}”" in refused.text and "nothing was listed" in refused.text
            assert _queue_refs(refused.text) == [] and "Traceback" not in refused.text
            assert "<script>" not in refused.text
        # Claim from the inbox (post/redirect/get back to the filtered list); then "held by me".
        inbox = (await omar.get("/?q=0102")).text
        response = await omar.post(f"/cases/{b}/claim",
                                   data={"csrf_token": csrf_of(inbox), "back": "/?q=0102"})
        assert response.status_code == 303 and response.headers["location"] == "/?q=0102"
        after = (await omar.get("/?q=0102")).text
        assert f"{b} is now held by omar" in after
        assert _queue_refs((await omar.get("/?mine=held")).text) == [b]
        assert [e.event for e in web.stack.store.trail(b)][-1] == "CaseClaimed"
        # A closed case is refused, nothing recorded; a form from elsewhere may not send us away.
        before = events(web, c)
        refused = await omar.post(f"/cases/{c}/claim",
                                  data={"csrf_token": csrf_of(inbox), "back": "https://evil.example"})
        assert refused.status_code == 409 and "closed" in refused.text
        assert events(web, c) == before
        response = await omar.post(f"/cases/{a}/claim",
                                   data={"csrf_token": csrf_of(inbox), "back": "//evil.example/"})
        assert response.headers["location"] == f"/cases/{a}/holder"
        # Without the CSRF token nothing happens.
        assert (await omar.post(f"/cases/{b}/assign", data={"holder": "olga"})).status_code == 403
    async with web.signed_in("lina") as lina:  # a liaison holds no case
        page = (await lina.get("/")).text
        assert 'action="/cases/' not in page.split('id="queue"')[1]
        before = events(web, a)
        assert (await lina.post(f"/cases/{a}/claim", data={"csrf_token": csrf_of(page)})).status_code == 403
        assert events(web, a) == before
    async with web.signed_in("hana") as hana:  # a head hands a case to an active officer only
        url = f"/cases/{b}/holder"
        page = (await hana.get(url)).text
        assert 'id="assign-form"' in page and '<option value="olga">' in page
        response = await post_form(hana, url, f"/cases/{b}/assign", {"holder": "lina", "back": url},
                                   "assign-form")
        assert response.status_code == 422 and "lina is not an active case officer" in response.text
        response = await post_form(hana, url, f"/cases/{b}/assign", {"holder": "olga", "back": url},
                                   "assign-form")
        assert response.status_code == 303 and response.headers["location"] == url
        page = (await hana.get(url)).text
        assert 'id="holder">olga<' in page and "handed to olga by hana (from omar)" in page
    trail = [(e.event, e.actor) for e in web.stack.store.trail(b)]
    assert trail[-2:] == [("CaseClaimed", "omar"), ("CaseReassigned", "hana")]


async def test_the_activity_shows_what_was_recorded_and_staff_add_internal_comments(web: Web) -> None:
    """The case page's activity, for the officer too: each event with its words (the verdict and
    scores of the verification, the comment's text), the verifying source hidden; a comment goes
    through the desk with post/redirect/get, a refused one keeps its text; an auditor may not
    comment."""
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        response = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                                   "form-verification")
        assert response.status_code == 303, response.text
        response = await post_form(olga, url, f"{url}/comment",
                                   {"comment": "Called the lawyer: hearing moved to Friday."},
                                   "comment-form")
        assert response.status_code == 303 and response.headers["location"] == f"{url}#activity"
        page = (await olga.get(url)).text
        stream = page.split('id="activity"')[1].split("</section>")[0]
        assert "Comment added" in stream and "Called the lawyer: hearing moved to Friday." in stream
        assert "Verification recorded" in stream and "<dt>verdict</dt><dd>verified</dd>" in stream
        assert verification()["verifying_source"] not in page
        assert stream.index("Comment added") < stream.index("Verification recorded")  # newest first
        # Too long: refused on the page, the text kept, nothing recorded.
        before = events(web, ref)
        long_text = "Notes " * 1000
        response = await post_form(olga, url, f"{url}/comment", {"comment": long_text},
                                   "comment-form")
        assert response.status_code == 422
        assert ("The comment was not added: the comment is too long (at most 5000 characters)."
                in response.text)
        assert long_text.strip() in response.text
        assert events(web, ref) == before
    async with web.signed_in("aldo") as aldo:
        page = (await aldo.get(url)).text
        assert 'id="comment-form"' not in page and "Called the lawyer" in page
        response = await aldo.post(f"{url}/comment", data={"csrf_token": csrf_of(page),
                                                            "comment": "An auditor's note"})
        assert response.status_code == 403
    assert events(web, ref).count("CommentAdded") == 1


async def test_a_decision_or_comment_sent_after_the_session_ended_comes_back_to_its_owner(
        web: Web) -> None:
    """Idle too long, olga sends a comment: nothing is recorded, it is kept (web.drafts); signing
    in again brings her back to the case page with her text in the form (a decision form comes
    back the same way, through the form's own error slot). Another person signing in on that
    browser gets nothing; a form without that session's CSRF token keeps nothing."""
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    async with web.client() as browser:
        assert (await sign_in(browser, "olga", PASSWORD)).status_code == 303
        page = (await browser.get(url)).text
        token = csrf_of(page)
        web.clock.offset = timedelta(minutes=31)  # idle longer than a session may be
        before = events(web, ref)
        sent = await browser.post(f"{url}/comment", data={
            "csrf_token": token, "comment": "Lawyer says the hearing moved.",
            "request_id": uuid.uuid4().hex})
        assert sent.status_code == 303 and sent.headers["location"] == "/sign-in"
        assert events(web, ref) == before
        assert "Your session had ended" in (await browser.get("/sign-in")).text
        back = await sign_in(browser, "olga", PASSWORD)
        assert back.status_code == 303 and back.headers["location"].startswith(f"{url}?draft=")
        page = (await browser.get(back.headers["location"])).text
        assert "Here is the form you were sending" in page
        assert "Lawyer says the hearing moved." in page.split('id="comment-form"')[1]
        assert "Not sent yet: your session had ended." in page
        # Taken once: the same link again shows an empty comment form.
        again = (await browser.get(back.headers["location"])).text
        assert "Lawyer says the hearing moved." not in again
        # Somebody else signing in on this browser after her session ended gets nothing.
        token = csrf_of(again)
        web.clock.offset = timedelta(minutes=62)
        await browser.post(f"{url}/comment", data={"csrf_token": token, "comment": "Hers alone",
                                                    "request_id": uuid.uuid4().hex})
        other = await sign_in(browser, "omar", PASSWORD)
        assert other.status_code == 303 and other.headers["location"] == "/"
        # A forged form (no valid token of the ended session) is not kept.
        web.clock.offset = timedelta(minutes=93)
        await browser.post(f"{url}/comment", data={"csrf_token": "forged", "comment": "x",
                                                    "request_id": uuid.uuid4().hex})
        assert "Your session had ended" not in (await browser.get("/sign-in")).text
    assert events(web, ref) == before


async def test_the_inbox_queue_is_paged_keeping_its_filters(web: Web) -> None:
    for n in range(60):
        web.stack.store.open_case(**open_args(f"UA-2026-{5000 + n}", actions=["rapporteur"]),
                                  tracked=True)
    async with web.signed_in("olga") as olga:
        first = await olga.get("/?state=open&sort=reference")
        assert first.status_code == 200 and "Cases 1–50 of 60" in first.text
        # Each waits for olga's verification: the soonest 50 first, the others one click away.
        waiting = first.text.split('id="pending"', 1)[1].split("</table>", 1)[0]
        assert waiting.count('<a href="/cases/UA-2026-') == 50
        assert "And 10 more waiting for you" in first.text
        mine = await olga.get("/?mine=waiting&page=2")
        assert "Cases 51–60 of 60" in mine.text
        queue = first.text.split('id="queue"', 1)[1].split("</table>", 1)[0]
        assert queue.count('<a href="/cases/UA-2026-') == 50
        assert 'href="/?state=open&amp;sort=reference&amp;page=2" rel="next"' in first.text
        second = await olga.get("/?state=open&sort=reference&page=2")
        assert "Cases 51–60 of 60" in second.text and "UA-2026-5059" in second.text
        assert "UA-2026-5000<" not in second.text.split('id="queue"', 1)[1]
        assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
        bad = await olga.get("/?page=zero")
        assert bad.status_code == 400 and "The filter “page” must be a whole number from 1" in bad.text
