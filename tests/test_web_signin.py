"""Web sign-in that holds (issue 12, item 5): the real app over HTTP (httpx's ASGI transport, with
the client address of each request set as a proxy-less server would see it) on a real SQLite
event store. Sign-in never talks to Temporal, so the app gets a lazy client that is never used.

- Attempts are counted before their password is checked: thirty parallel wrong passwords cost no
  more argon2 verifications than the throttle allows, and only a few at a time.
- Lockouts are per user name and address: the real user at her own address is not held back by
  guesses from elsewhere; the per-account ceiling spares her known address and decays.
- One answer to a wrong password, a wrong code, a reused code and an unknown user.
- TOTP: enrolled on the web page with a QR code and a confirming code; every code is accepted once;
  the secret is sealed in the database (its bytes never hold it); a secret stored in plain text
  before sealing is sealed at its user's next sign-in.
- Sessions are the store's: a password reset, a password change and a deactivation end them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from temporalio.client import Client

from desk.secrets import is_sealed, unseal
from store.app import CaseStore
from tests.workflow_env import add_users
from web import auth, build_app, enable_totp, set_password
from web.auth import GENERIC_REFUSAL, ThrottlePolicy
from worker.settings import Settings, load_settings

PASSWORD = "correct horse battery staple"
SESSION_KEY = "test-session-key-0123456789abcdef0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ERROR = re.compile(r'id="sign-in-error">([^<]*)<')
HOME, AWAY, ELSEWHERE = "203.0.113.7", "198.51.100.9", "192.0.2.44"


@dataclass
class Clock:
    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Site:
    settings: Settings
    store: CaseStore
    client: Client
    clock: Clock
    database: Path
    app: Any = None

    def build(self, **options: Any) -> Any:
        options.setdefault("throttle", ThrottlePolicy())
        self.app = build_app(self.settings, self.client, self.store, session_key=SESSION_KEY,
                             outbox=None, clock=self.clock, **options)
        return self.app

    def browser(self, address: str = HOME) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(address, 50000)),
                                 base_url="http://testserver")

    @property
    def totp_key(self) -> bytes:
        key: bytes = self.app.state.web.gate.totp_key
        return key


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    settings = load_settings(var_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'events.sqlite'}")
    (tmp_path / "var").mkdir()
    store = CaseStore(settings.database_url, settings.event_store_cipher_key())
    add_users(store)
    for username in ("olga", "omar", "lina", "hana", "aldo"):
        set_password(store, username, PASSWORD)
    client = await Client.connect("127.0.0.1:1", lazy=True)  # never used: sign-in is the store's
    s = Site(settings, store, client, Clock(), tmp_path / "events.sqlite")
    s.build()
    try:
        yield s
    finally:
        store.close()


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "no CSRF token on the page"
    return html.unescape(match.group(1))


def error_of(page: str) -> str:
    match = ERROR.search(page)
    assert match, "no sign-in error on the page"
    return html.unescape(match.group(1))


async def sign_in(browser: httpx.AsyncClient, username: str, password: str = PASSWORD,
                  code: str = "") -> httpx.Response:
    page = await browser.get("/sign-in")
    return await browser.post("/sign-in", data={"csrf_token": csrf_of(page.text), "username": username,
                                                "password": password, "code": code})


async def post(browser: httpx.AsyncClient, page_url: str, action: str,
               data: dict[str, str]) -> httpx.Response:
    page = await browser.get(page_url)
    assert page.status_code == 200, page.text
    return await browser.post(action, data={"csrf_token": csrf_of(page.text), **data})


class CountingHasher:
    """The real argon2 hasher, counting the verifications it runs and the most run at once."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = self.running = self.most = 0
        self.lock = threading.Lock()

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))

    def verify(self, hash_: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)  # long enough for parallel attempts to overlap here
            return bool(self.real.verify(hash_, password))
        finally:
            with self.lock:
                self.running -= 1


