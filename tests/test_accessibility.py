"""The pages staff use every day, checked by axe-core (shipped in axe-playwright-python) in Debian's
Chromium: no serious or critical accessibility violation on the sign-in, inbox, new case, case,
audit, report (and its printable view) and dashboard pages, at desktop and phone widths, and none
scrolls sideways; every page starts with a skip link to its content and shows a focus outline on
the control that has the focus."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, served, signed_in_page
from tests.dev_stack import Stack
from tests.factories import intake
from tests.test_web import set_passwords
from tests.workflow_env import settle
from workflows.inputs import TracksStart
from workflows.tracks import TrackedCaseWorkflow as WF

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is "
                                "not installed; .ci/run installs it")

SERIOUS = ("serious", "critical")
# The elements reaching furthest right of the viewport (to mend a page that scrolls sideways).
WIDEST = """() => [...document.querySelectorAll('main *')]
  .map(e => [e.getBoundingClientRect().right, e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
             + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '')
             + (e.name ? '[name=' + e.name + ']' : '')])
  .filter(([right]) => right > window.innerWidth).sort((a, b) => b[0] - a[0]).slice(0, 5)"""


def described(violations: list[dict[str, Any]]) -> str:
    """Rule, impact and the first elements concerned: what a developer needs to mend it."""
    return "\n".join(f"{v['id']} ({v['impact']}): {v['help']} at "
                     f"{[n['target'] for n in v['nodes'][:3]]}" for v in violations)


async def serious_violations(page: Any) -> list[dict[str, Any]]:
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    return [v for v in results.response["violations"] if v.get("impact") in SERIOUS]


async def test_the_daily_pages_have_no_serious_accessibility_violation(
        maildir_stack: tuple[Stack, Path]) -> None:
    from playwright.async_api import async_playwright, expect

    stack, outbox = maildir_stack
    set_passwords(stack)
    stack.start_worker()
    ref = f"UA-2026-A{uuid.uuid4().hex[:6].upper()}"
    handle = await stack.client.start_workflow(WF.run, TracksStart(ref, intake(), "olga"), id=ref,
                                               task_queue=stack.settings.task_queue)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")

    found: dict[str, str] = {}
    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            for width in (1280, 390):
                for user, paths in (("olga", ["/", "/cases/new", f"/cases/{ref}"]),
                                    ("hana", [f"/cases/{ref}/audit", "/reports", "/reports/print",
                                              "/dashboard"])):
                    page = await browser.new_page(viewport={"width": width, "height": 900})
                    await page.goto(f"{base}/sign-in")
                    if (bad := await serious_violations(page)):
                        found[f"/sign-in at {width} px"] = described(bad)
                    await page.close()
                    page = await signed_in_page(browser, base, user, width)
                    for path in paths:
                        await page.goto(f"{base}{path}")
                        assert "/sign-in" not in page.url, path
                        if (bad := await serious_violations(page)):
                            found[f"{path} at {width} px"] = described(bad)
                        # Nothing scrolls sideways, on a phone either.
                        overflow = await page.evaluate(
                            "document.documentElement.scrollWidth - window.innerWidth")
                        if overflow > 0:
                            wide = await page.evaluate(WIDEST)
                            found[f"{path} at {width} px"] = f"scrolls sideways by {overflow} px: {wide}"
                        # The skip link is the first thing the keyboard reaches, and it shows.
                        await page.keyboard.press("Tab")
                        focused = page.locator(":focus")
                        await expect(focused).to_have_attribute("href", "#content")
                        outline = await focused.evaluate(
                            "e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth")
                        assert not outline.startswith("none"), (path, outline)
                        assert await page.locator("#content").count() == 1, path
                    await page.close()
        finally:
            await browser.close()
    assert not found, "\n\n".join(f"{where}:\n{what}" for where, what in found.items())
