"""The staff web interface over HTTP (httpx against the ASGI app) with the real dev server and worker.

Access rules are checked twice: the web refuses what a role may not do (403, nothing sent to the
workflow), and the workflow refuses what the rules forbid at this stage (its message on the form).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from tests.dev_stack import Stack
from tests.factories import DEFENDER_NAME, intake, verification
from tests.workflow_env import USERS, settle
from web import build_app, enable_totp, set_password
from web.auth import ThrottlePolicy
from workflows.case import CaseWorkflow
from workflows.inputs import CaseStart

PASSWORD = "correct horse battery staple"
SESSION_KEY = "test-session-key-0123456789abcdef0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
UPDATE_ID = re.compile(r'name="update_id" value="([0-9a-f]{32})"')
# Every page but sign-in, with a reference that need not exist: the session is checked first.
PAGES = ["/", "/cases/new", "/cases/UA-2026-0001", "/cases/UA-2026-0001/audit",
         "/cases/UA-2026-0001/audit/print", "/cases/UA-2026-0001/audit.csv",
         "/cases/UA-2026-0001/audit.json", "/audit", "/outbox", "/outbox/some-key"]
POSTS = ["/sign-out", "/cases/new", "/cases/UA-2026-0001/decide/verification",
         "/cases/UA-2026-0001/decide/clearance"]


@dataclass
class Clock:
    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Web:
    stack: Stack
    app: Any
    clock: Clock
    outbox: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")

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
    """POST a form as the browser would: with the CSRF token (and update id) of the page."""
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
    return await client.post(action, data=fields)


def verification_form() -> dict[str, str]:
    v = verification()
    data = {f"threat_questions.{k}": q for k, q in v["threat_questions"].items()}
    data.update({k: str(v[k]) for k in ("vulnerabilities", "capacities", "probability", "impact", "verdict",
                                        "verifying_source", "do_no_harm")})
    return data


@pytest.fixture
async def web(stack: Stack, tmp_path: Path) -> AsyncIterator[Web]:
    set_passwords(stack)
    clock = Clock()
    outbox = tmp_path / "outbox"
    app = build_app(stack.settings, stack.client, stack.store, session_key=SESSION_KEY, outbox=outbox,
                    clock=clock, throttle=ThrottlePolicy(free_attempts=5, base_seconds=30))
    yield Web(stack, app, clock, outbox)


async def open_case(w: Web) -> str:
    """A case at the verification stage, opened through the workflow as the form does."""
    ref = f"UA-2026-W{uuid.uuid4().hex[:6].upper()}"
    handle = await w.stack.client.start_workflow(
        CaseWorkflow.run, CaseStart(ref, intake(), "olga"), id=ref, task_queue=w.stack.settings.task_queue)
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
    app = build_app(production, web.stack.client, web.stack.store, session_key=SESSION_KEY)
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


async def test_five_wrong_passwords_slow_down_the_next_try(web: Web) -> None:
    store = web.stack.store
    async with web.client() as client:
        for _ in range(5):
            response = await sign_in(client, "olga", "not the password")
            assert response.status_code == 401
            assert "user name or password is wrong" in response.text
        response = await sign_in(client, "olga", PASSWORD)  # the right password, too soon
        assert response.status_code == 429
        assert "Too many failed sign-ins" in response.text and "wait" in response.text
        assert (await client.get("/")).status_code == 303
        failures, last = store.failed_sign_ins("olga")
        assert failures == 5 and last is not None
        reasons = [row["reason"] for row in store.sign_in_log("olga")]
        assert reasons == ["throttled"] + ["password"] * 5
        web.clock.offset = timedelta(seconds=31)  # the first wait is 30 s after the last failure
        response = await sign_in(client, "olga", PASSWORD)
        assert response.status_code == 303
        assert (await client.get("/")).status_code == 200
        assert store.failed_sign_ins("olga")[0] == 0  # a success ends the series
    # An unknown user name is recorded and answered exactly like a wrong password.
    async with web.client() as client:
        response = await sign_in(client, "nobody", PASSWORD)
        assert response.status_code == 401 and "user name or password is wrong" in response.text
        assert store.failed_sign_ins("nobody")[0] == 1


async def test_second_factor_when_set(web: Web) -> None:
    uri = enable_totp(web.stack.store, "lina")
    secret = pyotp.parse_uri(uri).secret
    async with web.client() as client:
        response = await sign_in(client, "lina", PASSWORD)
        assert response.status_code == 401 and "6-digit code" in response.text
        response = await sign_in(client, "lina", PASSWORD, "000000" if pyotp.TOTP(secret).now() != "000000"
                                 else "111111")
        assert response.status_code == 401 and "code is wrong" in response.text
        response = await sign_in(client, "lina", PASSWORD, pyotp.TOTP(secret).now())
        assert response.status_code == 303
    # Where roles must have a second factor, a head without one cannot sign in.
    app = build_app(web.stack.settings, web.stack.client, web.stack.store, session_key=SESSION_KEY,
                    second_factor_roles=["head"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        response = await sign_in(c, "hana", PASSWORD)
        assert response.status_code == 401 and "second factor" in response.text


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
        status = await web.stack.client.get_workflow_handle(ref).query(CaseWorkflow.status)
        assert status["stage"] == "verification"
        # The auditor's own pages: the audit trail with its exports and printable view.
        audit = await client.get(f"/cases/{ref}/audit")
        assert audit.status_code == 200 and "chain verified" in audit.text
        exported = await client.get(f"/cases/{ref}/audit.json")
        assert exported.json()["chain"]["ok"] is True
        assert [e["event"] for e in exported.json()["events"]] == before
        csv_text = (await client.get(f"/cases/{ref}/audit.csv")).text
        assert csv_text.startswith("version,at,actor,event,command_id,details")
        assert (await client.get(f"/cases/{ref}/audit/print")).status_code == 200
        assert (await client.get("/cases/new")).status_code == 403
    async with web.signed_in("olga") as client:
        assert (await client.get(f"/cases/{ref}/audit")).status_code == 403


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
        for action, answer in (("rapporteur", "grant"), ("mfa", "grant"), ("eu_delegation", "refuse")):
            response = await post_form(olga, url, f"{url}/decide/consent",
                                       {"action": action, "answer": answer, "text": "",
                                        "public_naming": "initials_only"}, f"form-consent-{action}")
            assert response.status_code == 303, response.text
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
                                   data={"csrf_token": csrf_of(page), "action": "mfa", "answer": "grant",
                                         "text": "", "public_naming": "initials_only",
                                         "update_id": uuid.uuid4().hex})
        assert response.status_code == 409
        assert "verification stage" in response.text and 'class="error"' in response.text
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
    async with web.signed_in("lina") as lina:
        assert (await lina.get("/cases/new")).status_code == 403