def session_of(browser: httpx.AsyncClient) -> dict[str, Any]:
    """What the (signed, not encrypted) session cookie carries."""
    data = (browser.cookies.get("appeals_session") or "").split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.b64decode(data + "=" * (-len(data) % 4)))
    return decoded


def reasons(store: CaseStore, username: str) -> list[str]:
    return [row["reason"] for row in store.sign_in_log(username)]


async def enrol(site: Site, browser: httpx.AsyncClient) -> tuple[str, str]:
    """Set up TOTP on the web page as the user would: scan (read the key), confirm with a code;
    the secret and the code that confirmed it."""
    page = await browser.get("/account/second-factor")
    assert page.status_code == 200, page.text
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page.text and 'class="qr"' in page.text
    assert "<script" not in page.text and " style=" not in page.text  # nothing the CSP would block
    key = re.search(r'id="totp-key">([A-Z2-7 ]+)<', page.text)
    assert key
    secret = key.group(1).replace(" ", "")
    code = pyotp.TOTP(secret).at(site.clock())
    response = await browser.post("/account/second-factor",
                                  data={"csrf_token": csrf_of(page.text), "code": code})
    assert response.status_code == 303, response.text
    return secret, code


# ------------------------------------------------------------------------------------ throttle
async def test_thirty_parallel_wrong_passwords_get_at_most_the_allowed_checks(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.build(throttle=ThrottlePolicy(per_pair="5 per 15 minutes", concurrent_checks=2))
    hasher = CountingHasher(auth.HASHER)
    monkeypatch.setattr(auth, "HASHER", hasher)
    browsers = [site.browser(AWAY) for _ in range(30)]
    try:
        pages = await asyncio.gather(*(b.get("/sign-in") for b in browsers))
        responses = await asyncio.gather(*(
            b.post("/sign-in", data={"csrf_token": csrf_of(p.text), "username": "olga",
                                     "password": f"guess number {i}"})
            for i, (b, p) in enumerate(zip(browsers, pages, strict=True))))
    finally:
        for b in browsers:
            await b.aclose()
    assert hasher.calls == 5  # the throttle's five, not thirty
    assert hasher.most <= 2  # the semaphore: two argon2 checks at a time
    codes = sorted(r.status_code for r in responses)
    assert codes == [401] * 5 + [429] * 25
    # Every attempt is recorded, the throttled ones too, and none is left "checking".
    assert sorted(reasons(site.store, "olga")) == ["password"] * 5 + ["throttled"] * 25
    throttled = next(r for r in responses if r.status_code == 429)
    assert "Too many sign-in attempts" in throttled.text and "olga" not in error_of(throttled.text)


async def test_the_real_user_is_not_locked_out_by_guesses_from_another_address(site: Site) -> None:
    async with site.browser(AWAY) as attacker, site.browser(HOME) as olga:
        for _ in range(5):
            response = await sign_in(attacker, "olga", "not her password")
            assert response.status_code == 401
        for _ in range(10):  # guessing on does not extend anything: refused unchecked
            response = await sign_in(attacker, "olga", "not her password")
            assert response.status_code == 429
        response = await sign_in(attacker, "olga", PASSWORD)  # even the right one, from there
        assert response.status_code == 429
        assert (await attacker.get("/")).status_code == 303
        # Olga, at her own address, signs in at once.
        response = await sign_in(olga, "olga")
        assert response.status_code == 303, response.text
        assert (await olga.get("/")).status_code == 200


async def test_the_per_account_ceiling_spares_known_addresses_and_decays(site: Site) -> None:
    site.build(throttle=ThrottlePolicy(per_pair="3 per 15 minutes", per_account="6 per 5 seconds"))
    async with site.browser(HOME) as olga:
        assert (await sign_in(olga, "olga")).status_code == 303  # her address is known from now on
    # Guesses from many addresses fill the account's ceiling...
    for n in range(3):
        async with site.browser(f"198.51.100.{n + 10}") as attacker:
            for _ in range(3):
                assert (await sign_in(attacker, "olga", "a guess")).status_code in (401, 429)
    async with site.browser(ELSEWHERE) as newcomer:  # ...so a new address is refused unchecked
        response = await sign_in(newcomer, "olga")
        assert response.status_code == 429
    async with site.browser(HOME) as olga:  # but not her known address
        assert (await sign_in(olga, "olga")).status_code == 303
    await asyncio.sleep(5.2)  # the ceiling decays as its window moves on
    async with site.browser(ELSEWHERE) as newcomer:
        assert (await sign_in(newcomer, "olga")).status_code == 303


async def test_a_trusted_proxy_names_the_client_address(site: Site) -> None:
    site.build(trusted_proxies=["10.0.0.2"])

    def via_proxy(client: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app, client=("10.0.0.2", 40000)),
                                 base_url="http://testserver", headers={"x-forwarded-for": client})

    async with via_proxy(AWAY) as attacker, via_proxy(HOME) as olga:
        for _ in range(6):
            await sign_in(attacker, "olga", "a guess")
        assert (await sign_in(attacker, "olga")).status_code == 429
        assert (await sign_in(olga, "olga")).status_code == 303


