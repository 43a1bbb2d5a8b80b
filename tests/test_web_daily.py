"""The web as the daily tool, in Chromium (Debian's): the browser's Back and Reload never send a
decision again (post/redirect/get, refusals included); an officer reads her own check-ins in the
case's activity; a decision typed while the session ended comes back after signing in again; the
new-case form sent twice opens one case. Screenshots at 1280 and 390 px of each situation go to
tests/artifacts/screenshots/ (tests.browser.shots)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.browser import CHROMIUM, served, shots, signed_in_page
from tests.dev_stack import Stack
from tests.factories import DEFENDER_NAME, intake
from tests.test_web import PASSWORD, set_passwords
from tests.test_web_browser import pytestmark  # noqa: F401 - skipped without Chromium
from tests.test_web_forms import expire_sessions
from tests.workflow_env import settle

CHECKIN = "She is safe at home; the police did not come back"
KEPT = "Visited her at the hospital; she asks us to wait a week"


async def fill_verification(page: Any, probability: str | None) -> None:
    form = page.locator("#form-verification")
    for name in ("facts", "pattern", "objective", "source_of_threat", "likely_carried_out"):
        await form.locator(f'[name="threat_questions.{name}"]').fill(f"Answer about {name}.")
    await form.locator('[name="vulnerabilities"]').fill("Works alone.")
    await form.locator('[name="capacities"]').fill("Strong network of lawyers.")
    if probability is not None:
        await form.locator('[name="probability"]').select_option(probability)
    await form.locator('[name="impact"]').select_option("4")
    await form.locator('[name="verdict"]').select_option("verified")
    await form.locator('[name="verifying_source"]').fill("A colleague at the court")
    await form.locator('[name="do_no_harm"]').fill("Prefer quiet diplomacy.")
    await form.locator('[name="public_action_advised"][value="no"]').check()


async def test_back_and_reload_never_send_a_decision_again_and_drafts_survive(
        maildir_stack: tuple[Stack, Path]) -> None:
    from playwright.async_api import async_playwright, expect

    from workflows.inputs import TracksStart
    from workflows.tracks import TrackedCaseWorkflow

    stack, outbox = maildir_stack
    set_passwords(stack)
    stack.start_worker()
    ref = "UA-2026-D0001"
    handle = await stack.client.start_workflow(
        TrackedCaseWorkflow.run, TracksStart(ref, intake(requested_actions=["mfa"],
                                                         refused_actions=[], eu_grant=None), "olga"),
        id=ref, task_queue=stack.settings.task_queue)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")

    def events(name: str) -> int:
        return [e.event for e in stack.store.trail(ref)].count(name)

    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await signed_in_page(browser, base, "olga")
            posts: list[str] = []
            urls: list[str] = []  # every request of the page, for the name check at the end
            page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
            page.on("request", lambda r: urls.append(r.url))
            await page.goto(f"{base}/cases/{ref}")

            # Refused (no probability): the page comes back by GET, the form as typed.
            await fill_verification(page, None)
            await page.locator("#form-verification button").click()
            error = page.locator("#form-verification .error")
            await expect(error).to_contain_text("probability: choose a number from 1 to 5")
            assert "?form=" in page.url and page.url.endswith("#form-verification")
            await expect(page.locator('#form-verification [name="vulnerabilities"]')).to_have_value(
                "Works alone.")
            await shots(page, "decision-refused", "#form-verification")
            sent = len(posts)
            await page.reload()  # Reload: no form is sent again; the refusal shows again
            await expect(error).to_contain_text("probability")
            assert len(posts) == sent

            # Corrected and recorded; then Back and Back again, and Forward: nothing is sent.
            await page.locator('#form-verification [name="probability"]').select_option("4")
            await page.locator("#form-verification button").click()
            await expect(page.locator(".flash")).to_contain_text("Recorded")
            sent = len(posts)
            await page.go_back()
            await expect(page.locator("h1")).to_contain_text(ref)
            assert "was not recorded" not in await page.locator("main").inner_text()
            await shots(page, "back-after-decision")
            await page.go_back()
            await page.go_forward()
            await page.go_forward()
            await expect(page.locator("h1")).to_contain_text(ref)
            assert len(posts) == sent, posts[sent:]
            assert events("VerificationRecorded") == 1

            # Her own check-in, in the case's activity.
            await page.goto(f"{base}/cases/{ref}")
            await page.locator('#form-checkin [name="summary"]').fill(CHECKIN)
            await page.locator("#form-checkin button").click()
            await expect(page.locator(".flash")).to_contain_text("check-in")
            activity = page.locator("#activity")
            await expect(activity.locator("li").first).to_contain_text(CHECKIN)
            await expect(activity.locator("li").first).to_contain_text("by olga")
            await shots(page, "own-check-in", "#activity")

            # A check-in typed while the session ended: kept, and back after signing in.
            await page.locator('#form-checkin [name="summary"]').fill(KEPT)
            await page.locator('#form-checkin [name="reprisals"]').check()
            expire_sessions(stack, "olga")
            await page.locator("#form-checkin button").click()
            await expect(page.locator("main")).to_contain_text("Your session had ended")
            await page.fill("#username", "olga")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page.locator("#form-checkin .error")).to_contain_text("Not sent yet")
            assert f"/cases/{ref}" in page.url
            await expect(page.locator('#form-checkin [name="summary"]')).to_have_value(KEPT)
            await expect(page.locator('#form-checkin [name="reprisals"]')).to_be_checked()
            await shots(page, "decision-draft-back", "#form-checkin")
            assert events("DefenderCheckInRecorded") == 1  # nothing of the draft was recorded
            await page.locator("#form-checkin button").click()
            await expect(page.locator(".flash")).to_contain_text("check-in")
            assert events("DefenderCheckInRecorded") == 2
        finally:
            await browser.close()
    # The intake's defender is on the case page, never in a URL (redirects and drafts included).
    assert urls and any("?form=" in url for url in urls) and any("?draft=" in url for url in urls)
    assert all(DEFENDER_NAME not in url and "Qwoxlandt" not in url for url in urls)
    assert all(DEFENDER_NAME not in url for url in posts)


async def test_the_new_case_form_sent_twice_opens_one_case(maildir_stack: tuple[Stack, Path]) -> None:
    from playwright.async_api import async_playwright, expect

    stack, outbox = maildir_stack
    set_passwords(stack)
    stack.start_worker()
    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await signed_in_page(browser, base, "olga")
            await page.goto(f"{base}/cases/new")
            fields = {
                "organisation.name": "Observatoire Vrennick",
                "organisation.contact_name": "Dalia Orvenne",
                "organisation.contact_email": "contact@vrennick.example.org",
                "defenders[0].name": DEFENDER_NAME, "defenders[0].role": "journalist",
                "defenders[0].location": "Nairobi", "country": "KE",
                "incident.date": "2026-01-05", "incident.place": "Nairobi",
                "incident.description": "Officers seized the journalist outside the court.",
                "incident.ongoing_risk": "Trial set for next week",
            }
            for name, value in fields.items():
                await page.fill(f'[name="{name}"]', value)
            await page.check('input[name="threat_types"][value="judicial_harassment"]')
            await page.check('input[name="rights_affected"][value="freedom_of_expression"]')
            await page.check('input[name="action.mfa"][value="requested"]')
            await page.select_option('[name="urgency"]', "high")
            # Two sends of the same form before the first answer (as a double click does).
            await page.evaluate("""() => {
                const form = document.querySelector('form[action="/cases/new"]');
                fetch('/cases/new', {method: 'POST', body: new FormData(form),
                                     credentials: 'same-origin'});
                form.requestSubmit();
            }""")
            await expect(page.locator(".flash")).to_contain_text("opened", timeout=30_000)
            await shots(page, "double-submit-one-case")
            for _ in range(50):
                if stack.store.list_cases():
                    break
                await asyncio.sleep(0.1)
            await page.go_back()
            await expect(page.locator("h1")).to_contain_text("Open a new case")
        finally:
            await browser.close()
    assert len(stack.store.list_cases()) == 1
