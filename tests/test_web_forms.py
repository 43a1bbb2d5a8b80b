"""Forms people can finish (Chromium): every error of the new-case form at once in plain words,
in a summary that takes the focus and links to each field; over-long text refused with the text
kept; more defender sections on request; ISO dates as typed. Screenshots at 1280 and 390 px go to
tests/artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

from tests.browser import CHROMIUM, SCREENSHOTS, served, shots, signed_in_page
from tests.dev_stack import Stack
from tests.test_web import PASSWORD, set_passwords
from tests.test_web_browser import pytestmark  # noqa: F401 - skipped without Chromium


async def test_five_errors_at_once_the_summary_focused_and_long_text_kept(
        maildir_stack: tuple[Stack, Path]) -> None:
    from playwright.async_api import async_playwright, expect

    stack, outbox = maildir_stack
    set_passwords(stack)
    long_text = "The officers came back at night. " * 2200  # about 72 KB
    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            for width in (1280, 390):
                page = await signed_in_page(browser, base, "olga", width)
                await page.goto(f"{base}/cases/new")
                # One defender section, and another on request (what was typed stays).
                assert await page.locator("fieldset.defender").count() == 1
                await page.fill('[name="defenders[0].name"]', "Amina Example")
                await page.click("#add-defender")
                await expect(page.locator("fieldset.defender")).to_have_count(2)
                await expect(page.locator('[name="defenders[0].name"]')).to_have_value("Amina Example")
                # Five mistakes: no organisation, a bad age, an unknown country, a date in
                # another format, no threat type; and a 72 KB description.
                await page.fill('[name="defenders[0].age"]', "thirty")
                await page.fill('[name="country"]', "Kenya")
                await page.fill('[name="incident.date"]', "11/02/2026")
                await page.fill('[name="incident.place"]', "Nairobi")
                await page.fill('[name="incident.description"]', long_text)
                await page.check('input[name="action.mfa"][value="requested"]')
                await page.select_option('[name="urgency"]', "high")
                await page.click("button:has-text('Open the case')")
                summary = page.locator("#error-summary")
                await expect(summary).to_be_focused()
                items = await summary.locator("li").all_inner_texts()
                assert items == [
                    "Organisation name: is required",
                    "Defender 1 age: must be a whole number",
                    "Country: must be an ISO 3166-1 alpha-2 country code, e.g. KE",
                    "Incident date: must be a date written YYYY-MM-DD",
                    "What happened: is too long (at most 20000 characters)",
                    "Threat types: needs at least one entry"], items
                assert "[0]" not in await summary.inner_text()  # no internal names
                # Each field is marked, and its link leads to it.
                await expect(page.locator('[name="country"]')).to_have_attribute("aria-invalid", "true")
                await summary.locator("a", has_text="Incident date").click()
                await expect(page.locator('[name="incident.date"]')).to_be_focused()
                # Nothing typed is lost, the long text neither; nothing was opened.
                await expect(page.locator('[name="incident.description"]')).to_have_value(long_text)
                await expect(page.locator('[name="defenders[0].name"]')).to_have_value("Amina Example")
                await expect(page.locator('[name="incident.date"]')).to_have_value("11/02/2026")
                assert await page.locator('[name="incident.date"]').get_attribute("type") == "text"
                await page.screenshot(path=str(SCREENSHOTS / f"form-errors-{width}.png"), full_page=True)
                await page.close()
        finally:
            await browser.close()
    assert stack.store.list_cases() == []
    for width in (1280, 390):
        assert (SCREENSHOTS / f"form-errors-{width}.png").stat().st_size > 1000


def expire_sessions(stack: Stack, username: str) -> None:
    """The user's sessions end by themselves (their lifetime is over): not a sign-out."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from store import schema

    with stack.store.engine.begin() as conn:
        conn.execute(update(schema.sessions).where(schema.sessions.c.username == username)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))


async def test_a_form_sent_after_the_session_ended_comes_back_after_signing_in(
        maildir_stack: tuple[Stack, Path]) -> None:
    from playwright.async_api import async_playwright, expect

    stack, outbox = maildir_stack
    set_passwords(stack)
    description = "Plainclothes officers followed her home twice this week."
    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)

            async def sign_in(user: str) -> None:
                await page.fill("#username", user)
                await page.fill("#password", PASSWORD)
                await page.click("button[type=submit]")

            await page.goto(f"{base}/sign-in")
            await sign_in("olga")
            await page.goto(f"{base}/cases/new")
            await page.fill('[name="organisation.name"]', "Observatoire Vrennick")
            await page.fill('[name="incident.description"]', description)
            surveillance = 'input[name="threat_types"][value="surveillance_or_eavesdropping"]'
            await page.check(surveillance)
            expire_sessions(stack, "olga")  # her session ends while she types
            await page.click("button:has-text('Open the case')")
            await expect(page.locator("main")).to_contain_text("Your session had ended")
            assert page.url.endswith("/sign-in")
            await sign_in("olga")
            await expect(page.locator("main")).to_contain_text("Here is the form you were sending")
            assert "/cases/new" in page.url
            await expect(page.locator('[name="incident.description"]')).to_have_value(description)
            await expect(page.locator('[name="organisation.name"]')).to_have_value(
                "Observatoire Vrennick")
            await expect(page.locator(surveillance)).to_be_checked()
            await shots(page, "draft-back")
            # It comes back once: the same link again shows an empty form.
            await page.goto(page.url)
            await expect(page.locator('[name="incident.description"]')).to_have_value("")
        finally:
            await browser.close()
    assert stack.store.list_cases() == []