# ---------------------------------------------------------------------------- one answer for all
async def test_one_message_for_a_wrong_password_a_wrong_code_and_an_unknown_user(site: Site) -> None:
    secret = pyotp.parse_uri(enable_totp(site.store, "lina", site.totp_key)).secret
    wrong_code = "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
    async with site.browser() as browser:
        answers = []
        for username, password, code in (("lina", "not the password", ""),  # wrong password
                                         ("lina", "not the password", pyotp.TOTP(secret).now()),
                                         ("lina", PASSWORD, ""),  # right password, no code
                                         ("lina", PASSWORD, wrong_code),  # right password, wrong code
                                         ("nobody", PASSWORD, "")):  # unknown user
            response = await sign_in(browser, username, password, code)
            assert response.status_code == 401, (username, password, code)
            answers.append(error_of(response.text))
            assert "6-digit" not in response.text and "code is wrong" not in response.text
        assert set(answers) == {GENERIC_REFUSAL}
        assert GENERIC_REFUSAL == "The user name, password or code is not right."
        assert reasons(site.store, "lina") == ["second_factor", "second_factor", "password", "password"]
        response = await sign_in(browser, "lina", PASSWORD, pyotp.TOTP(secret).now())
        assert response.status_code == 303


async def test_a_totp_code_is_accepted_once(site: Site) -> None:
    async with site.browser() as olga:
        assert (await sign_in(olga, "olga")).status_code == 303
        secret, used = await enrol(site, olga)
        account = await olga.get("/account")
        assert "Set up: signing in asks for the code" in account.text
        await post(olga, "/account", "/sign-out", {})
    totp = pyotp.TOTP(secret)
    # The code that confirmed the enrolment is used up.
    async with site.browser() as browser:
        response = await sign_in(browser, "olga", PASSWORD, used)
        assert response.status_code == 401 and error_of(response.text) == GENERIC_REFUSAL
    site.clock.offset = timedelta(seconds=30)  # the app shows its next code
    code = totp.at(site.clock())
    async with site.browser() as first, site.browser() as second:
        assert (await sign_in(first, "olga", PASSWORD, code)).status_code == 303
        response = await sign_in(second, "olga", PASSWORD, code)  # the same code again
        assert response.status_code == 401 and error_of(response.text) == GENERIC_REFUSAL
    assert reasons(site.store, "olga")[:2] == ["code_reused", ""]
    # Two browsers racing with one code: one of them gets in.
    site.clock.offset = timedelta(seconds=60)
    code = totp.at(site.clock())
    async with site.browser() as a, site.browser() as b:
        results = await asyncio.gather(sign_in(a, "olga", PASSWORD, code), sign_in(b, "olga", PASSWORD, code))
        assert sorted(r.status_code for r in results) == [303, 401]


