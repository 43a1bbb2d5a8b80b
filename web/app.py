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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import segno
import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from activities.directories import load_address_book
from activities.messages import Composer
from desk import redaction
from desk.cases import COMMENTERS, Desk, Person
from desk.errors import (
    DeskError,
    InvalidRequest,
    NotAllowed,
    NotFound,
    NotSignedIn,
    Rejected,
    Unreachable,
)
from desk.errors import NotFound as DeskNotFound
from desk.export import json_default, trail_csv, trail_entries, trail_json
from desk.outbox import find_message, list_messages
from desk.preview import appeal_letters, information_letters
from desk.queue import CaseQuery, countdown
from desk.requests import request_key
from desk.secrets import SealError, seal, unseal
from domain.addressbook import AddressBook
from domain.decisions import HEAD, OFFICER
from domain.erasure import REASONS as ERASURE_REASONS
from domain.errors import CaseRuleError, InvalidInput
from domain.funds import Fund, Purpose
from domain.intake import (
    DEFENDERS_MAX,
    LINE_MAX,
    NAME_MAX,
    TEXT_MAX,
    intake_problems,
    merge_changes,
    parse_intake,
)
from domain.readiness import missing_fields
from domain.rules import CONSENT_CHANNELS, GIVERS
from domain.users import UnknownUser, UserInactive, UsersRuleError
from domain.view import shown_track
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
from web import auth, drafts
from web.forms import (
    DECISIONS,
    THREAT_QUESTIONS,
    FormError,
    FormErrors,
    available_forms,
    defender_count,
    field_label,
    form_order,
    held_fields,
    intake_changes_from_form,
    intake_error_field,
    intake_from_form,
)
from web.reports import report_routes
from worker.main import composer as worker_composer
from worker.settings import Settings
from workflows.inputs import InformationInput
from workflows.tracks import TrackedCaseWorkflow

log = logging.getLogger("appeals.web")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "web"
STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_WEB_PORT = 8000
COOKIE = "appeals_session"
AUDIT_ROLES = frozenset({"auditor", "head"})
OFFICER_ROLE = "case_officer"
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
# A form's size: far above every field's own limit (the domain's, stated on the forms), so that
# over-long text is refused by the field's check with the text kept, not by the parser.
MAX_FIELD_BYTES = 1024 * 1024
MAX_FORM_FIELDS = 1000
# Forms that come back filled in after their session ended (web.drafts) and what the pages say.
_DRAFTABLE = re.compile(r"^/cases/(new|[A-Za-z0-9-]{1,40}/(decide/[a-z_]{1,40}|comment))$")
DRAFT_KEPT = ("Your session had ended, so the form you sent was not recorded. It is kept: sign in "
              "again and it comes back as you left it.")
