"""The staff web interface: Starlette, server-rendered Jinja2 pages, no JavaScript needed.

A door over the desk (desk.cases.Desk), like the command line: every case operation (opening a case,
a decision, where a case stands, its trail, fund advice and applications, exports, the outbox) goes
through the desk in the name of the person signed in, so both doors behave the same. The desk's
named errors (desk.errors) become pages in one place (`desk_failure`). Requests that change
something carry an idempotency key: the new-case form a one-time request id, each decision form its
update id, so that a form sent twice (a double click, Back and send again, a retry after an outage)
opens or records nothing twice. Pages carry case references only in their URLs, never names.

Sign-in (web.auth): throttled per user name and address before anything is checked, one answer to
every wrong password or code, sessions in the store (`store.users`: signing out, a password change
and a deactivation end them at once). Audit pages and exports hide the confidential values
(desk.redaction) unless a head reveals them for one view, with a reason recorded on the case.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import segno
import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from desk import redaction
from desk.cases import Desk, Person
from desk.errors import (
    DeskError,
    InvalidRequest,
    NotAllowed,
    NotFound,
    NotSignedIn,
    Rejected,
    Unreachable,
)
from desk.export import json_default, trail_csv, trail_entries, trail_json
from desk.outbox import find_message, list_messages
from desk.requests import request_key
from desk.secrets import SealError, seal, unseal
from domain.errors import CaseRuleError, InvalidInput
from domain.funds import Fund, Purpose
from domain.rules import CONSENT_CHANNELS, GIVERS
from domain.users import UnknownUser, UserInactive, UsersRuleError
from domain.vocab import (
    Action,
    AtRiskGroup,
    Gender,
    Outcome,
    PerpetratorKind,
    PublicNaming,
    Right,
    Stage,
    ThreatType,
    Urgency,
    Verdict,
)
from store.app import CaseNotFound, CaseStore, StoreError
from web import auth
from web.forms import (
    DECISIONS,
    DEFENDER_SLOTS,
    THREAT_QUESTIONS,
    FormError,
    available_forms,
    intake_error_field,
    intake_from_form,
)
from worker.settings import Settings

log = logging.getLogger("appeals.web")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "web"
STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_WEB_PORT = 8000
COOKIE = "appeals_session"
AUDIT_ROLES = frozenset({"auditor", "head"})
REVEAL_ROLE = "head"
# A web session lasts at most this long, and ends after this long unused.
SESSION_LIFETIME = timedelta(hours=12)
SESSION_IDLE = timedelta(minutes=30)
HOUSEKEEPING_EVERY = timedelta(days=1)
# How long the case page waits for the workflow's status before showing the stored facts alone.
STATUS_SECONDS = 10.0
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
     b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# The one-time ids the forms carry: a decision form's update id, the new-case form's request id.
_UPDATE_ID = re.compile(r"^[0-9a-f]{32}$")
_REQUEST_ID = _UPDATE_ID
OPEN_COMMAND = "case open"  # the new-case form's request key is scoped to the person and this
# Fields of an invalid opening that are not a field of the intake form (said above the form).
_NOT_INTAKE_FIELDS = frozenset({"intake", "settings", "request_id", "reference"})
# A desk error (desk.errors) as a page: its status code and title (NotSignedIn: the sign-in page).
DESK_PAGES: tuple[tuple[type[DeskError], int, str], ...] = (
    (NotAllowed, 403, "Not allowed"),
    (NotFound, 404, "Not found"),
    (Rejected, 409, "Not recorded"),
    (InvalidRequest, 422, "Not accepted"),
    (Unreachable, 503, "Service not reachable"),
)
REPEAT_FORM = ("It may have taken effect: sending the same form again is safe, it records nothing "
               "twice.")


class SecurityHeaders:
    """Adds the security headers to every response, and no-store to everything but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in {h for h, _ in SECURITY_HEADERS}]
                headers.extend(SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class Ctx:
    """The signed-in user of one request."""

    username: str
    display_name: str
    roles: set[str]
    csrf: str
    sid: str  # the store session's token (the cookie's)
    enrol: bool = False  # signed in with the password only, to set up the required second factor


Handler = Callable[[Request, Ctx, FormData | None], Awaitable[Response]]


def field_words(field: str) -> str:
    """A field's name in plain words: `defenders[0].age` -> `defenders 1 age`."""
    numbered = re.sub(r"\[(\d+)\]", lambda m: f" {int(m.group(1)) + 1}", field)
    return " ".join(numbered.replace("_", " ").replace(".", " ").split())


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else f"{text}."


def desk_failure(exc: DeskError) -> tuple[int, str, str]:
    """What a page says for a desk error: status code, title and the sentence for the person
    (an invalid request names its field in plain words; an unreachable service says whether the
    request may have taken effect, and that sending the same form again is safe)."""
    code, title = next(((c, t) for kind, c, t in DESK_PAGES if isinstance(exc, kind)),
                       (500, "Not done"))
    if isinstance(exc, InvalidRequest):
        return code, title, _sentence(f"{field_words(exc.field)}: {exc.reason}")
    if isinstance(exc, Unreachable):
        message = _sentence(exc.reason)
        if exc.may_have_taken_effect:
            message = f"{message} {REPEAT_FORM}"
        return code, title, message
    return code, title, _sentence(exc.message)


def new_request_id() -> str:
    """A one-time id for a form (its idempotency key's part; random, 128 bits)."""
    return secrets.token_hex(16)


class WebApp:
    def __init__(self, settings: Settings, client: Client, store: CaseStore, *,
                 outbox: Path | None, gate: auth.Gate, session_key: bytes,
                 clock: Callable[[], datetime], funds: list[Fund] | None = None) -> None:
        self.settings = settings
        # Every case operation: the desk signs openings and decisions for the person signed in
        # (the worker checks the signature), and reads with the plain client.
        self.desk = Desk(settings, store, client, funds=funds, clock=clock)
        settings.decision_signing_key()  # a missing key stops the start, not the first decision
        self.desk.funds()  # a broken fund directory too
        self.store = store
        self.outbox = outbox
        self.gate = gate
        self.session_key = session_key
        self.clock = clock
        self.jinja = Environment(loader=FileSystemLoader(TEMPLATES),
                                 autoescape=select_autoescape(default=True, default_for_string=True),
                                 trim_blocks=True, lstrip_blocks=True)
        self.jinja.filters["when"] = _when
        self.jinja.filters["label"] = _label
        self.jinja.filters["event"] = _event
        self.jinja.globals.update(
            actions=[a.value for a in Action], outcomes=[o.value for o in Outcome],
            namings=[p.value for p in PublicNaming], verdicts=[v.value for v in Verdict],
            urgencies=[u.value for u in Urgency], genders=[g.value for g in Gender],
            perpetrator_kinds=[p.value for p in PerpetratorKind],
            threat_types=[t.value for t in ThreatType], rights=[r.value for r in Right],
            groups=[g.value for g in AtRiskGroup], stages=[s.value for s in Stage],
            threat_questions=THREAT_QUESTIONS, defender_slots=DEFENDER_SLOTS,
            givers=list(GIVERS), consent_channels=list(CONSENT_CHANNELS),
            purposes=[p.value for p in Purpose],
            development=settings.environment == "development", outbox_enabled=outbox is not None)

    # ------------------------------------------------------------------------------ plumbing
    def render(self, request: Request, ctx: Ctx | None, name: str, code: int = 200,
               **values: Any) -> HTMLResponse:
        flash = request.session.pop("flash", None) if ctx is not None else None
        html = self.jinja.get_template(name).render(
            user=ctx, csrf=ctx.csrf if ctx else request.session.get("csrf", ""), flash=flash,
            **values)
        return HTMLResponse(html, status_code=code)

    def forbidden(self, request: Request, ctx: Ctx | None, why: str) -> HTMLResponse:
        return self.render(request, ctx, "error.html", 403, title="Not allowed", message=why)

    def not_found(self, request: Request, ctx: Ctx | None, what: str = "This page") -> HTMLResponse:
        return self.render(request, ctx, "error.html", 404, title="Not found",
                           message=f"{what} does not exist.")

    def desk_error(self, request: Request, ctx: Ctx | None, exc: DeskError) -> Response:
        """The page for a desk error that no form shows (see `desk_failure`)."""
        if isinstance(exc, NotSignedIn):
            return RedirectResponse("/sign-in", status_code=303)
        code, title, message = desk_failure(exc)
        return self.render(request, ctx, "error.html", code, title=title, message=message)

    async def current(self, request: Request) -> Ctx | None:
        """The signed-in user: a live store session (not signed out, expired, idle too long or
        revoked by a password change or a deactivation) of an active user."""
        token = request.session.get("sid")
        if not isinstance(token, str) or not token:
            return None
        username = await asyncio.to_thread(self.store.users.session_user, token, self.clock(),
                                           idle=SESSION_IDLE)
        user = await asyncio.to_thread(self.store.user, username) if username else None
        if username is None or user is None or not user["active"]:
            request.session.pop("sid", None)
            request.session.pop("enrol", None)
            return None
        return Ctx(username, user["display_name"], set(user["roles"]),
                   auth.csrf_for(self.session_key, token), token,
                   enrol=bool(request.session.get("enrol")))

    async def start_session(self, request: Request, username: str, *, enrol: bool = False) -> None:
        """A new store session for this browser (a new cookie, so a new CSRF token too)."""
        token = await asyncio.to_thread(self.store.users.create_session, username, "web",
                                        SESSION_LIFETIME, now=self.clock())
        request.session.clear()
        request.session["sid"] = token
        if enrol:
            request.session["enrol"] = True

    def page(self, handler: Handler, roles: Iterable[str] | None = None, *,
             enrolling: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Signed-in users only (others go to sign-in); roles if given; a CSRF token on every POST.
        A session signed in only to set up the required second factor reaches only the pages
        marked `enrolling`."""
        allowed = frozenset(roles) if roles is not None else None

        async def endpoint(request: Request) -> Response:
            ctx = await self.current(request)
            if ctx is None:
                return RedirectResponse("/sign-in", status_code=303)
            if ctx.enrol and not enrolling:
                return RedirectResponse("/account/second-factor", status_code=303)
            form = None
            if request.method == "POST":
                form = await request.form(max_files=0, max_fields=400, max_part_size=64 * 1024)
                token = form.get("csrf_token")
                if not auth.tokens_match(ctx.csrf, token if isinstance(token, str) else None):
                    return self.forbidden(request, ctx, "The form had no valid security token. Reload the "
                                                        "page and try again.")
            if allowed is not None and not ctx.roles & allowed:
                return self.forbidden(request, ctx, "Your role does not allow this page.")
            try:
                return await handler(request, ctx, form)
            except DeskError as exc:  # what a handler does not show at its form
                return self.desk_error(request, ctx, exc)

        return endpoint

    # --------------------------------------------------------------------------- sign-in
    async def sign_in_page(self, request: Request) -> Response:
        if await self.current(request) is not None:
            return RedirectResponse("/", status_code=303)
        request.session.setdefault("csrf", auth.new_token())
        return self.render(request, None, "sign_in.html")

    async def sign_in(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10, max_part_size=4096)
        token = form.get("csrf_token")
        if not auth.tokens_match(request.session.get("csrf"), token if isinstance(token, str) else None):
            request.session["csrf"] = auth.new_token()
            return self.render(request, None, "sign_in.html", 403,
                               error="The form had expired. Please sign in again.")
        username = str(form.get("username") or "").strip()[:100]
        password = str(form.get("password") or "")
        code = str(form.get("code") or "")
        if not username or not password:
            return self.render(request, None, "sign_in.html", 401,
                               error="Enter your user name and password.", username=username)
        now = self.clock()
        outcome = await self.gate.attempt(username, password, code, _client_host(request), now)
        if outcome.reason == "throttled":
            return self.render(request, None, "sign_in.html", 429, error=_throttled(outcome.wait),
                               username=username)
        if not outcome.ok:
            return self.render(request, None, "sign_in.html", 401, error=auth.GENERIC_REFUSAL,
                               username=username)
        old = request.session.get("sid")
        if isinstance(old, str):
            await asyncio.to_thread(self.store.users.end_session, old)
        try:  # a new session (and CSRF token) at every sign-in
            await self.start_session(request, username, enrol=outcome.enrol)
        except (UnknownUser, UserInactive):  # deactivated meanwhile
            return self.render(request, None, "sign_in.html", 401, error=auth.GENERIC_REFUSAL,
                               username=username)
        if outcome.enrol:
            return RedirectResponse("/account/second-factor", status_code=303)
        return RedirectResponse("/", status_code=303)

    async def sign_out(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        await asyncio.to_thread(self.store.users.end_session, ctx.sid)
        request.session.clear()
        request.session["csrf"] = auth.new_token()
        return self.render(request, None, "sign_in.html", message="You are signed out.")

    # ---------------------------------------------------------------------------- account
    async def account_page(self, request: Request, ctx: Ctx, form: FormData | None, *,
                           status_code: int = 200, errors: dict[str, str] | None = None) -> Response:
        enrolled = await asyncio.to_thread(self.store.totp_secret, ctx.username) is not None
        return self.render(request, ctx, "account.html", status_code, enrolled=enrolled,
                           required=bool(ctx.roles & self.gate.second_factor_roles),
                           errors=errors or {}, min_length=auth.MIN_PASSWORD_LENGTH)

    async def change_password(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """The user's own new password, after their current one (checked like a sign-in: throttled
        and counted). Through the users log, which ends every session of the user; this browser
        gets a new one."""
        assert form is not None
        current = str(form.get("current_password") or "")
        new = str(form.get("new_password") or "")
        confirm = str(form.get("confirm_password") or "")
        if not current:
            return await self.account_page(request, ctx, form, status_code=422, errors={
                "current_password": "Enter your current password."})
        outcome = await self.gate.attempt(ctx.username, current, None, _client_host(request),
                                          self.clock())
        if outcome.reason == "throttled":
            return await self.account_page(request, ctx, form, status_code=429, errors={
                "current_password": _throttled(outcome.wait)})
        if not outcome.ok:
            return await self.account_page(request, ctx, form, status_code=401, errors={
                "current_password": "This is not your current password."})
        if new != confirm:
            return await self.account_page(request, ctx, form, status_code=422, errors={
                "confirm_password": "The new password and its repetition differ."})
        try:
            hashed = await asyncio.to_thread(auth.hash_new_password, new)
        except auth.PasswordRejected as exc:
            return await self.account_page(request, ctx, form, status_code=422, errors={
                "new_password": str(exc)})
        try:
            await asyncio.to_thread(self.store.users.set_password, ctx.username, hashed,
                                    actor=ctx.username)
        except UsersRuleError as exc:
            return await self.account_page(request, ctx, form, status_code=409, errors={
                "_form": exc.message})
        await self.start_session(request, ctx.username)
        request.session["flash"] = ("Your password is changed. Your other sessions, on the web "
                                    "and the command line, have ended.")
        return RedirectResponse("/account", status_code=303)

    def _pending_secret(self, request: Request, username: str) -> str:
        """The secret being set up in this browser: kept sealed in the session cookie until a
        code from it is entered, so that a reload shows the same QR code."""
        context = f"totp-pending:{username}"
        pending = request.session.get("totp_pending")
        if isinstance(pending, str):
            try:
                return unseal(self.gate.totp_key, pending, context=context)
            except SealError:
                pass
        secret = auth.new_totp_secret()
        request.session["totp_pending"] = seal(self.gate.totp_key, secret, context=context)
        return secret

    async def second_factor_page(self, request: Request, ctx: Ctx, form: FormData | None, *,
                                 status_code: int = 200, error: str | None = None) -> Response:
        secret = self._pending_secret(request, ctx.username)
        enrolled = await asyncio.to_thread(self.store.totp_secret, ctx.username) is not None
        uri = auth.provisioning_uri(secret, ctx.username)
        return self.render(request, ctx, "second_factor.html", status_code, qr=Markup(_qr_svg(uri)),
                           secret=" ".join(secret[i:i + 4] for i in range(0, len(secret), 4)),
                           enrolled=enrolled, error=error)

    async def enrol_second_factor(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """The secret shown on the page becomes the user's second factor once a current code from
        it is entered (that code is then used up: it cannot sign anyone in)."""
        assert form is not None
        secret = self._pending_secret(request, ctx.username)
        now = self.clock()
        step = auth.totp_step(secret, str(form.get("code") or ""), now)
        if step is None:
            return await self.second_factor_page(
                request, ctx, form, status_code=422,
                error="That is not the code the app shows now for this set-up. Scan the code "
                      "below (or type the key), then enter the 6 digits the app shows.")
        if not await asyncio.to_thread(auth.accept_step, self.store.engine, ctx.username, step):
            return await self.second_factor_page(
                request, ctx, form, status_code=422,
                error="That code was used already. Wait for the app's next code and enter it.")
        sealed = auth.seal_totp(self.gate.totp_key, ctx.username, secret)
        try:
            await asyncio.to_thread(self.store.users.set_totp, ctx.username, sealed,
                                    actor=ctx.username)
        except UsersRuleError as exc:
            return await self.second_factor_page(request, ctx, form, status_code=409,
                                                 error=exc.message)
        request.session.pop("totp_pending", None)
        request.session.pop("enrol", None)
        request.session["flash"] = ("Your authenticator app is set up: signing in now asks for "
                                    "the code it shows.")
        return RedirectResponse("/" if ctx.enrol else "/account", status_code=303)

    # ------------------------------------------------------------------------------ inbox
    async def inbox(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        now = self.clock()
        pending = await asyncio.to_thread(self.desk.cases, mine=Person(ctx.username))
        cases = [c for c in await asyncio.to_thread(self.desk.cases) if c["stage"] != "closed"]
        for c in cases:
            c["overdue"] = bool(c["next_deadline"] and c["next_deadline"] < now)
        by_stage = Counter(c["stage"] for c in cases)
        by_risk = Counter(c["risk_level"] or c["urgency"] for c in cases)
        return self.render(request, ctx, "inbox.html", pending=pending, cases=cases,
                           by_stage=by_stage, by_risk=by_risk, now=now)

    # --------------------------------------------------------------------------- new case
    def intake_form(self, request: Request, ctx: Ctx, code: int = 200, *, request_id: str,
                    values: dict[str, Any] | None = None, lists: dict[str, Any] | None = None,
                    errors: dict[str, str] | None = None) -> HTMLResponse:
        """The new-case form, carrying its one-time request id (a hidden field)."""
        return self.render(request, ctx, "new_case.html", code, values=values or {},
                           lists=lists or {}, errors=errors or {}, request_id=request_id)

    async def new_case_page(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        return self.intake_form(request, ctx, request_id=new_request_id())

    async def new_case(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """Open a case through the desk. The form's request id is the opening's idempotency key
        (scoped to the person): the same form sent again (a double click, Back and send again, a
        retry after an outage) opens nothing new and lands on the case it opened."""
        assert form is not None
        values = {k: v for k, v in form.items()
                  if isinstance(v, str) and k not in ("csrf_token", "request_id")}
        lists = {k: form.getlist(k) for k in form if k.endswith(("at_risk_groups", "threat_types",
                                                                "rights_affected"))}
        given = form.get("request_id")
        if not isinstance(given, str) or not _REQUEST_ID.match(given):
            return self.intake_form(request, ctx, 422, request_id=new_request_id(), values=values,
                                    lists=lists, errors={"_form": (
                                        "The form had no valid request id (it may be an old copy "
                                        "of the page); nothing was opened. Check the fields and "
                                        "open the case again.")})
        request_id = given

        def again(code: int, errors: dict[str, str], *, fresh: bool = False) -> HTMLResponse:
            """The form again, as typed, with its request id (a new one when `fresh`)."""
            return self.intake_form(request, ctx, code, values=values, lists=lists, errors=errors,
                                    request_id=new_request_id() if fresh else request_id)

        try:
            raw = intake_from_form(form)
        except InvalidInput as err:
            return again(422, {intake_error_field(err.field): err.reason})
        key = request_key("web", ctx.username, OPEN_COMMAND, {}, given=request_id)
        try:
            opened = await self.desk.open_case(Person(ctx.username), raw, request_id=key)
        except InvalidRequest as exc:  # the intake, checked by the desk: nothing was opened
            if exc.field in _NOT_INTAKE_FIELDS:
                return again(422, {"_form": desk_failure(exc)[2]})
            return again(422, {intake_error_field(exc.field): exc.reason})
        except Unreachable as exc:  # the same form again (same request id) is safe
            return again(503, {"_form": desk_failure(exc)[2]})
        except Rejected as exc:  # not opened: the form, corrected, is a new request
            return again(409, {"_form": desk_failure(exc)[2]}, fresh=True)
        request.session["flash"] = (
            f"This form was sent before: it opened case {opened.reference}, and nothing new was "
            "opened." if opened.repeated else f"Case {opened.reference} opened.")
        return RedirectResponse(f"/cases/{opened.reference}", status_code=303)

    # -------------------------------------------------------------------------- case page
    async def _status(self, reference: str) -> dict[str, Any] | None:
        """Where the case stands (desk.status): the workflow's status while it runs, else the
        stored summary; None when the workflow does not answer in time."""
        try:
            return await asyncio.wait_for(self.desk.status(reference), STATUS_SECONDS)
        except Exception:  # noqa: BLE001 - any failure: the page says the workflow did not answer
            log.warning("status query failed for a case")
            return None

    async def case_page(self, request: Request, ctx: Ctx, form: FormData | None, *,
                        status_code: int = 200, form_error: dict[str, Any] | None = None) -> Response:
        reference = request.path_params["reference"]
        case = await asyncio.to_thread(self.desk.stored_case, reference)  # CaseNotFound: 404
        trail = await asyncio.to_thread(self.desk.trail, reference)
        chain = await asyncio.to_thread(self.store.verify, reference)
        status = await self._status(reference)
        forms = available_forms(status, ctx.roles, ctx.username) if status else []
        unplaced = form_error
        for f in forms:
            f["update_id"] = new_request_id()
            if (form_error and form_error["name"] == f["name"]
                    and form_error.get("action") == f["action"]
                    and form_error.get("fund") == f.get("fund")):
                f["error"] = form_error["message"]
                f["values"] = form_error["values"]
                f["update_id"] = form_error["update_id"]
                unplaced = None
        # A decision whose form is not offered now (at this stage, or the workflow not answering):
        # said at the top of the page.
        rejected = None
        if unplaced is not None:
            label = DECISIONS[unplaced["name"]].label
            rejected = (f"{label}: {unplaced['message']}" if status_code == 503
                        else f"{label} was not recorded: {unplaced['message']}")
        # What the page shows: the workflow's live status, or the store's last summary (closed, or
        # the workflow not answering). Cases with tracks show each action's own step and clock.
        view: dict[str, Any] = status if status and status.get("stage") != "intake" else case.summary()
        now = self.clock()
        advice = applications = None
        tracks = view.get("tracks") or {}
        if view.get("tracked") and Action.EMERGENCY_FUND in tracks:
            advice = await asyncio.to_thread(self.desk.fund_advice, reference, now.date())
            applications = await asyncio.to_thread(self._applications, reference,
                                                   tracks[Action.EMERGENCY_FUND])
        deadline = view.get("deadline")
        if isinstance(deadline, str):
            deadline = datetime.fromisoformat(deadline)
        return self.render(request, ctx, "case.html", status_code, case=case, status=status,
                           view=view, tracked=bool(view.get("tracked")), advice=advice,
                           overdue=bool(deadline and deadline < now),
                           applications=applications, trail=redaction.redact(trail, reveal=False),
                           chain=chain, forms=forms,
                           reference=reference, rejected=rejected,
                           may_audit=bool(ctx.roles & AUDIT_ROLES), now=now,
                           now_local=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"))

    def _applications(self, reference: str, track: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The prepared application (desk.fund_application) for each fund that staff submit
        through its own web form."""
        out: dict[str, dict[str, Any]] = {}
        for fund_id, state in (track.get("funds") or {}).items():
            if state not in ("to_submit", "submitted"):
                continue
            try:
                fund = self.desk.find_fund(fund_id)
            except InvalidRequest:  # not in the fund directory (any more)
                continue
            entry: dict[str, Any] = {"name": fund.name, "form_url": fund.form_url, "state": state}
            try:
                prepared = self.desk.fund_application(reference, fund_id)
                entry.update(subject=prepared["subject"], text=prepared["text"])
            except Rejected as exc:  # names the template and value, never case data
                entry["error"] = exc.message
            out[fund_id] = entry
        return out

    async def decide(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """One decision through the desk, in the name of the person signed in. The form's update
        id is the decision's idempotency key (scoped to the person): sent again, it records
        nothing twice and shows the case."""
        assert form is not None
        reference = request.path_params["reference"]
        decision = DECISIONS.get(request.path_params["decision"])
        if decision is None:
            return self.not_found(request, ctx, "This decision")
        if not ctx.roles & set(decision.roles):
            return self.forbidden(request, ctx, "Your role does not allow this decision.")
        update_id = str(form.get("update_id") or "")
        if not _UPDATE_ID.match(update_id):
            update_id = new_request_id()
        action = form.get("action") if isinstance(form.get("action"), str) else None
        fund = form.get("fund") if isinstance(form.get("fund"), str) else None
        values: dict[str, Any] = {k: v for k, v in form.items()
                                  if isinstance(v, str) and k != "csrf_token"}
        values["send_to"] = [v for v in form.getlist("send_to") if isinstance(v, str)]

        def failed(message: str, code: int, update: str = update_id) -> Awaitable[Response]:
            """The case page with the message at the decision's form; the form keeps what was
            typed, and its update id unless `update` gives a new one."""
            error = {"name": decision.name, "action": action or None, "fund": fund or None,
                     "message": message, "values": values, "update_id": update}
            return self.case_page(request, ctx, None, status_code=code, form_error=error)

        try:
            update, arg = decision.build(form, ctx.username)
        except FormError as err:
            return await failed(f"{err.field.replace('_', ' ')}: {err.message}", 422)
        key = request_key("web", ctx.username, f"decide {decision.name}", {}, given=update_id)
        try:
            await self.desk.decide(Person(ctx.username), reference, update, arg, request_id=key)
        except Rejected as exc:  # nothing recorded: a corrected decision is a new request
            return await failed(exc.message, 409, new_request_id())
        except InvalidRequest as exc:
            return await failed(desk_failure(exc)[2], 422)
        except Unreachable as exc:  # the same form again (same update id) is safe
            return await failed(desk_failure(exc)[2], 503)
        request.session["flash"] = f"Recorded: {decision.label.lower()}."
        return RedirectResponse(f"/cases/{reference}", status_code=303)

    # ------------------------------------------------------------------------------ audit
    async def audit_index(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        cases = await asyncio.to_thread(self.desk.cases)
        reports = {c["reference"]: await asyncio.to_thread(self.store.verify, c["reference"])
                   for c in cases}
        return self.render(request, ctx, "audit_index.html", cases=cases, reports=reports)

    async def _audit_data(self, reference: str) -> tuple[Any, Any]:
        """The case's trail (desk.trail: CaseNotFound for an unknown case) and its chain."""
        trail = await asyncio.to_thread(self.desk.trail, reference)
        return trail, await asyncio.to_thread(self.store.verify, reference)

    async def audit(self, request: Request, ctx: Ctx, form: FormData | None, *,
                    status_code: int = 200, reveal_error: str | None = None) -> Response:
        """The trail with the confidential values hidden (desk.redaction), for every role."""
        reference = request.path_params["reference"]
        trail, chain = await self._audit_data(reference)
        printable = request.url.path.endswith("/print")
        return self.render(request, ctx, "audit.html", status_code, reference=reference,
                           trail=redaction.redact(trail, reveal=False), chain=chain,
                           printable=printable, generated=self.clock(),
                           hidden=redaction.hidden_count(trail), revealed=False,
                           may_reveal=REVEAL_ROLE in ctx.roles, reveal_error=reveal_error)

    async def audit_export(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        reference = request.path_params["reference"]
        kind = request.path_params["format"]
        if kind not in ("csv", "json"):
            return self.not_found(request, ctx, "This export")
        trail, chain = await self._audit_data(reference)
        return self._export(reference, kind, redaction.redact(trail, reveal=False), chain)

    async def audit_reveal(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """A head sees the confidential values for one view (the page, or one export), after the
        reason is recorded on the case (event ConfidentialRevealed, the reason only). Each reveal
        is recorded: a reload is a new reveal, never a free one."""
        assert form is not None
        reference = request.path_params["reference"]
        view = str(form.get("view") or "page")
        if view not in ("page", "csv", "json"):
            view = "page"
        await self._audit_data(reference)  # an unknown case: 404
        # The role again, as the registry says now (not as the session read it a moment ago).
        if REVEAL_ROLE not in await asyncio.to_thread(self.store.user_roles, ctx.username):
            return self.forbidden(request, ctx, "Only a head may reveal confidential values.")
        reason = str(form.get("reason") or "")
        try:
            await asyncio.to_thread(self.store.execute, reference, redaction.REVEAL_COMMAND,
                                    {"reason": reason, "at": self.clock()}, ctx.username,
                                    f"web-reveal-{uuid.uuid4().hex}")
        except CaseNotFound:
            return self.not_found(request, ctx, "This case")
        except CaseRuleError as err:
            message = err.reason if isinstance(err, InvalidInput) else err.message
            return await self.audit(request, ctx, form, status_code=422,
                                    reveal_error=f"Nothing was revealed: the reason {message}.")
        trail, chain = await self._audit_data(reference)  # read again: the reveal is in the trail now
        shown = redaction.redact(trail, reveal=True)
        if view != "page":
            return self._export(reference, view, shown, chain)
        return self.render(request, ctx, "audit.html", reference=reference, trail=shown,
                           chain=chain, printable=False, generated=self.clock(),
                           hidden=redaction.hidden_count(trail), revealed=True, may_reveal=False,
                           reveal_error=None)

    def _export(self, reference: str, kind: str, trail: list[Any], chain: Any) -> Response:
        """The trail as a file (desk.export, as `appeals audit --format json|csv` prints it), with
        the chain's verification."""
        disposition = {"content-disposition": f'attachment; filename="{reference}-audit.{kind}"'}
        entries = trail_entries(trail)
        if kind == "json":
            document = trail_json(reference, entries, chain=chain, generated_at=self.clock())
            body = json.dumps(document, default=json_default, ensure_ascii=False, indent=2)
            return Response(body, media_type="application/json", headers=disposition)
        return Response(trail_csv(entries, chain), media_type="text/csv; charset=utf-8",
                        headers=disposition)

    # ----------------------------------------------------------------------------- outbox
    async def outbox_page(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        if self.outbox is None:
            return self.not_found(request, ctx, "The outbox (development only)")
        messages = await asyncio.to_thread(list_messages, self.outbox)
        messages.reverse()  # newest first
        return self.render(request, ctx, "outbox.html", messages=messages, path=self.outbox)

    async def outbox_message(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        if self.outbox is None:
            return self.not_found(request, ctx, "The outbox (development only)")
        try:
            found = await asyncio.to_thread(find_message, self.outbox, request.path_params["key"])
        except NotFound:
            return self.not_found(request, ctx, "This message")
        return self.render(request, ctx, "outbox_message.html", msg=found)


def _client_host(request: Request) -> str:
    """The client's address as the connection (or a trusted proxy) gives it."""
    return request.client.host if request.client else ""


def _throttled(wait: float) -> str:
    after = f"{max(1, round(wait / 60))} minutes" if wait >= 90 else f"{int(wait) + 1} seconds"
    return (f"Too many sign-in attempts. Please wait {after} before trying again; attempts "
            "before then are refused without being checked.")


def _qr_svg(text: str) -> str:
    """A QR code as inline SVG (no script, no style attribute: the page's CSP allows it)."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", xmldecl=False, svgns=True, scale=5,
                                     border=3, svgclass="qr", lineclass=None,
                                     title="QR code for the authenticator app")
    return out.getvalue().decode("utf-8")


def _when(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return str(value.strftime("%Y-%m-%d %H:%M UTC"))
    if isinstance(value, date):
        return str(value.isoformat())
    return str(value)


def _event(name: str) -> str:
    """'ConsentGranted' -> 'Consent granted'."""
    words = re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", name)
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else name


def _label(value: Any) -> str:
    return str(value).replace("_", " ") if value is not None else "—"


def build_app(settings: Settings, client: Client, store: CaseStore, *,
              session_key: bytes | str | None = None, outbox: Path | None | bool = True,
              throttle: auth.ThrottlePolicy | None = None,
              clock: Callable[[], datetime] = auth.utcnow,
              second_factor_roles: Iterable[str] | None = None,
              totp_key: bytes | None = None,
              trusted_proxies: Iterable[str] | None = None) -> Starlette:
    """The web interface as an ASGI app.

    - `session_key`: signs the session cookie (and keys the CSRF tokens and the hashes that stand
      for client addresses); default `<var_dir>/keys/web-session.key` (created in development,
      required in production).
    - `outbox`: the Maildir the outbox page shows; True (default) means `<var_dir>/outbox` in
      development and no outbox page in production; None or False: no outbox page.
    - `throttle`, `clock`: the sign-in throttle (web.auth.ThrottlePolicy) and the time sessions,
      codes and records read (tests pass their own).
    - `second_factor_roles`: roles that must have TOTP set up; default ministry liaison and head in
      production, none in development. Such a user without one signs in with the password to set
      it up, and reaches no other page until then. A user with a TOTP secret always needs the code.
    - `totp_key`: seals the TOTP secrets at rest; default `settings.totp_key()` (its key file is
      created in development, required in production).
    - `trusted_proxies`: addresses of reverse proxies whose X-Forwarded-For names the client (the
      throttle counts per client address); none by default.
    """
    production = settings.environment == "production"
    key = session_key if session_key is not None else auth.session_key(settings.var_dir,
                                                                        settings.environment)
    key_bytes = key.encode() if isinstance(key, str) else key
    if outbox is True:
        box: Path | None = None if production else settings.var_dir / "outbox"
    elif outbox is False or outbox is None:
        box = None
    else:
        box = outbox
    if second_factor_roles is None:
        second_factor_roles = auth.SECOND_FACTOR_ROLES if production else ()
    gate = auth.Gate(store, throttle or auth.ThrottlePolicy(),
                     totp_key=totp_key if totp_key is not None else settings.totp_key(),
                     address_key=hashlib.sha256(b"appeals-web/addresses\x00" + key_bytes).digest(),
                     second_factor_roles=frozenset(second_factor_roles))
    web = WebApp(settings, client, store, outbox=box, gate=gate, session_key=key_bytes, clock=clock)
    p = web.page
    officers, auditors = ["case_officer"], AUDIT_ROLES
    routes = [
        Route("/sign-in", web.sign_in_page, methods=["GET"]),
        Route("/sign-in", web.sign_in, methods=["POST"]),
        Route("/sign-out", p(web.sign_out, enrolling=True), methods=["POST"]),
        Route("/account", p(web.account_page), methods=["GET"]),
        Route("/account/password", p(web.change_password), methods=["POST"]),
        Route("/account/second-factor", p(web.second_factor_page, enrolling=True), methods=["GET"]),
        Route("/account/second-factor", p(web.enrol_second_factor, enrolling=True), methods=["POST"]),
        Route("/", p(web.inbox), methods=["GET"]),
        Route("/cases/new", p(web.new_case_page, officers), methods=["GET"]),
        Route("/cases/new", p(web.new_case, officers), methods=["POST"]),
        Route("/cases/{reference}", p(web.case_page), methods=["GET"]),
        Route("/cases/{reference}/decide/{decision}", p(web.decide), methods=["POST"]),
        Route("/audit", p(web.audit_index, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit", p(web.audit, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit/print", p(web.audit, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit/reveal", p(web.audit_reveal, [REVEAL_ROLE]), methods=["POST"]),
        Route("/cases/{reference}/audit.{format:str}", p(web.audit_export, auditors), methods=["GET"]),
        Route("/outbox", p(web.outbox_page), methods=["GET"]),
        Route("/outbox/{key}", p(web.outbox_message), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=key if isinstance(key, str) else key.decode(),
                   session_cookie=f"__Host-{COOKIE}" if production else COOKIE,
                   max_age=int(SESSION_LIFETIME.total_seconds()), same_site="strict",
                   https_only=production),
    ]
    proxies = list(trusted_proxies or ())
    if proxies:
        middleware.insert(0, Middleware(ProxyHeadersMiddleware, trusted_hosts=proxies))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.web = web
    return app


async def housekeeping(web: WebApp, every: timedelta = HOUSEKEEPING_EVERY) -> None:
    """Prune old sign-in attempts, ended sessions and stale known addresses now and then daily."""
    while True:
        try:
            counts = await asyncio.to_thread(web.gate.prune, web.clock())
            log.info("pruned %s sign-in attempts, %s sessions, %s known addresses",
                     counts["sign_ins"], counts["sessions"], counts["addresses"])
        except Exception:  # noqa: BLE001 - the web keeps serving; tried again tomorrow
            log.warning("pruning sign-in records failed", exc_info=True)
        await asyncio.sleep(every.total_seconds())


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the embedded stack owns Ctrl-C."""

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


async def serve(settings: Settings, client: Client, store: CaseStore, host: str = "127.0.0.1",
                port: int = DEFAULT_WEB_PORT, **options: Any) -> None:
    """Serve the interface in the running event loop until cancelled (`options` go to build_app)."""
    app = build_app(settings, client, store, **options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            server_header=False, proxy_headers=False, lifespan="off")
    server = _Server(config)
    task = asyncio.ensure_future(server.serve())
    chores = asyncio.ensure_future(housekeeping(app.state.web))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True  # a clean shutdown: open requests finish, the port is closed
        await task
        raise
    finally:
        chores.cancel()


__all__ = ["DEFAULT_WEB_PORT", "build_app", "serve", "StoreError"]