async def test_the_totp_secret_is_sealed_at_rest(site: Site) -> None:
    async with site.browser() as olga:
        assert (await sign_in(olga, "olga")).status_code == 303
        page = await olga.get("/account/second-factor")
        # The secret being set up waits in the session cookie, sealed.
        shown = re.search(r'id="totp-key">([A-Z2-7 ]+)<', page.text)
        assert shown
        pending = shown.group(1).replace(" ", "")
        carried = session_of(olga)
        assert pending not in json.dumps(carried) and is_sealed(carried["totp_pending"])
        secret, _ = await enrol(site, olga)
        assert secret == pending
    stored = site.store.totp_secret("olga")
    assert stored is not None and is_sealed(stored) and secret not in stored
    assert unseal(site.totp_key, stored, context="totp:olga") == secret
    site.store.close()  # everything on disk
    files = sorted(site.database.parent.glob(site.database.name + "*"))
    assert files
    for path in files:
        data = path.read_bytes()
        for form in (secret, secret.lower(), base64.b32decode(secret).hex()):
            assert form.encode() not in data, path.name
        assert base64.b32decode(secret) not in data, path.name


async def test_a_secret_stored_in_plain_text_is_sealed_at_the_next_sign_in(site: Site) -> None:
    secret = pyotp.random_base32()
    site.store.set_totp("omar", secret)  # as the store kept it before sealing
    async with site.browser() as omar:
        response = await sign_in(omar, "omar", PASSWORD, pyotp.TOTP(secret).now())
        assert response.status_code == 303
    stored = site.store.totp_secret("omar")
    assert stored is not None and is_sealed(stored)
    assert unseal(site.totp_key, stored, context="totp:omar") == secret
    last = site.store.users_log()[-1]
    assert (last.actor, last.details.get("username")) == ("omar", "omar")
    assert site.store.verify_users().ok
    # A sealed secret moved to another user's row does not open there.
    site.store.set_totp("olga", stored)
    async with site.browser() as olga:
        response = await sign_in(olga, "olga", PASSWORD, pyotp.TOTP(secret).now())
        assert response.status_code == 401 and error_of(response.text) == GENERIC_REFUSAL


async def test_a_role_that_needs_a_second_factor_enrols_before_anything_else(site: Site) -> None:
    site.build(second_factor_roles=["head"])
    async with site.browser() as hana:
        response = await sign_in(hana, "hana")
        assert response.status_code == 303 and response.headers["location"] == "/account/second-factor"
        for url in ("/", "/account", "/audit", "/cases/UA-2026-0001"):
            response = await hana.get(url)
            assert response.status_code == 303 and response.headers["location"] == "/account/second-factor"
        page = await hana.get("/account/second-factor")
        assert "Your role needs a one-time code" in page.text
        secret, _ = await enrol(site, hana)
        assert (await hana.get("/")).status_code == 200
    site.clock.offset = timedelta(seconds=30)
    async with site.browser() as hana:
        response = await sign_in(hana, "hana")  # the password alone no longer does
        assert response.status_code == 401 and error_of(response.text) == GENERIC_REFUSAL
        response = await sign_in(hana, "hana", PASSWORD, pyotp.TOTP(secret).at(site.clock()))
        assert response.status_code == 303 and response.headers["location"] == "/"


