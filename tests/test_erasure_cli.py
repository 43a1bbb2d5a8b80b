"""`appeals case erase REF` through the command line against the real stack (the Temporal dev
server, a worker process, the SQLite store): two heads, the refusals, the Temporal history
deleted, the trail and the audit verification after the erasure (issue 13, part B)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from temporalio.service import RPCError

from tests.dev_stack import Stack, fails, ok
from tests.factories import DEFENDER_NAME, intake


async def _history_gone(stack: Stack, ref: str, seconds: float = 120) -> bool:
    """Temporal deletes in the background (a task of its own, which a loaded machine runs late):
    wait until the workflow is no longer found."""
    handle = stack.plain.get_workflow_handle(ref)
    for _ in range(int(seconds * 5)):
        try:
            await handle.describe()
        except RPCError as exc:
            if exc.status.name == "NOT_FOUND":
                return True
            raise
        await asyncio.sleep(0.2)
    return False


async def test_two_heads_erase_a_closed_case_from_the_command_line(stack: Stack,
                                                                    tmp_path: Path) -> None:
    stack.store.add_user("hugo", "Hugo", "hugo@secretariat.example.org", ["head"])
    stack.start_worker()
    now = {"APPEALS_ERASURE_RETENTION_DAYS": "0"}
    named = tmp_path / "intake.json"  # the defender's distinctive name, to scan for afterwards
    named.write_text(json.dumps(intake()))
    ref = ok(stack.appeals("case", "open", str(named))).strip()
    other = ok(stack.appeals("case", "open", str(named),
                             "--request-id", "second-case")).strip()

    # An open case is refused; so is a bad reason code (before anything is asked of anyone).
    assert fails(stack.appeals("case", "erase", ref, "--reason-code", "retention-expired",
                               "--reason", "Retention over", user="hana", **now), 4) == (
        f"Case {ref} is open: close it before erasing it; nothing was done.")
    assert fails(stack.appeals("case", "erase", ref, "--reason-code", "whim", "--reason", "x",
                               user="hana"), 2).startswith("--reason-code: must be one of")
    ok(stack.appeals("case", "close", ref, "--outcome", "resolved", "--summary", "Released."))
    handle = stack.plain.get_workflow_handle(ref)
    assert await handle.result() == "resolved"

    # The default retention (365 days) does not allow it yet; a case officer may not ask.
    assert "APPEALS_ERASURE_RETENTION_DAYS=365" in fails(stack.appeals(
        "case", "erase", ref, "--reason-code", "retention-expired", "--reason", "Retention over",
        user="hana"), 4)
    assert fails(stack.appeals("case", "erase", ref, "--reason-code", "erasure-request",
                               "--reason", "Asked", user="olga", **now), 4).startswith(
        "Only a head may ask for or confirm the erasure")
    asked = ok(stack.appeals("case", "erase", ref, "--reason-code", "erasure-request",
                             "--reason", "Asked by the organisation", user="hana", **now))
    assert asked.strip() == (f"{ref}: erasure requested by hana (erasure-request); another head "
                             f"must confirm it with `appeals case erase {ref}`")
    assert fails(stack.appeals("case", "erase", ref, user="hana", **now), 4).startswith(
        f"You asked for the erasure of {ref} yourself: another head must confirm it")
    done = json.loads(ok(stack.appeals("case", "erase", ref, "--json", user="hugo", **now)))
    assert (done["state"], done["requested_by"], done["confirmed_by"]) == ("erased", "hana",
                                                                          "hugo")
    assert await _history_gone(stack, ref)

    # Afterwards: the case cannot be read, the trail shows the erasure, the chain verifies.
    assert f"Case {ref} was erased on" in fails(stack.appeals("case", "show", ref), 4)
    trail = json.loads(ok(stack.appeals("audit", ref, "--format", "json", user="hana")))
    text = json.dumps(trail)
    assert "ErasureRequested" in text and "ErasureConfirmed" in text and "hugo" in text
    assert DEFENDER_NAME not in text
    before = json.dumps(stack.store.trail(other), default=str)
    assert DEFENDER_NAME in before  # (what the scans below would find, were it readable)
    verified = ok(stack.appeals("audit", ref, "--verify", user="hana")).splitlines()
    assert "audit chain verified" in verified[0] and "erased" in verified[1]
    assert verified[-1] == "OK"
    assert fails(stack.appeals("case", "erase", ref, user="hana", **now), 4).startswith(
        f"Case {ref} is already erased (asked by hana, confirmed by hugo)")
    raw = stack.settings.database_url.removeprefix("sqlite:///")
    assert DEFENDER_NAME.encode() not in open(raw, "rb").read()  # noqa: SIM115 - read once
    # The other case is untouched.
    assert "stage verification" in ok(stack.appeals("case", "show", other))

    # The web: the audit page shows the erasure; the case page says the case was erased.
    from tests.test_web import SESSION_KEY, Web, set_passwords
    from web import build_app

    set_passwords(stack)
    app = build_app(stack.settings, stack.plain, stack.store, session_key=SESSION_KEY,
                    outbox=tmp_path / "outbox")
    async with Web(stack, app, None, tmp_path / "outbox").signed_in("hana") as hana:  # type: ignore[arg-type]
        audit = await hana.get(f"/cases/{ref}/audit")
        assert audit.status_code == 200, audit.text
        assert "Erasure confirmed" in audit.text and "hugo" in audit.text
        assert "Erasure requested" in audit.text and "erasure-request" in audit.text
        assert DEFENDER_NAME not in audit.text
        page = await hana.get(f"/cases/{ref}")
        assert page.status_code == 409 and "was erased" in page.text


async def test_two_heads_erase_a_closed_case_on_the_web(stack: Stack, tmp_path: Path) -> None:
    from tests.test_web import PASSWORD, SESSION_KEY, Web, post_form, set_passwords
    from web import build_app, set_password

    stack.store.add_user("hugo", "Hugo", "hugo@secretariat.example.org", ["head"])
    stack.start_worker()
    named = tmp_path / "intake.json"
    named.write_text(json.dumps(intake()))
    ref = ok(stack.appeals("case", "open", str(named))).strip()
    ok(stack.appeals("case", "close", ref, "--outcome", "resolved", "--summary", "Released."))
    assert await stack.plain.get_workflow_handle(ref).result() == "resolved"
    set_passwords(stack)
    set_password(stack.store, "hugo", PASSWORD)

    def web(retention_days: int) -> Web:
        settings = stack.settings.model_copy(update={"erasure_retention_days": retention_days})
        app = build_app(settings, stack.plain, stack.store, session_key=SESSION_KEY,
                        outbox=tmp_path / "outbox")
        return Web(stack, app, None, tmp_path / "outbox")  # type: ignore[arg-type]

    page_url, action = f"/cases/{ref}", f"/cases/{ref}/erase"
    async with web(365).signed_in("hana") as hana:
        refused = await post_form(hana, page_url, action, {"reason_code": "retention-expired",
                                                           "reason": "Retention over"},
                                  form_id="erase-form")
        assert refused.status_code == 409 and "APPEALS_ERASURE_RETENTION_DAYS=365" in refused.text
    async with web(0).signed_in("olga") as olga:
        assert 'id="erase-form"' not in (await olga.get(page_url)).text  # heads only
    async with web(0).signed_in("hana") as hana:
        asked = await post_form(hana, page_url, action, {"reason_code": "retention-expired",
                                                         "reason": "Retention over"},
                                form_id="erase-form")
        assert asked.status_code == 303 and asked.headers["location"] == f"{page_url}#erasure"
        mine = (await hana.get(page_url)).text
        assert "another head must confirm it" in mine and 'id="erase-form"' not in mine
    async with web(0).signed_in("hugo") as hugo:
        confirmed = await post_form(hugo, page_url, action, {}, form_id="erase-form")
        assert confirmed.status_code == 303
        assert confirmed.headers["location"] == f"/cases/{ref}/audit"
        audit = await hugo.get(f"/cases/{ref}/audit")
        assert "Erasure confirmed" in audit.text and "is erased" in audit.text
        assert DEFENDER_NAME not in audit.text
        gone = await hugo.get(page_url)
        assert gone.status_code == 409 and "was erased" in gone.text
    assert await _history_gone(stack, ref)