# Cases per page of the queue (the inbox): a page stays quick with 10,000 cases in the index.
QUEUE_PAGE = 50
# A decision form's id (web.forms.available_forms), used as the fragment of a redirect.
_ANCHOR = re.compile(r"^form-[a-z0-9_-]{1,120}$")
DRAFT_BACK = "Here is the form you were sending when your session ended; nothing of it was recorded."
DRAFT_NOT_SENT = ("Not sent yet: your session had ended. Check what you wrote and send it again.")
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
        self._tools: tuple[AddressBook, Composer] | None = None  # see _preview_tools
        self.jinja = Environment(loader=FileSystemLoader(TEMPLATES),
                                 autoescape=select_autoescape(default=True, default_for_string=True),
                                 trim_blocks=True, lstrip_blocks=True)
        self.jinja.filters["when"] = _when
        self.jinja.filters["label"] = _label
        self.jinja.filters["event"] = _event
        self.jinja.filters["value"] = _value
        self.jinja.globals.update(
            actions=[a.value for a in Action], outcomes=[o.value for o in Outcome],
            namings=[p.value for p in PublicNaming], verdicts=[v.value for v in Verdict],
            urgencies=[u.value for u in Urgency], genders=[g.value for g in Gender],
            perpetrator_kinds=[p.value for p in PerpetratorKind],
            threat_types=[t.value for t in ThreatType], rights=[r.value for r in Right],
            groups=[g.value for g in AtRiskGroup], stages=[s.value for s in Stage],
            threat_questions=THREAT_QUESTIONS,
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
            ended = request.session.get("sid")
            ctx = await self.current(request)
            if ctx is None:
                if request.method == "POST" and isinstance(ended, str):
                    kept = await self._keep_draft(request, ended)
                    if kept is not None:
                        request.session["draft"] = kept
                return RedirectResponse("/sign-in", status_code=303)
            if ctx.enrol and not enrolling:
                return RedirectResponse("/account/second-factor", status_code=303)
            form = None
            if request.method == "POST":
                try:
                    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS,
                                              max_part_size=MAX_FIELD_BYTES)
                except MultiPartException:
                    # Beyond what any field may hold, so the text could not be kept: say so.
                    return self.render(request, ctx, "error.html", 413, title="Too much text",
                                       message=f"A field of the form held more than "
                                       f"{MAX_FIELD_BYTES // (1024 * 1024)} MiB of text; nothing "
                                       "was recorded. Go back (your browser keeps what you "
                                       "typed), shorten the longest text and send it again.")
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

    # ------------------------------------------------------------- forms across a sign-in
    async def _keep_draft(self, request: Request, ended: str) -> str | None:
        """A form sent after its session ended by itself (web.drafts): kept for its owner when it
        came from that session's page and is one that comes back filled in (a new case, a
        decision, a comment); the draft's token, else None."""
        if not _DRAFTABLE.match(request.url.path):
            return None
        try:
            form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS,
                                      max_part_size=MAX_FIELD_BYTES)
        except MultiPartException:
            return None
        token = form.get("csrf_token")
        if not auth.tokens_match(auth.csrf_for(self.session_key, ended),
                                 token if isinstance(token, str) else None):
            return None
        owner = await asyncio.to_thread(drafts.ended_session_owner, self.store, ended)
        if owner is None:
            return None
        fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"]
        return await asyncio.to_thread(drafts.save_draft, self.store, self.gate.totp_key, owner,
                                       request.url.path, fields, self.clock())

    async def _send_back(self, ctx: Ctx, path: str, kind: str, state: dict[str, Any], code: int,
                         anchor: str = "") -> Response:
        """Post/redirect/get for a form that was refused (or a preview): what its page shows is
        kept (web.drafts.save_returned) and the browser is sent to `path?form=<token>`, which
        shows it with `code`. Back or Reload then never sends the form again."""
        token = await asyncio.to_thread(drafts.save_returned, self.store, self.gate.totp_key,
                                        ctx.username, path, {"kind": kind, **state}, code,
                                        self.clock())
        return RedirectResponse(f"{path}?form={token}" + (f"#{anchor}" if anchor else ""),
                                status_code=303)

    async def _forget_returned(self, ctx: Ctx, path: str) -> None:
        """A form of the page at `path` went through: its earlier refusals no longer hold."""
        await asyncio.to_thread(drafts.drop_returned, self.store, ctx.username, path)

    async def _returned(self, request: Request, ctx: Ctx) -> tuple[dict[str, Any], int] | None:
        """The state a refused form left for this page (`?form=`), if it is this person's."""
        token = request.query_params.get("form")
        if request.method != "GET" or not token:
            return None
        return await asyncio.to_thread(drafts.read_returned, self.store, self.gate.totp_key, token,
                                       ctx.username, request.url.path, self.clock())

    async def _draft(self, request: Request, ctx: Ctx) -> tuple[str, FormData] | None:
        """The draft named in the query (`?draft=`), if it is this person's: its path and fields
        (taken: it comes back once)."""
        token = request.query_params.get("draft")
        if not token:
            return None
        taken = await asyncio.to_thread(drafts.take_draft, self.store, self.gate.totp_key, token,
                                        ctx.username, self.clock())
        if taken is None:
            return None
        path, fields = taken
        request.session["flash"] = DRAFT_BACK
        items: list[tuple[str, str | UploadFile]] = list(fields)
        return path, FormData(items)

    # --------------------------------------------------------------------------- sign-in
    async def sign_in_page(self, request: Request) -> Response:
        if await self.current(request) is not None:
            return RedirectResponse("/", status_code=303)
        request.session.setdefault("csrf", auth.new_token())
        if request.session.get("draft"):
            return self.render(request, None, "sign_in.html", message=DRAFT_KEPT)
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
        draft = request.session.get("draft")
        try:  # a new session (and CSRF token) at every sign-in
            await self.start_session(request, username, enrol=outcome.enrol)
        except (UnknownUser, UserInactive):  # deactivated meanwhile
            return self.render(request, None, "sign_in.html", 401, error=auth.GENERIC_REFUSAL,
                               username=username)
        if outcome.enrol:
            return RedirectResponse("/account/second-factor", status_code=303)
        if isinstance(draft, str):  # back to the form that was being sent, filled in
            return RedirectResponse(_draft_page(draft, await asyncio.to_thread(
                drafts.draft_path, self.store, draft, username)), status_code=303)
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
        """What waits for me, then the queue: every case the filters (query parameters, so a
        filtered list is a shareable link; desk.queue) let through, with country, threat types,
        the stage of each action, the next deadline as a countdown and who holds the case. No
        defender names here (need to know): the case page has them."""
        now = self.clock()
        desk = self.desk
        # The soonest; all of them: the "waiting for me" filter.
        pending, all_waiting = await asyncio.to_thread(self.store.pending_page, ctx.username,
                                                       now, limit=QUEUE_PAGE)
        for c in pending:
            c["countdown"] = countdown(c["next_deadline"], now)
        filter_error = None
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
        try:
            query = CaseQuery.from_params(params)
            page = _page_number(request.query_params.get("page"))
        except InvalidRequest as exc:
            query, page = CaseQuery(state="open"), 1
            filter_error = f"The filter “{exc.field}” {exc.reason}; nothing was listed."
        cases, total = ([], 0) if filter_error else await asyncio.to_thread(
            desk.case_page, query, Person(ctx.username), page, QUEUE_PAGE)
        by_stage, by_risk = await asyncio.to_thread(self.store.open_case_counts)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        pages = max(1, -(-total // QUEUE_PAGE))
        pager = {"page": page, "pages": pages, "total": total,
                 "first": (page - 1) * QUEUE_PAGE + 1, "last": (page - 1) * QUEUE_PAGE + len(cases),
                 "previous": urlencode({**query.params(), "page": str(page - 1)})
                 if page > 1 else None,
                 "next": urlencode({**query.params(), "page": str(page + 1)})
                 if page < pages else None}
        return self.render(request, ctx, "inbox.html", 400 if filter_error else 200,
                           pending=pending, cases=cases, by_stage=by_stage, by_risk=by_risk,
                           now=now, query=query, filter_error=filter_error, back=here,
                           may_claim=OFFICER in ctx.roles, pager=pager,
                           more_waiting=all_waiting - len(pending))

    # ------------------------------------------------------------ who holds a case (queue)
    async def holder_page(self, request: Request, ctx: Ctx, form: FormData | None, *,
                          status_code: int = 200, error: str | None = None) -> Response:
        """Who holds the case; claim it (a case officer), or hand it to another case officer
        (a head, or the holder)."""
        reference = request.path_params["reference"]
        desk = self.desk
        try:
            case = await asyncio.to_thread(desk.stored_case, reference)
        except DeskNotFound:
            return self.not_found(request, ctx, "This case")
        officers = await asyncio.to_thread(desk.officers)
        trail = await asyncio.to_thread(desk.trail, reference)
        changes = [e for e in trail if e.event in ("Opened", "CaseClaimed", "CaseReassigned")]
        return self.render(request, ctx, "holder.html", status_code, reference=reference,
                           holder=case.assignee, closed=bool(case.is_closed),
                           tracked=hasattr(case, "tracks"), changes=changes, error=error,
                           officers=[o for o in officers if o != case.assignee],
                           may_claim=OFFICER in ctx.roles and case.assignee != ctx.username,
                           may_assign=HEAD in ctx.roles or case.assignee == ctx.username,
                           request_id=uuid.uuid4().hex)

    async def claim(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        return await self._change_holder(request, ctx, form, None)

    async def assign(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        assert form is not None
        return await self._change_holder(request, ctx, form, str(form.get("holder") or ""))

    async def _change_holder(self, request: Request, ctx: Ctx, form: FormData | None,
                             holder: str | None) -> Response:
        """Claim (holder None) or reassign through the desk; then back where the form was
        (post/redirect/get), or the holder page with the refusal."""
        assert form is not None
        reference = request.path_params["reference"]
        desk, person = self.desk, Person(ctx.username)
        key = str(form.get("request_id") or "") or f"web-holder-{uuid.uuid4().hex}"
        try:
            if holder is None:
                summary = await desk.claim(person, reference, request_id=key)
            else:
                summary = await desk.reassign(person, reference, holder, request_id=key)
        except DeskNotFound:
            return self.not_found(request, ctx, "This case")
        except DeskError as exc:
            code = {NotAllowed: 403, InvalidRequest: 422}.get(type(exc), 409)
            what = "claimed" if holder is None else "reassigned"
            return await self.holder_page(request, ctx, form, status_code=code,
                                          error=f"The case was not {what}: {exc.message}")
        request.session["flash"] = f"{reference} is now held by {summary['assignee']}."
        return RedirectResponse(_back(form.get("back"), f"/cases/{reference}/holder"),
                                status_code=303)

    # --------------------------------------------------------------------------- new case
    def intake_form(self, request: Request, ctx: Ctx, code: int = 200, *, request_id: str,
                    values: dict[str, Any] | None = None, lists: dict[str, Any] | None = None,
                    errors: dict[str, str] | None = None, slots: int = 1) -> HTMLResponse:
        """The new-case form, carrying its one-time request id (a hidden field). With errors:
        every one at once, each at its field and in a summary at the top (which takes the focus)
        linking to it."""
        errors = errors or {}
        errors = dict(sorted(errors.items(), key=lambda item: form_order(item[0])))
        summary = [(name, field_label(name), reason) for name, reason in errors.items()
                   if name != "_form"]
        return self.render(request, ctx, "new_case.html", code, values=values or {},
                           lists=lists or {}, errors=errors, request_id=request_id,
                           summary=summary, slots=slots, field_label=field_label,
                           limits={"line": LINE_MAX, "text": TEXT_MAX, "name": NAME_MAX})

    async def new_case_page(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        returned = await self._returned(request, ctx)
        if returned is not None:  # the form as it was sent, refused (new_case's `again`)
            state, code = returned
            given = state.get("request_id")
            return self.intake_form(
                request, ctx, code, values=state.get("values") or {},
                lists=state.get("lists") or {}, errors=state.get("errors") or {},
                request_id=given if isinstance(given, str) and _REQUEST_ID.match(given)
                else new_request_id(), slots=int(state.get("slots") or 1))
        draft = await self._draft(request, ctx)
        if draft is not None and draft[0] == "/cases/new":
            kept = draft[1]
            given = kept.get("request_id")
            return self.intake_form(
                request, ctx, request_id=given if isinstance(given, str)
                and _REQUEST_ID.match(given) else new_request_id(),
                values={k: v for k, v in kept.items() if isinstance(v, str) and k != "request_id"},
                lists={k: kept.getlist(k) for k in kept if k.endswith(
                    ("at_risk_groups", "threat_types", "rights_affected"))},
                slots=defender_count(kept))
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
        valid_id = isinstance(given, str) and bool(_REQUEST_ID.match(given))
        request_id = given if isinstance(given, str) and valid_id else new_request_id()
        slots = defender_count(form)

        def again(code: int, errors: dict[str, str], *, fresh: bool = False,
                  anchor: str = "") -> Awaitable[Response]:
            """The form again, as typed, with its request id (a new one when `fresh`), through
            a redirect (post/redirect/get: Back or Reload never sends it again)."""
            if errors:
                anchor = "form-error" if "_form" in errors else "error-summary"
            return self._send_back(ctx, "/cases/new", "intake", {
                "values": values, "lists": lists, "errors": errors, "slots": slots,
                "request_id": new_request_id() if fresh else request_id}, code, anchor)

        if not valid_id:
            return await again(422, {"_form": (
                "The form had no valid request id (it may be an old copy of the page); nothing "
                "was opened. Check the fields and open the case again.")})
        if form.get("add_defender"):  # one more defender section; nothing is checked yet
            slots = min(slots + 1, DEFENDERS_MAX)
            return await again(200, {}, anchor=f"defender-{slots}")
        problems: dict[str, str] = {}
        raw = intake_from_form(form, problems)
        for problem in intake_problems(raw, today=self.clock().date()):
            problems.setdefault(intake_error_field(problem.field), problem.reason)
        if problems:
            return await again(422, problems)
        key = request_key("web", ctx.username, OPEN_COMMAND, {}, given=request_id)
        try:
            opened = await self.desk.open_case(Person(ctx.username), raw, request_id=key)
        except InvalidRequest as exc:  # the intake, checked by the desk: nothing was opened
            if exc.field in _NOT_INTAKE_FIELDS:
                return await again(422, {"_form": desk_failure(exc)[2]})
            return await again(422, {intake_error_field(exc.field): exc.reason})
        except Unreachable as exc:  # the same form again (same request id) is safe
            return await again(503, {"_form": desk_failure(exc)[2]})
        except Rejected as exc:  # not opened: the form, corrected, is a new request
            return await again(409, {"_form": desk_failure(exc)[2]}, fresh=True)
        await self._forget_returned(ctx, "/cases/new")
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
                        status_code: int = 200, form_error: dict[str, Any] | None = None,
                        held_error: dict[str, Any] | None = None,
                        preview: dict[str, Any] | None = None,
                        comment: dict[str, Any] | None = None,
                        erase_error: str | None = None) -> Response:
        reference = request.path_params["reference"]
        case = await asyncio.to_thread(self.desk.stored_case, reference)  # CaseNotFound: 404
        returned = await self._returned(request, ctx)
        if returned is not None:  # a refused form (or a preview) sent back here (_send_back)
            state, status_code = returned
            kind = state.pop("kind", "")
            if kind == "decision":
                form_error = state
            elif kind == "held":
                held_error = state
            elif kind == "comment":
                comment = state
            elif kind == "preview":
                preview = {**state, "letters": None}
                if state.get("compose"):
                    _, composer = self._preview_tools()
                    preview["letters"] = information_letters(
                        case, state["values"].get("send_to") or [],
                        str(state["values"].get("information") or "").strip(), composer)
        draft = await self._draft(request, ctx) if request.method == "GET" else None
        if draft is not None:
            path, kept = draft
            values: dict[str, Any] = {k: v for k, v in kept.items() if k != "csrf_token"}
            if path == f"/cases/{reference}/comment":
                comment = {"text": values.get("comment", ""), "error": DRAFT_NOT_SENT,
                           "request_id": values.get("request_id") or uuid.uuid4().hex}
            elif path.startswith(f"/cases/{reference}/decide/"):
                values["send_to"] = kept.getlist("send_to")
                form_error = {"name": path.rsplit("/", 1)[1], "action": values.get("action") or None,
                              "fund": values.get("fund") or None, "message": DRAFT_NOT_SENT,
                              "values": values, "update_id": values.get("update_id") or ""}
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
                           applications=applications,
                           chain=chain, forms=forms,
                           reference=reference, rejected=rejected,
                           may_audit=bool(ctx.roles & AUDIT_ROLES), now=now,
                           now_local=now.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
                           comment=comment or {"request_id": uuid.uuid4().hex},
                           may_comment=bool(ctx.roles & set(COMMENTERS)),
                           activity=activity(redaction.redact(trail, reveal=False)),
                           erasure=await self._erasure(reference, ctx, view, erase_error),
                           **self._page_parts(case, status, forms, ctx, held_error, preview))

    async def _erasure(self, reference: str, ctx: Ctx, view: dict[str, Any],
                       error: str | None) -> dict[str, Any] | None:
        """The erasure panel of a closed case, for heads: ask for it, or confirm another head's
        request (desk.cases.Desk.erase); None for everyone else and for open cases."""
        if HEAD not in ctx.roles or view.get("stage") != "closed":
            return None
        record = await asyncio.to_thread(self.store.erasure, reference)
        return {"record": record.public() if record is not None else None, "error": error,
                "reasons": list(ERASURE_REASONS),
                "retention_days": getattr(self.settings, "erasure_retention_days", 365)}

    async def erase(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """A head asks for (or, another head having asked, confirms) the erasure of a closed
        case; once erased, the case page cannot be read: on to its audit trail."""
        assert form is not None
        reference = request.path_params["reference"]
        try:
            result = await self.desk.erase(Person(ctx.username), reference,
                                           reason_code=str(form.get("reason_code") or ""),
                                           reason=str(form.get("reason") or ""))
        except DeskNotFound:
            return self.not_found(request, ctx, "This case")
        except DeskError as exc:
            code = {NotAllowed: 403, InvalidRequest: 422}.get(type(exc), 409)
            # (An erased case's page says it was erased, whatever the form.)
            return await self.case_page(request, ctx, None, status_code=code,
                                        erase_error=f"Nothing was erased: {exc.message}")
        if result["state"] == "erased":
            request.session["flash"] = (f"{reference} is erased: its key is destroyed and its "
                                        "Temporal history deleted; the trail shows the erasure.")
            return RedirectResponse(f"/cases/{reference}/audit", status_code=303)
        request.session["flash"] = (f"The erasure of {reference} is asked for; another head "
                                    "must confirm it.")
        return RedirectResponse(f"/cases/{reference}#erasure", status_code=303)

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
            """Back to the case page (post/redirect/get) with the message at the decision's
            form; the form keeps what was typed, and its update id unless `update` gives a new
            one."""
            error = {"name": decision.name, "action": action or None, "fund": fund or None,
                     "message": message, "values": values, "update_id": update}
            anchor = "form-" + "-".join(str(k) for k in (decision.name, action, fund) if k)
            return self._send_back(ctx, f"/cases/{reference}", "decision", error, code,
                                   anchor if _ANCHOR.match(anchor) else "")

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
        await self._forget_returned(ctx, f"/cases/{reference}")
        request.session["flash"] = f"Recorded: {decision.label.lower()}."
        return RedirectResponse(f"/cases/{reference}", status_code=303)

    # ------------------------------------------------- held messages, previews (case page)
    def _preview_tools(self) -> tuple[AddressBook, Composer]:
        """The address book and composer the worker sends with (worker.main), loaded once."""
        if self._tools is None:
            self._tools = (load_address_book(self.settings.address_book_path),
                           worker_composer(self.settings))
        return self._tools

    def _page_parts(self, case: Any, status: dict[str, Any] | None, forms: list[dict[str, Any]],
                    ctx: Ctx, held_error: dict[str, Any] | None,
                    preview: dict[str, Any] | None) -> dict[str, Any]:
        """What the case page shows beside the decision forms: the form of the fields held
        messages lack, the letters a clearance lets go, the preview of further information."""
        closed = (status or {}).get("stage") == "closed" or getattr(case, "is_closed", False)
        held = held_fields(status, case.intake) if status and not closed else []
        for f in forms:
            if f["name"] == "clearance" and f.get("action"):
                book, composer = self._preview_tools()
                f["letters"] = appeal_letters(case, f["action"], book, composer)
            if f["name"] == "information" and preview is not None:
                f["values"] = preview["values"]
                f["update_id"] = preview["update_id"]
                f["preview"] = preview["letters"]
                f["error"] = preview.get("error")
        return {"held_fields": held, "held_error": held_error,
                "may_complete": bool(held) and OFFICER_ROLE in ctx.roles,
                "held_update_id": uuid.uuid4().hex,
                "shown_track": shown_track}

    async def add_comment(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """An internal comment on the case, through the desk; back to the case's activity
        (post/redirect/get), or the case page with the text kept and the reason it was refused."""
        assert form is not None
        reference = request.path_params["reference"]
        text = str(form.get("comment") or "")
        request_id = str(form.get("request_id") or "")
        if not _UPDATE_ID.match(request_id):
            request_id = uuid.uuid4().hex
        try:
            await self.desk.comment(Person(ctx.username), reference, text,
                                             request_id=f"web-comment-{request_id}")
        except DeskNotFound:
            return self.not_found(request, ctx, "This case")
        except DeskError as exc:
            code = {NotAllowed: 403, InvalidRequest: 422}.get(type(exc), 409)
            message = (f"the {_label(exc.field)} {exc.reason}." if isinstance(exc, InvalidRequest)
                       else exc.message)
            return await self._send_back(ctx, f"/cases/{reference}", "comment", {
                "text": text, "error": f"The comment was not added: {message}",
                "request_id": request_id}, code, "comment-form")
        await self._forget_returned(ctx, f"/cases/{reference}")
        request.session["flash"] = "Your comment is added to the case's activity."
        return RedirectResponse(f"/cases/{reference}#activity", status_code=303)

    async def complete_held(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        """The fields held messages lack, completed on the case page: validated as the intake is,
        recorded as further information with those intake changes (sent to nobody); the workflow
        then composes and sends each held message, or holds it again naming what is missing."""
        assert form is not None
        reference = request.path_params["reference"]
        case = await asyncio.to_thread(self.desk.stored_case, reference)  # CaseNotFound: 404
        status = await self._status(reference)
        fields = held_fields(status, case.intake) if status else []
        values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
        update_id = str(form.get("update_id") or "")
        if not _UPDATE_ID.match(update_id):
            update_id = uuid.uuid4().hex

        def failed(errors: dict[str, str], code: int) -> Awaitable[Response]:
            return self._send_back(ctx, f"/cases/{reference}", "held", {
                "errors": errors, "values": values, "update_id": update_id}, code, "form-held")

        if not fields:
            request.session["flash"] = "No message of this case is held for missing fields."
            return RedirectResponse(f"/cases/{reference}", status_code=303)
        try:
            changes = intake_changes_from_form(form, fields, case.intake)
            merged = await asyncio.to_thread(parse_intake, merge_changes(case.intake, changes),
                                             today=self.clock().date())
        except FormErrors as err:
            return await failed(err.errors, 422)
        except InvalidInput as err:
            return await failed({err.field: err.reason}, 422)
        except CaseRuleError as err:
            return await failed({"_form": err.message}, 422)
        actions = sorted({a for f in fields for a in f["actions"]})
        still = sorted({p for a in actions for p in missing_fields(a, merged)} & {
            f["path"] for f in fields})
        if still:
            return await failed({p: "is still missing" for p in still}, 422)
        arg = InformationInput(ctx.username, "Completed on the case page for the held "
                               "message(s): " + ", ".join(f["path"] for f in fields),
                               intake_changes=changes, send_to=[])
        key = request_key("web", ctx.username, "decide add_further_information", {},
                          given=update_id)
        try:
            await self.desk.decide(Person(ctx.username), reference,
                                   TrackedCaseWorkflow.add_further_information, arg,
                                   request_id=key)
        except Rejected as exc:  # nothing recorded: the corrected form is a new request
            update_id = new_request_id()
            return await failed({"_form": exc.message}, 409)
        except (InvalidRequest, Unreachable) as exc:  # the same form again is safe
            code, _, message = desk_failure(exc)
            return await failed({"_form": message}, code)
        await self._forget_returned(ctx, f"/cases/{reference}")
        request.session["flash"] = await self._after_release(reference, actions)
        return RedirectResponse(f"/cases/{reference}#actions", status_code=303)

    async def _after_release(self, reference: str, actions: list[str],
                             seconds: float = 10) -> str:
        """What became of the released messages: sent, held again (naming what is missing), or
        still on their way when the page comes back."""
        tracks: dict[str, Any] = {}
        for _ in range(int(seconds * 5)):
            status = await self._status(reference)
            tracks = (status or {}).get("tracks") or {}
            if all((tracks.get(a) or {}).get("dispatch") != "pending"
                   or (tracks.get(a) or {}).get("step") != "dispatch" for a in actions):
                break
            await asyncio.sleep(0.2)
        said = []
        for a in actions:
            t = tracks.get(a) or {}
            if t.get("dispatch") == "sent":
                said.append(f"the message for {_label(a)} was sent")
            elif t.get("held"):
                said.append(f"the message for {_label(a)} is still held: missing "
                            + ", ".join(t["held"]))
            else:
                said.append(f"the message for {_label(a)} is being sent")
        return "Recorded: the intake is completed; " + "; ".join(said) + "."

    async def preview_information(self, request: Request, ctx: Ctx,
                                  form: FormData | None) -> Response:
        """The further information as it would go to each chosen action's earlier recipients,
        shown before it is sent (the form then sends exactly this, or goes back to editing)."""
        assert form is not None
        reference = request.path_params["reference"]
        await asyncio.to_thread(self.desk.stored_case, reference)  # CaseNotFound: 404
        values: dict[str, Any] = {k: v for k, v in form.items()
                                  if isinstance(v, str) and k != "csrf_token"}
        values["send_to"] = [v for v in form.getlist("send_to") if isinstance(v, str)]
        update_id = str(form.get("update_id") or "")
        if not _UPDATE_ID.match(update_id):
            update_id = uuid.uuid4().hex
        information = str(values.get("information") or "").strip()
        error = None
        if form.get("edit") != "yes" and not information:
            error = "information: write the information first"
        return await self._send_back(ctx, f"/cases/{reference}", "preview", {
            "values": values, "update_id": update_id, "error": error,
            "compose": form.get("edit") != "yes" and error is None},
            422 if error else 200, "form-information")

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


_BACK = re.compile(r"^/(\?[A-Za-z0-9=&%+._~-]*|cases/[A-Za-z0-9-]{1,40}(/holder)?)?$")


def _page_number(value: str | None) -> int:
    """The queue's page (from 1); a clear refusal naming the filter otherwise."""
    if value is None or value == "":
        return 1
    if not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise InvalidRequest("page", "must be a whole number from 1")
    return int(value)


def _back(value: Any, default: str) -> str:
    """Where a form goes back to after it was done: the inbox (with its filters) or a case's
    page, on this site only; anything else goes to `default`."""
    return value if isinstance(value, str) and _BACK.match(value) else default


def _draft_page(token: str, path: str | None) -> str:
    """Where a kept form comes back: the new-case form, or the case page of a decision or a
    comment (the form filled in there); the inbox when the draft is not there any more."""
    if path == "/cases/new":
        return f"/cases/new?draft={token}"
    match = _DRAFTABLE.match(path or "")
    if match and match.group(2):
        return f"/cases/{match.group(1).split('/')[0]}?draft={token}#activity"
    return "/"


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


def _value(value: Any) -> str:
    """A recorded value in words: yes/no, dates in UTC, lists joined, objects as `label: value`
    pairs (never Python's own spelling of them)."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime | date):
        return _when(value)
    if isinstance(value, list | tuple | set):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{_label(k)}: {_value(v)}" for k, v in value.items())
    return str(value)


# What the case page's activity shows of each event: its words (what was decided, said or sent),
# not its machinery; the verification by its verdict and scores; never the intake (the case page
# shows the facts) nor the consent records (shown per action).
ACTIVITY_KEYS = ("outcome", "summary", "information", "comment", "reason", "conditions",
                 "recipient", "recipients", "send_to", "holder", "previous", "reprisals",
                 "warning", "level", "step", "until", "fund", "funds", "missing")
VERIFICATION_KEYS = ("verdict", "probability", "impact", "public_action_advised")


def activity(trail: Iterable[Any]) -> list[dict[str, Any]]:
    """The case's events (already redacted for need to know), newest first, each with its
    labelled lines."""
    items = []
    for e in trail:
        details = e.details or {}
        lines = [(key, details[key]) for key in ACTIVITY_KEYS if key in details]
        verification = details.get("verification")
        if isinstance(verification, dict):
            lines = [(key, verification.get(key)) for key in VERIFICATION_KEYS] + lines
        items.append({"at": e.at, "actor": e.actor, "event": e.event, "version": e.version,
                      "action": details.get("action"),
                      "lines": [(_label(k), _value(v)) for k, v in lines if v not in (None, "")]})
    return list(reversed(items))


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
        Route("/cases/{reference}/complete", p(web.complete_held, officers), methods=["POST"]),
        Route("/cases/{reference}/preview/information", p(web.preview_information, officers),
              methods=["POST"]),
        Route("/cases/{reference}/comment", p(web.add_comment, COMMENTERS), methods=["POST"]),
        Route("/cases/{reference}/erase", p(web.erase, [HEAD]), methods=["POST"]),
        Route("/cases/{reference}/holder", p(web.holder_page), methods=["GET"]),
        Route("/cases/{reference}/claim", p(web.claim, officers), methods=["POST"]),
        Route("/cases/{reference}/assign", p(web.assign, [*officers, REVEAL_ROLE]),
              methods=["POST"]),
        Route("/audit", p(web.audit_index, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit", p(web.audit, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit/print", p(web.audit, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit/reveal", p(web.audit_reveal, [REVEAL_ROLE]), methods=["POST"]),
        Route("/cases/{reference}/audit.{format:str}", p(web.audit_export, auditors), methods=["GET"]),
        Route("/outbox", p(web.outbox_page), methods=["GET"]),
        Route("/outbox/{key}", p(web.outbox_message), methods=["GET"]),
        # Reports across cases and the head's dashboard (web.reports).
        *report_routes(web, p),
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
            counts["drafts"] = await asyncio.to_thread(drafts.prune_drafts, web.store, web.clock())
            log.info("pruned %s sign-in attempts, %s sessions, %s known addresses, %s drafts",
                     counts["sign_ins"], counts["sessions"], counts["addresses"],
                     counts["drafts"])
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