# ------------------------------------------------------------------------------------- sessions
async def test_sessions_end_on_a_password_reset_and_a_deactivation(site: Site) -> None:
    users = site.store.users
    async with site.browser() as first, site.browser() as second:
        assert (await sign_in(first, "olga")).status_code == 303
        assert (await sign_in(second, "olga")).status_code == 303
        cli = users.create_session("olga", "cli", timedelta(hours=1))
        assert (await first.get("/")).status_code == 200
        # A head resets her password (as `appeals users passwd` does): every session ends.
        users.set_password("olga", auth.hash_new_password("a new password for olga"), actor="hana")
        for browser in (first, second):
            response = await browser.get("/")
            assert response.status_code == 303 and response.headers["location"] == "/sign-in"
        assert users.session_user(cli, datetime.now(UTC)) is None
        assert (await sign_in(first, "olga")).status_code == 401
        assert (await sign_in(first, "olga", "a new password for olga")).status_code == 303
        assert (await sign_in(second, "olga", "a new password for olga")).status_code == 303
        cli = users.create_session("olga", "cli", timedelta(hours=1))
        # Her own change on the web: the other sessions end, this browser goes on in a new one.
        response = await post(first, "/account", "/account/password",
                              {"current_password": "a new password for olga",
                               "new_password": "olga's own new password", "confirm_password":
                               "olga's own new password"})
        assert response.status_code == 303, response.text
        page = await first.get(response.headers["location"])
        assert page.status_code == 200 and "Your password is changed" in page.text
        assert (await second.get("/")).status_code == 303
        assert users.session_user(cli, datetime.now(UTC)) is None
        last = site.store.users_log()[-1]
        assert last.actor == "olga" and last.event == "PasswordSet"
        # A deactivation ends the session at once, and nobody signs in as her.
        users.deactivate("olga", "Left the secretariat", actor="hana")
        response = await first.get("/")
        assert response.status_code == 303 and response.headers["location"] == "/sign-in"
        response = await sign_in(second, "olga", "olga's own new password")
        assert response.status_code == 401 and error_of(response.text) == GENERIC_REFUSAL


async def test_a_password_change_needs_the_current_password(site: Site) -> None:
    async with site.browser() as olga:
        assert (await sign_in(olga, "olga")).status_code == 303
        response = await post(olga, "/account", "/account/password",
                              {"current_password": "not it", "new_password": "a long new password",
                               "confirm_password": "a long new password"})
        assert response.status_code == 401 and "not your current password" in response.text
        response = await post(olga, "/account", "/account/password",
                              {"current_password": PASSWORD, "new_password": "short",
                               "confirm_password": "short"})
        assert response.status_code == 422 and "at least 12 characters" in response.text
        assert (await olga.get("/")).status_code == 200  # still signed in
    assert auth.check_password(site.store.password_hash("olga"), PASSWORD)


async def test_a_session_ends_after_being_idle_and_at_sign_out(site: Site) -> None:
    async with site.browser() as olga:
        assert (await sign_in(olga, "olga")).status_code == 303
        token = session_of(olga)["sid"]
        assert site.store.users.session_user(token, datetime.now(UTC)) == "olga"
        site.clock.offset = timedelta(minutes=31)
        assert (await olga.get("/")).status_code == 303
        site.clock.offset = timedelta()
        assert (await sign_in(olga, "olga")).status_code == 303
        page = await olga.get("/")
        token = session_of(olga)["sid"]
        await olga.post("/sign-out", data={"csrf_token": csrf_of(page.text)})
        assert site.store.users.session_user(token, datetime.now(UTC)) is None


async def test_old_sign_in_records_are_pruned(site: Site) -> None:
    now = datetime.now(UTC)
    site.store.record_sign_in("olga", now - timedelta(days=120), ok=False, reason="password")
    site.store.record_sign_in("olga", now - timedelta(days=1), ok=False, reason="password")
    web = site.app.state.web
    counts: Callable[[], Any] = lambda: web.gate.prune(now)  # noqa: E731
    assert counts()["sign_ins"] == 1
    assert [r["at"].date() for r in site.store.sign_in_log("olga")] == [(now - timedelta(days=1)).date()]
    # The served app prunes at start-up (and daily after).
    site.store.record_sign_in("olga", now - timedelta(days=120), ok=False, reason="password")
    from web.app import housekeeping

    task = asyncio.create_task(housekeeping(web))
    for _ in range(50):
        if len(site.store.sign_in_log("olga")) == 1:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(site.store.sign_in_log("olga")) == 1
