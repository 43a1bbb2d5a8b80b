"""The staff web interface: Starlette, server-rendered Jinja2 pages, no JavaScript needed.

Every decision goes to the case workflow as an update (the workflow and its activity check the rules
and the roles again); reads come from the event store (facts, trail, chain) and the workflow's status
query (what the case waits for). Pages carry case references only in their URLs, never names.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import io
import json
import logging
import mailbox
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from activities.directories import load_fund_directory
from activities.messages import MessageError
from cli.casework import find_fund, fund_advice, fund_application, signing_client, tracks_start
from domain.errors import CaseRuleError, InvalidInput
from domain.funds import Fund, Purpose
from domain.intake import parse_intake
from domain.rules import CONSENT_CHANNELS, GIVERS
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
from workflows.tracks import TrackedCaseWorkflow

log = logging.getLogger("appeals.web")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "web"
STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_WEB_PORT = 8000
COOKIE = "appeals_session"
AUDIT_ROLES = frozenset({"auditor", "head"})
REFERENCE_PREFIX = "UA"
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
_UPDATE_ID = re.compile(r"^[0-9a-f]{32}$")
_REF_NUMBER = re.compile(r"^UA-(\d{4})-(\d{4,6})$")


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
    sid: str


Handler = Callable[[Request, Ctx, FormData | None], Awaitable[Response]]

# The person signed in for the request being served: the only one the web signs decisions for.
_SIGNED_IN: ContextVar[Ctx | None] = ContextVar("signed_in", default=None)


def _identity(arg: Any) -> tuple[str, list[str]] | None:
    """Who signs this input (desk.signing): the signed-in person, and only for their own name."""
    ctx = _SIGNED_IN.get()
    if ctx is None or getattr(arg, "actor", None) != ctx.username:
        return None
    return ctx.username, sorted(ctx.roles)


class WebApp:
    def __init__(self, settings: Settings, client: Client, store: CaseStore, *,
                 outbox: Path | None, throttle: auth.ThrottlePolicy,
                 clock: Callable[[], datetime], second_factor_roles: frozenset[str],
                 sessions: auth.SessionRegistry, funds: list[Fund] | None = None) -> None:
        self.settings = settings
        self.funds = funds if funds is not None else load_fund_directory()
        # Openings and decisions go through a client that signs them for the signed-in person
        # (checked by the worker); reads use the plain client.
        self.signing = signing_client(client, settings.decision_signing_key(), _identity)
        self.client = client
        self.store = store
        self.outbox = outbox
        self.throttle = throttle
        self.clock = clock
        self.second_factor_roles = second_factor_roles
        self.sessions = sessions
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

    async def current(self, request: Request) -> Ctx | None:
        sid = request.session.get("sid")
        session = self.sessions.get(sid if isinstance(sid, str) else None)
        if session is None:
            return None
        user = await asyncio.to_thread(self.store.user, session.username)
        if user is None or not user["active"]:
            self.sessions.end(sid if isinstance(sid, str) else None)
            return None
        assert isinstance(sid, str)
        return Ctx(session.username, user["display_name"], set(user["roles"]), session.csrf, sid)

    def page(self, handler: Handler, roles: Iterable[str] | None = None) -> Callable[[Request],
                                                                                      Awaitable[Response]]:
        """Signed-in users only (others go to sign-in); roles if given; a CSRF token on every POST."""
        allowed = frozenset(roles) if roles is not None else None

        async def endpoint(request: Request) -> Response:
            ctx = await self.current(request)
            if ctx is None:
                return RedirectResponse("/sign-in", status_code=303)
            form = None
            if request.method == "POST":
                form = await request.form(max_files=0, max_fields=400, max_part_size=64 * 1024)
                token = form.get("csrf_token")
                if not auth.tokens_match(ctx.csrf, token if isinstance(token, str) else None):
                    return self.forbidden(request, ctx, "The form had no valid security token. Reload the "
                                                        "page and try again.")
            if allowed is not None and not ctx.roles & allowed:
                return self.forbidden(request, ctx, "Your role does not allow this page.")
            return await handler(request, ctx, form)

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
        error = await self._check_sign_in(username, password, code)
        if error is not None:
            return self.render(request, None, "sign_in.html", 401 if "wait" not in error else 429,
                               error=error, username=username)
        self.sessions.end(request.session.get("sid"))
        request.session.clear()  # a new session (and CSRF token) at every sign-in
        sid, _ = self.sessions.start(username)
        request.session["sid"] = sid
        return RedirectResponse("/", status_code=303)

    async def _check_sign_in(self, username: str, password: str, code: str) -> str | None:
        """None when the user may sign in; otherwise the message to show (and the failure is recorded)."""
        now = self.clock()
        store = self.store
        if not username or not password:
            return "Enter your user name and password."
        failures, last = await asyncio.to_thread(store.failed_sign_ins, username)
        wait = self.throttle.wait(failures, last, now)
        if wait > 0:
            await asyncio.to_thread(store.record_sign_in, username, now, ok=False, reason="throttled")
            minutes = max(1, round(wait / 60)) if wait >= 90 else None
            after = f"{minutes} minutes" if minutes else f"{int(wait) + 1} seconds"
            return (f"Too many failed sign-ins for this user name. Please wait {after} before trying "
                    "again; every try before then is refused, even with the right password.")
        stored = await asyncio.to_thread(store.password_hash, username)
        if not await asyncio.to_thread(auth.check_password, stored, password):
            await asyncio.to_thread(store.record_sign_in, username, now, ok=False, reason="password")
            return "The user name or password is wrong."
        roles = await asyncio.to_thread(store.user_roles, username)
        secret = await asyncio.to_thread(store.totp_secret, username)
        if secret is None and roles & self.second_factor_roles:
            await asyncio.to_thread(store.record_sign_in, username, now, ok=False, reason="no_second_factor")
            return ("Your role needs a second factor (a one-time code app) and none is set up for you. "
                    "Ask the head of secretariat to set it up.")
        if secret is not None and not auth.check_totp(secret, code, now):
            await asyncio.to_thread(store.record_sign_in, username, now, ok=False, reason="second_factor")
            return ("Enter the current 6-digit code from your authenticator app." if not code.strip()
                    else "The one-time code is wrong or expired.")
        if failures:
            await asyncio.to_thread(store.record_sign_in, username, now, ok=True)
        return None

    async def sign_out(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        self.sessions.end(ctx.sid)
        request.session.clear()
        request.session["csrf"] = auth.new_token()
        return self.render(request, None, "sign_in.html", message="You are signed out.")

    # ------------------------------------------------------------------------------ inbox
    async def inbox(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        now = self.clock()
        pending = await asyncio.to_thread(self.store.pending_for, ctx.username, now)
        cases = [c for c in await asyncio.to_thread(self.store.list_cases) if c["stage"] != "closed"]
        for c in cases:
            c["overdue"] = bool(c["next_deadline"] and c["next_deadline"] < now)
        by_stage = Counter(c["stage"] for c in cases)
        by_risk = Counter(c["risk_level"] or c["urgency"] for c in cases)
        return self.render(request, ctx, "inbox.html", pending=pending, cases=cases,
                           by_stage=by_stage, by_risk=by_risk, now=now)

    # --------------------------------------------------------------------------- new case
    async def new_case_page(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        return self.render(request, ctx, "new_case.html", values={}, errors={}, lists={})

    async def new_case(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        assert form is not None
        values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
        lists = {k: form.getlist(k) for k in form if k.endswith(("at_risk_groups", "threat_types",
                                                                "rights_affected"))}
        try:
            raw = intake_from_form(form)
            await asyncio.to_thread(parse_intake, raw, today=self.clock().date())
        except InvalidInput as err:
            return self.render(request, ctx, "new_case.html", 422, values=values, lists=lists,
                               errors={intake_error_field(err.field): err.reason})
        except CaseRuleError as err:
            field, _, reason = err.message.partition(": ")
            return self.render(request, ctx, "new_case.html", 422, values=values, lists=lists,
                               errors={intake_error_field(field): reason or err.message})
        reference = None
        first = await self._next_number()
        for attempt in range(20):
            # A number may be taken in Temporal before the store knows it (a case being opened).
            candidate = f"{REFERENCE_PREFIX}-{self.clock().year}-{first + attempt:04d}"
            signed_in = _SIGNED_IN.set(ctx)
            try:
                await self.signing.start_workflow(
                    TrackedCaseWorkflow.run,
                    tracks_start(candidate, raw, ctx.username, self.settings), id=candidate,
                    task_queue=self.settings.task_queue)
            except WorkflowAlreadyStartedError:
                continue
            except RPCError:
                return self.render(request, ctx, "new_case.html", 503, values=values, lists=lists,
                                   errors={"_form": "The workflow service is not reachable; nothing was "
                                                    "opened. Try again in a moment."})
            finally:
                _SIGNED_IN.reset(signed_in)
            reference = candidate
            break
        if reference is None:
            return self.render(request, ctx, "new_case.html", 409, values=values, lists=lists,
                               errors={"_form": "No free case reference was found; try again."})
        await self._wait_opened(reference)
        request.session["flash"] = f"Case {reference} opened."
        return RedirectResponse(f"/cases/{reference}", status_code=303)

    async def _next_number(self) -> int:
        year = self.clock().year
        taken = [int(m.group(2)) for c in await asyncio.to_thread(self.store.list_cases)
                 if (m := _REF_NUMBER.match(c["reference"])) and int(m.group(1)) == year]
        return max(taken, default=0) + 1

    async def _wait_opened(self, reference: str, seconds: float = 15) -> None:
        for _ in range(int(seconds * 10)):
            try:
                await asyncio.to_thread(self.store.get, reference)
                return
            except CaseNotFound:
                await asyncio.sleep(0.1)

    # -------------------------------------------------------------------------- case page
    async def _status(self, reference: str) -> dict[str, Any] | None:
        try:
            handle = self.client.get_workflow_handle(reference)
            status: dict[str, Any] = await handle.query(TrackedCaseWorkflow.status,
                                                        rpc_timeout=timedelta(seconds=10))
            return status
        except Exception:  # noqa: BLE001 - any failure: the page says the workflow did not answer
            log.warning("status query failed for a case")
            return None

    async def case_page(self, request: Request, ctx: Ctx, form: FormData | None, *,
                        status_code: int = 200, form_error: dict[str, Any] | None = None) -> Response:
        reference = request.path_params["reference"]
        try:
            case = await asyncio.to_thread(self.store.get, reference)
            trail = await asyncio.to_thread(self.store.trail, reference)
        except (CaseNotFound, InvalidInput):
            return self.not_found(request, ctx, "This case")
        chain = await asyncio.to_thread(self.store.verify, reference)
        status = await self._status(reference)
        forms = available_forms(status, ctx.roles, ctx.username) if status else []
        unplaced = form_error
        for f in forms:
            f["update_id"] = uuid.uuid4().hex
            if (form_error and form_error["name"] == f["name"]
                    and form_error.get("action") == f["action"]
                    and form_error.get("fund") == f.get("fund")):
                f["error"] = form_error["message"]
                f["values"] = form_error["values"]
                f["update_id"] = form_error["update_id"]
                unplaced = None
        # A rejected decision whose form is not offered at this stage: said at the top of the page.
        rejected = None
        if unplaced is not None:
            rejected = f"{DECISIONS[unplaced['name']].label} was not recorded: {unplaced['message']}"
        # What the page shows: the workflow's live status, or the store's last summary (closed, or
        # the workflow not answering). Cases with tracks show each action's own step and clock.
        view: dict[str, Any] = status if status and status.get("stage") != "intake" else case.summary()
        now = self.clock()
        advice = applications = None
        tracks = view.get("tracks") or {}
        if view.get("tracked") and Action.EMERGENCY_FUND in tracks:
            advice = fund_advice(case, self.funds, self.settings, now.date())
            applications = self._applications(case, tracks[Action.EMERGENCY_FUND])
        deadline = view.get("deadline")
        if isinstance(deadline, str):
            deadline = datetime.fromisoformat(deadline)
        return self.render(request, ctx, "case.html", status_code, case=case, status=status,
                           view=view, tracked=bool(view.get("tracked")), advice=advice,
                           overdue=bool(deadline and deadline < now),
                           applications=applications, trail=trail, chain=chain, forms=forms,
                           reference=reference, rejected=rejected,
                           may_audit=bool(ctx.roles & AUDIT_ROLES), now=now,
                           now_local=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"))

    def _applications(self, case: Any, track: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The prepared application for each fund that staff submit through its own web form."""
        out: dict[str, dict[str, Any]] = {}
        for fund_id, state in (track.get("funds") or {}).items():
            fund = find_fund(self.funds, fund_id)
            if state not in ("to_submit", "submitted") or fund is None:
                continue
            entry: dict[str, Any] = {"name": fund.name, "form_url": fund.form_url, "state": state}
            try:
                composed = fund_application(case, fund)
                entry.update(subject=composed.subject, text=composed.text)
            except MessageError as exc:  # names the template and value, never case data
                entry["error"] = str(exc)
            out[fund_id] = entry
        return out

    async def decide(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        assert form is not None
        reference = request.path_params["reference"]
        decision = DECISIONS.get(request.path_params["decision"])
        if decision is None:
            return self.not_found(request, ctx, "This decision")
        if not ctx.roles & set(decision.roles):
            return self.forbidden(request, ctx, "Your role does not allow this decision.")
        try:
            await asyncio.to_thread(self.store.get, reference)
        except (CaseNotFound, InvalidInput):
            return self.not_found(request, ctx, "This case")
        update_id = str(form.get("update_id") or "")
        if not _UPDATE_ID.match(update_id):
            update_id = uuid.uuid4().hex
        action = form.get("action") if isinstance(form.get("action"), str) else None
        fund = form.get("fund") if isinstance(form.get("fund"), str) else None
        values: dict[str, Any] = {k: v for k, v in form.items()
                                  if isinstance(v, str) and k != "csrf_token"}
        values["send_to"] = [v for v in form.getlist("send_to") if isinstance(v, str)]

        def failed(message: str, code: int) -> Awaitable[Response]:
            error = {"name": decision.name, "action": action or None, "fund": fund or None,
                     "message": message, "values": values, "update_id": update_id}
            return self.case_page(request, ctx, None, status_code=code, form_error=error)

        try:
            update, arg = decision.build(form, ctx.username)
        except FormError as err:
            return await failed(f"{err.field.replace('_', ' ')}: {err.message}", 422)
        handle = self.signing.get_workflow_handle(reference)
        signed_in = _SIGNED_IN.set(ctx)
        try:
            await handle.execute_update(update, arg, id=f"web-{update_id}",
                                        rpc_timeout=timedelta(seconds=60))
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = getattr(cause, "message", None) or str(cause) or "The workflow refused this decision."
            return await failed(message, 409)
        except RPCError:
            return await failed("The case workflow did not answer; nothing was recorded. Try again "
                                "in a moment.", 503)
        finally:
            _SIGNED_IN.reset(signed_in)
        request.session["flash"] = f"Recorded: {decision.label.lower()}."
        return RedirectResponse(f"/cases/{reference}", status_code=303)

    # ------------------------------------------------------------------------------ audit
    async def audit_index(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        cases = await asyncio.to_thread(self.store.list_cases)
        reports = {c["reference"]: await asyncio.to_thread(self.store.verify, c["reference"])
                   for c in cases}
        return self.render(request, ctx, "audit_index.html", cases=cases, reports=reports)

    async def _audit_data(self, reference: str) -> tuple[Any, Any] | None:
        try:
            trail = await asyncio.to_thread(self.store.trail, reference)
        except (CaseNotFound, InvalidInput):
            return None
        return trail, await asyncio.to_thread(self.store.verify, reference)

    async def audit(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        reference = request.path_params["reference"]
        data = await self._audit_data(reference)
        if data is None:
            return self.not_found(request, ctx, "This case")
        trail, chain = data
        printable = request.url.path.endswith("/print")
        return self.render(request, ctx, "audit.html", reference=reference, trail=trail, chain=chain,
                           printable=printable, generated=self.clock())

    async def audit_export(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        reference = request.path_params["reference"]
        kind = request.path_params["format"]
        data = await self._audit_data(reference) if kind in ("csv", "json") else None
        if data is None:
            return self.not_found(request, ctx, "This export")
        trail, chain = data
        filename = f"{reference}-audit.{kind}"
        disposition = {"content-disposition": f'attachment; filename="{filename}"'}
        events = [{"version": e.version, "at": e.at.isoformat(), "actor": e.actor, "event": e.event,
                   "command_id": e.command_id, "details": e.details} for e in trail]
        if kind == "json":
            body = json.dumps({"reference": reference, "generated_at": self.clock().isoformat(),
                               "chain": {"ok": chain.ok, "events": chain.events,
                                         "broken_version": chain.broken_version, "reason": chain.reason,
                                         "summary": chain.describe()},
                               "events": events}, default=str, ensure_ascii=False, indent=2)
            return Response(body, media_type="application/json", headers=disposition)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["version", "at", "actor", "event", "command_id", "details"])
        for e in events:
            writer.writerow([_cell(e["version"]), _cell(e["at"]), _cell(e["actor"]), _cell(e["event"]),
                             _cell(e["command_id"]),
                             _cell(json.dumps(e["details"], default=str, ensure_ascii=False))])
        writer.writerow([])
        writer.writerow(["chain", _cell(chain.describe())])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=disposition)

    # ----------------------------------------------------------------------------- outbox
    def _messages(self) -> list[tuple[str, EmailMessage]]:
        assert self.outbox is not None
        if not self.outbox.exists():
            return []
        box = mailbox.Maildir(str(self.outbox), factory=None, create=False)
        out = []
        for key in box.iterkeys():
            msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append((key, msg))
        out.sort(key=lambda km: _date(km[1]), reverse=True)
        return out

    async def outbox_page(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        if self.outbox is None:
            return self.not_found(request, ctx, "The outbox (development only)")
        messages = await asyncio.to_thread(self._messages)
        return self.render(request, ctx, "outbox.html", messages=messages, path=self.outbox)

    async def outbox_message(self, request: Request, ctx: Ctx, form: FormData | None) -> Response:
        if self.outbox is None:
            return self.not_found(request, ctx, "The outbox (development only)")
        key = request.path_params["key"]
        found = [m for k, m in await asyncio.to_thread(self._messages) if k == key]
        if not found:
            return self.not_found(request, ctx, "This message")
        msg = found[0]
        part = msg.get_body(preferencelist=("plain",))
        body = part.get_content() if part is not None else ""
        return self.render(request, ctx, "outbox_message.html", key=key, msg=msg, body=body)


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _date(msg: EmailMessage) -> datetime:
    try:
        value = msg["Date"]
        parsed = value.datetime if value is not None else None
    except (TypeError, ValueError, AttributeError):
        parsed = None
    if not isinstance(parsed, datetime):
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
              sessions: auth.SessionRegistry | None = None) -> Starlette:
    """The web interface as an ASGI app.

    - `session_key`: signs the session cookie; default `<var_dir>/keys/web-session.key` (created in
      development, required in production).
    - `outbox`: the Maildir the outbox page shows; True (default) means `<var_dir>/outbox` in
      development and no outbox page in production; None or False: no outbox page.
    - `throttle`, `clock`: the failed sign-in policy and the time it reads (tests pass their own).
    - `second_factor_roles`: roles that must have TOTP set up to sign in; default ministry liaison and
      head in production, none in development. A user with a TOTP secret always needs the code.
    """
    production = settings.environment == "production"
    key = session_key if session_key is not None else auth.session_key(settings.var_dir,
                                                                        settings.environment)
    if outbox is True:
        box: Path | None = None if production else settings.var_dir / "outbox"
    elif outbox is False or outbox is None:
        box = None
    else:
        box = outbox
    if second_factor_roles is None:
        second_factor_roles = auth.SECOND_FACTOR_ROLES if production else ()
    web = WebApp(settings, client, store, outbox=box, throttle=throttle or auth.ThrottlePolicy(),
                 clock=clock, second_factor_roles=frozenset(second_factor_roles),
                 sessions=sessions or auth.SessionRegistry())
    p = web.page
    officers, auditors = ["case_officer"], AUDIT_ROLES
    routes = [
        Route("/sign-in", web.sign_in_page, methods=["GET"]),
        Route("/sign-in", web.sign_in, methods=["POST"]),
        Route("/sign-out", p(web.sign_out), methods=["POST"]),
        Route("/", p(web.inbox), methods=["GET"]),
        Route("/cases/new", p(web.new_case_page, officers), methods=["GET"]),
        Route("/cases/new", p(web.new_case, officers), methods=["POST"]),
        Route("/cases/{reference}", p(web.case_page), methods=["GET"]),
        Route("/cases/{reference}/decide/{decision}", p(web.decide), methods=["POST"]),
        Route("/audit", p(web.audit_index, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit", p(web.audit, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit/print", p(web.audit, auditors), methods=["GET"]),
        Route("/cases/{reference}/audit.{format:str}", p(web.audit_export, auditors), methods=["GET"]),
        Route("/outbox", p(web.outbox_page), methods=["GET"]),
        Route("/outbox/{key}", p(web.outbox_message), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=key if isinstance(key, str) else key.decode(),
                   session_cookie=f"__Host-{COOKIE}" if production else COOKIE,
                   max_age=12 * 3600, same_site="strict", https_only=production),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.web = web
    return app


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
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True  # a clean shutdown: open requests finish, the port is closed
        await task
        raise


__all__ = ["DEFAULT_WEB_PORT", "build_app", "serve", "StoreError"]
