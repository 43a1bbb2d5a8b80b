"""The web interface in a real browser: Debian's Chromium driven by Playwright, against the app served
by uvicorn on loopback, with the real Temporal dev server, the worker process and the embedded
stack's own Maildir SMTP sink (stack/sink.py), whose messages the outbox page shows.

Screenshots of the inbox, the case page, the audit page (confidential values hidden) and a head's
revealed view of it are written to tests/artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from desk.redaction import REDACTED
from tests.browser import CHROMIUM, SCREENSHOTS, served, shots, signed_in_page
from tests.dev_stack import Stack
from tests.factories import DEFENDER_NAME
from tests.test_web import PASSWORD, set_passwords

SOURCE = "Trusted partner at the bar association"
CONFIDENTIAL_NOTE = "Her cousin at the port authority passed on the charge sheet"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is "
                                "not installed; .ci/run installs it")


async def expect_hidden(page: Any, base: str, reference: str) -> None:
    """The audit page and both exports (fetched with the browser's session) hide the verifying
    source and the confidential information."""
    from playwright.async_api import expect

    trail = page.locator("#trail")
    await expect(trail).to_contain_text(REDACTED)
    await expect(page.locator("#hidden-note")).to_contain_text("hidden")
    for text in (await trail.inner_text(), *[await (await page.request.get(
            f"{base}/cases/{reference}/audit.{kind}")).text() for kind in ("csv", "json")]):
        assert SOURCE not in text and CONFIDENTIAL_NOTE not in text
        assert REDACTED in text


async def test_a_case_from_opening_to_the_outbox_in_chromium(maildir_stack: tuple[Stack, Path]) -> None:
    from playwright.async_api import Page, async_playwright, expect

    stack, outbox = maildir_stack
    set_passwords(stack)
    stack.start_worker()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async def sign_in(page: Page, base: str, username: str) -> None:
        await page.goto(f"{base}/sign-in")
        await page.fill("#username", username)
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await expect(page.locator("header.top")).to_contain_text("Sign out")

    async def sign_out(page: Page) -> None:
        await page.click("header.top button:has-text('Sign out')")
        await expect(page.locator("main")).to_contain_text("You are signed out")

    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            await page.goto(f"{base}/")
            assert page.url.endswith("/sign-in")  # no session: the sign-in page

            # -- olga opens a case with the form, records the verification and the consent
            await sign_in(page, base, "olga")
            await page.click("nav >> text=New case")
            fields = {
                "organisation.name": "Observatoire Vrennick", "organisation.contact_name": "Dalia Orvenne",
                "organisation.contact_email": "contact@vrennick.example.org",
                "defenders[0].name": DEFENDER_NAME, "defenders[0].role": "journalist",
                "defenders[0].location": "Nairobi", "defenders[0].age": "34", "country": "KE",
                "incident.date": "2026-01-05", "incident.place": "Nairobi",
                "incident.description": "Plainclothes officers seized the journalist outside the court.",
                "incident.perpetrators": "Police", "incident.ongoing_risk": "Trial set for next week",
                "domestic_steps": "A lawyer filed for release.", "fund_request.amount_eur": "3000",
                "confidential_information": CONFIDENTIAL_NOTE,
            }
            for name, value in fields.items():
                await page.fill(f'[name="{name}"]', value)
            await page.check('input[name="threat_types"][value="judicial_harassment"]')
            await page.check('input[name="rights_affected"][value="freedom_of_expression"]')
            await page.check('input[name="action.rapporteur"][value="requested"]')
            await page.check('input[name="action.mfa"][value="requested"]')
            await page.check('input[name="action.emergency_fund"][value="requested"]')
            await page.check('input[name="action.eu_delegation"][value="refused"]')
            await page.select_option('[name="fund_request.purpose"]', "legal_fees")
            await page.select_option('[name="urgency"]', "high")
            await page.click("text=Open the case")
            await expect(page.locator(".flash")).to_contain_text("opened")
            reference = page.url.rsplit("/", 1)[1]
            assert reference.startswith("UA-") and DEFENDER_NAME not in page.url

            form = page.locator("#form-verification")
            for name in ("facts", "pattern", "objective", "source_of_threat", "likely_carried_out"):
                await form.locator(f'[name="threat_questions.{name}"]').fill(f"Answer about {name}.")
            await form.locator('[name="vulnerabilities"]').fill("Works alone.")
            await form.locator('[name="capacities"]').fill("Strong network of lawyers.")
            await form.locator('[name="probability"]').select_option("4")
            await form.locator('[name="impact"]').select_option("4")
            await form.locator('[name="verdict"]').select_option("verified")
            await form.locator('[name="verifying_source"]').fill(SOURCE)
            await form.locator('[name="do_no_harm"]').fill("Prefer quiet diplomacy.")
            await form.locator('[name="public_action_advised"][value="no"]').check()
            await form.locator("button").click()
            await expect(page.locator(".flash")).to_contain_text("verification")
            # Consent per action, and for each defender who gave it, how and when.
            for action in ("rapporteur", "mfa", "emergency_fund"):
                form = page.locator(f"#form-consent-{action}")
                await form.locator('[name="text"]').fill("Initials only in public reports")
                await form.locator('[name="consents[0].given_by"]').select_option("defender")
                await form.locator('[name="consents[0].channel"]').select_option("secure_message")
                await form.locator("button").click()
                await expect(page.locator(".flash")).to_contain_text("consent")
            await expect(page.locator("h1 .badge.stage")).to_contain_text("clearance")
            # The emergency fund moves on while the others wait for the ministry: suggestions and
            # exclusions with their reasons, the choice, the prepared text for a web-form fund.
            await expect(page.locator("#excluded-eu_defenders_mechanism")).to_contain_text(
                "the grantee refused EU involvement")
            await expect(page.locator("#suggested-protection_grant")).to_contain_text("funds legal fees")
            form = page.locator("#form-choose_funds-emergency_fund")
            await form.locator('input[name="funds"][value="protection_grant"]').check()
            await form.locator("button").click()
            await expect(page.locator(".flash")).to_contain_text("emergency fund")
            form = page.locator("#form-fund_submission-emergency_fund-protection_grant")
            await expect(form.locator("pre.application")).to_contain_text("EUR 3,000")
            await form.locator('[name="note"]').fill("Submitted; receipt 4711")
            await form.locator("button").click()
            await expect(page.locator("#chosen-protection_grant")).to_contain_text("submitted")
            await expect(page.locator("#action-emergency_fund .step")).to_contain_text("follow up")
            await expect(page.locator("#action-rapporteur .step")).to_contain_text("clearance")
            await sign_out(page)

            # -- lina clears both
            await sign_in(page, base, "lina")
            await expect(page.locator("#pending")).to_contain_text(reference)
            await page.screenshot(path=str(SCREENSHOTS / "inbox.png"), full_page=True)
            await page.click(f"#pending >> text={reference}")
            for action in ("rapporteur", "mfa"):
                form = page.locator(f"#form-clearance-{action}")
                await form.locator('[name="reason"]').fill("Cleared by the desk")
                await form.locator("button").click()
                await expect(page.locator(".flash")).to_contain_text("clearance")
            await sign_out(page)

            # -- olga sees the messages in the outbox, the Message-IDs, the activity and the badge
            await sign_in(page, base, "olga")
            for _ in range(60):
                await page.goto(f"{base}/outbox")
                if await page.locator("#outbox tbody tr:not(:has(.empty))").count() >= 2:
                    break
                await asyncio.sleep(0.5)
            rows = page.locator("#outbox tbody tr")
            assert await rows.count() >= 2
            await expect(page.locator("#outbox")).to_contain_text("mfa")
            await page.goto(f"{base}/cases/{reference}")
            await expect(page.locator("#chain-badge")).to_have_text("chain verified")
            await expect(page.locator("#activity")).to_contain_text("Consent granted")
            await expect(page.locator("#activity")).to_contain_text("Clearance granted")
            await expect(page.locator("#activity")).to_contain_text("Message dispatched")
            await expect(page.locator("#action-mfa")).to_contain_text("sent")
            await expect(page.locator("#action-mfa .mono")).to_contain_text("@")
            await page.screenshot(path=str(SCREENSHOTS / "case.png"), full_page=True)
            await sign_out(page)

            # -- the auditor's view of the trail: the confidential values hidden, here and in the
            # exports, with no way to reveal them
            await sign_in(page, base, "aldo")
            await page.goto(f"{base}/cases/{reference}/audit")
            await expect(page.locator("#chain-badge")).to_have_text("chain verified")
            await expect(page.locator("#trail")).to_contain_text("olga")
            await expect_hidden(page, base, reference)
            assert await page.locator("#reveal-form").count() == 0
            await page.screenshot(path=str(SCREENSHOTS / "audit.png"), full_page=True)
            # No decision form anywhere for the auditor.
            await page.goto(f"{base}/cases/{reference}")
            assert await page.locator("form.decision").count() == 0
            await sign_out(page)

            # -- a head reveals them for one view, with a reason that goes into the trail
            await sign_in(page, base, "hana")
            await page.goto(f"{base}/cases/{reference}/audit")
            await expect_hidden(page, base, reference)
            await page.fill("#reveal-reason", "Annual donor audit of verifications")
            await page.click("#reveal-form button")
            await expect(page.locator("#revealed-note")).to_be_visible()
            await expect(page.locator("#trail")).to_contain_text(SOURCE)
            await expect(page.locator("#trail")).to_contain_text(CONFIDENTIAL_NOTE)
            reveal = page.locator("#trail tr", has_text="Confidential revealed")
            await expect(reveal).to_contain_text("hana")
            await expect(reveal).to_contain_text("Annual donor audit of verifications")
            await page.screenshot(path=str(SCREENSHOTS / "audit-revealed.png"), full_page=True)
            # For that one view only: the page again hides them, and the reveal stays in the trail.
            await page.goto(f"{base}/cases/{reference}/audit")
            await expect_hidden(page, base, reference)
            await expect(page.locator("#trail tr", has_text="Confidential revealed")).to_contain_text(
                "Annual donor audit of verifications")
        finally:
            await browser.close()
    for name in ("inbox.png", "case.png", "audit.png", "audit-revealed.png"):
        assert (SCREENSHOTS / name).stat().st_size > 1000
    [reveal] = [e for e in stack.store.trail(reference) if e.event == "ConfidentialRevealed"]
    assert (reveal.actor, reveal.details["reason"]) == ("hana", "Annual donor audit of verifications")
    assert SOURCE not in str(reveal.details) and CONFIDENTIAL_NOTE not in str(reveal.details)


async def test_a_held_message_is_released_and_closing_is_guarded_in_chromium(
        maildir_stack: tuple[Stack, Path]) -> None:
    """A message held for a missing intake field: the case page asks for exactly that field, and
    once it is given the message goes out (the SMTP sink receives it). Closing without an
    outcome, a summary and the confirmation is refused, naming all three. Screenshots of the
    held-message form and the refused closing at 1280 and 390 px go to tests/artifacts/."""
    import mailbox

    from playwright.async_api import async_playwright, expect

    from tests.factories import intake
    from tests.test_web_casepage import INCOMPLETE, to_dispatch
    from tests.workflow_env import settle
    from workflows.inputs import TracksStart
    from workflows.tracks import TrackedCaseWorkflow

    stack, outbox = maildir_stack
    set_passwords(stack)
    stack.start_worker()
    ref = "UA-2026-H0001"
    handle = await stack.client.start_workflow(
        TrackedCaseWorkflow.run, TracksStart(ref, intake(**{**INCOMPLETE, "requested_actions": [
            "mfa", "eu_delegation"], "defenders": intake()["defenders"]}), "olga"),
        id=ref, task_queue=stack.settings.task_queue)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")
    await to_dispatch(stack, ref, ["mfa"], ["eu_delegation"], ["mfa"])
    await settle(handle, lambda s: bool(s["tracks"]["mfa"]["held"]), "mfa held")

    def appeals() -> list[str]:
        if not outbox.exists():
            return []
        box = mailbox.Maildir(str(outbox), create=False)
        return [str(m["X-Appeal-Action"]) for m in box if m["X-Appeal-Kind"] == "appeal"]

    assert appeals() == []
    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await signed_in_page(browser, base, "olga")
            await page.goto(f"{base}/cases/{ref}")
            held = page.locator("#held")
            await expect(held).to_contain_text("The risk now: what may happen next")
            await expect(page.locator("#action-mfa .held")).to_contain_text("incident.ongoing_risk")
            await expect(page.locator("#action-eu_delegation")).to_contain_text(
                "not sent: consent refused")
            await shots(page, "held-form", "#held")
            # Sent empty: refused, the field named, nothing sent.
            await held.locator("button").click()
            await expect(page.locator("#held-error")).to_be_visible()
            await expect(page.locator("#held .field-error")).to_contain_text("is required")
            # Given: the message goes out at once.
            await page.fill('#held [name="incident.ongoing_risk"]', "Hearing set for Monday")
            await page.locator("#held button").click()
            await expect(page.locator(".flash")).to_contain_text("the message for mfa was sent")
            await expect(page.locator("#action-mfa")).to_contain_text("sent")
            assert await page.locator("#held").count() == 0
            assert await page.locator(".badge.held").count() == 0
            for _ in range(50):
                if appeals():
                    break
                await asyncio.sleep(0.2)
            assert appeals() == ["mfa"]

            # Closing: no preset outcome; all three missing things named at once.
            form = page.locator("#form-close")
            assert await form.locator('[name="outcome"]').input_value() == ""
            await form.locator("button").click()
            error = page.locator("#form-close .error")
            for words in ("choose the outcome", "summary: write", "confirmation: tick the box"):
                await expect(error).to_contain_text(words)
            await shots(page, "close-refused", "#form-close")
            assert "Closed" not in [e.event for e in stack.store.trail(ref)]
            form = page.locator("#form-close")
            await form.locator('[name="outcome"]').select_option("resolved")
            await form.locator('[name="summary"]').fill("Charges dropped.")
            await form.locator('[name="confirm"]').check()
            await form.locator("button").click()
            await expect(page.locator("h1 .badge.stage")).to_contain_text("closed")
            assert await page.locator(".badge.held").count() == 0
        finally:
            await browser.close()
    assert [e.event for e in stack.store.trail(ref)][-1] == "Closed"


async def test_an_officer_searches_filters_and_claims_in_the_queue(
        maildir_stack: tuple[Stack, Path]) -> None:
    """Seven Kenyan cases and one Ugandan one, straight in the store (the queue reads the case
    index): omar narrows the list down, claims the Ugandan case and sees himself as its holder;
    the inbox is read at 1280 and 390 px wide, the narrow one without sideways scrolling."""
    from playwright.async_api import async_playwright, expect

    from tests.factories import T0, open_args

    stack, outbox = maildir_stack
    set_passwords(stack)
    refs = [f"UA-2026-{n:04d}" for n in range(201, 209)]
    for ref in refs[:7]:
        stack.store.open_case(**open_args(ref, actions=["rapporteur", "mfa"]), tracked=True)
    stack.store.open_case(**open_args(refs[7], actions=["rapporteur"], country="UG",
                                      threat_types=["death_threat"]), tracked=True)
    stack.store.execute(refs[0], "close", {"outcome": "resolved", "summary": "", "at": T0},
                        "olga", "browser-close")

    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await signed_in_page(browser, base, "omar")
            queue = page.locator("#queue")
            await expect(queue.locator("tbody tr")).to_have_count(7)  # open cases only
            await expect(queue).to_contain_text("KE")
            await expect(queue).to_contain_text("arbitrary arrest or detention")
            await expect(queue).not_to_contain_text(DEFENDER_NAME)
            await page.screenshot(path=str(SCREENSHOTS / "queue-1280.png"), full_page=True)

            # Search by country, then filter by threat type and sort by reference.
            await page.fill("#f-q", "UG")
            await page.select_option("#f-threat", "death_threat")
            await page.select_option("#f-sort", "reference")
            await page.click("#filters button[type=submit]")
            await expect(queue.locator("tbody tr")).to_have_count(1)
            await expect(queue).to_contain_text(refs[7])
            await expect(queue).to_contain_text("death threat")
            assert "q=UG" in page.url and "threat=death_threat" in page.url  # a shareable link
            await page.click(f"button[aria-label='Claim {refs[7]}']")
            await expect(page.locator(".flash")).to_contain_text(f"{refs[7]} is now held by omar")
            assert "q=UG" in page.url  # back to the same filtered list
            await expect(queue.locator("td.holder")).to_contain_text("omar")
            await shots(page, "queue-search-claim")

            # Closed cases are reachable; "held by me" shows the claimed case alone.
            await page.goto(f"{base}/?state=closed")
            await expect(queue.locator("tbody tr")).to_have_count(1)
            await expect(queue).to_contain_text(refs[0])
            await page.goto(f"{base}/")
            await page.select_option("#f-mine", "held")
            await page.click("#filters button[type=submit]")
            await expect(queue.locator("tbody tr")).to_have_count(1)
            await expect(queue.locator("td.holder")).to_contain_text("omar")

            # An unknown filter value: a clear message naming it, not a traceback.
            response = await page.goto(f"{base}/?stage=lunch")
            assert response is not None and response.status == 400
            await expect(page.locator("#filter-error")).to_contain_text("The filter “stage”")

            # 390 px wide: each case a stacked card, nothing scrolls sideways.
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.goto(f"{base}/?state=all")
            await expect(queue.locator("tbody tr")).to_have_count(8)
            widths = await page.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], widths
            assert await page.locator("#queue thead").is_hidden()
            await page.screenshot(path=str(SCREENSHOTS / "queue-390.png"), full_page=True)
        finally:
            await browser.close()
    for name in ("queue-1280.png", "queue-390.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000
    assert [e.event for e in stack.store.trail(refs[7])][-1] == "CaseClaimed"
