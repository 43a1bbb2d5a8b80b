"""The report page, its printable view (printed to PDF by Chromium) and the head's dashboard in
Chromium (Debian's): the charts load as images and are not blank, the figures show "<3" for small
counts, no script and no name on the pages, who may see which page; screenshots at 1280 and 390 px
and the PDF's first pages rendered to PNG (pypdfium2) go to tests/artifacts/screenshots/."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.report_seed import SMALL_COUNTRY, names, seed
from tests.browser import CHROMIUM, SCREENSHOTS, served, shots, signed_in_page
from tests.dev_stack import Stack
from tests.test_web import set_passwords
from tests.test_web_browser import pytestmark  # noqa: F401 - skipped without Chromium

CASES = 60
PERIOD = "from=2025-12-01&to=2026-12-31"


def not_blank(png: bytes) -> tuple[int, float]:
    """How many colours an image has and the share of its pixels that are not white."""
    from PIL import Image
    with Image.open(io.BytesIO(png)) as img:
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        white = sum(n for n, c in colours if c == (255, 255, 255))
        return len(colours), 1 - white / (rgb.width * rgb.height)


def bar_colours(png: bytes) -> set[str]:
    """Which of the charts' two bar colours (desk.charts.COLOURS) cover a patch of the image."""
    from PIL import Image
    wanted = {"blue": (0x1F, 0x5F, 0x99), "orange": (0xC2, 0x5B, 0x12)}
    with Image.open(io.BytesIO(png)) as img:
        counts = dict((c, n) for n, c in img.convert("RGB").getcolors(maxcolors=1 << 22) or [])
    return {name for name, rgb in wanted.items()
            if sum(n for c, n in counts.items()
                   if max(abs(a - b) for a, b in zip(c, rgb, strict=True)) <= 6) > 400}


async def images_loaded(page: Any) -> list[int]:
    return list(await page.evaluate(
        "[...document.querySelectorAll('figure.chart img')].map(i => i.complete ? i.naturalWidth : 0)"))


async def test_report_page_printable_pdf_and_dashboard_in_chromium(
        maildir_stack: tuple[Stack, Path]) -> None:
    from playwright.async_api import async_playwright, expect

    stack, outbox = maildir_stack
    set_passwords(stack)
    refs = seed(stack.store, CASES, seed_value=5)
    escalated = next(r["reference"] for r in stack.store.list_cases(state="open")
                     if r["stage"] == "verification")
    stack.store.execute(escalated, "escalate", {"action": "", "step": "verification", "level": 1,
                                                "notified": ["hana"], "at": datetime.now(UTC)},
                        "system", "report-test-escalation")
    every_name = [n.lower() for n in names(CASES)]

    async with served(stack, outbox) as base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await signed_in_page(browser, base, "hana")
            await expect(page.locator("header.top nav")).to_contain_text("Dashboard")
            await page.click("header.top nav >> text=Reports")
            await page.fill("#r-from", "2025-12-01")
            await page.fill("#r-to", "2026-12-31")
            await page.click("#report-form button")
            await expect(page.locator("#report-scope")).to_contain_text(
                "2025-12-01 to 2026-12-31, all countries")
            await page.wait_for_load_state("networkidle")
            assert await images_loaded(page) == [720] * 4
            opened = page.locator("#report-summary tr", has_text="Cases opened")
            await expect(opened).to_contain_text(str(CASES))
            assert "<script" not in (await page.content()).lower()
            await shots(page, "report")
            await shots(page, "report-chart-actions", "#chart-actions_per_channel")
            # Each chart, as the browser received it, is an image with something drawn on it.
            for name in ("cases_per_month", "actions_per_channel", "first_dispatch", "outcomes"):
                response = await page.request.get(f"{base}/reports/chart/{name}.png?{PERIOD}")
                assert response.headers["content-type"] == "image/png"
                colours, inked = not_blank(await response.body())
                assert colours > 10 and inked > 0.05, (name, colours, inked)

            # The exports carry the same figures.
            exported = await page.request.get(f"{base}/reports/export.csv?{PERIOD}")
            assert exported.headers["content-type"].startswith("text/csv")
            assert f"summary,cases opened,{CASES}" in (await exported.text()).splitlines()
            exported = await page.request.get(f"{base}/reports/export.json?{PERIOD}")
            assert (await exported.json())["tables"]["summary"]["cells"]["cases opened"] == str(CASES)
            exported_text = (await exported.text()).lower()
            assert not any(n in exported_text for n in every_name)

            # A small country: "<3" in the tables and on the chart's hatched bars.
            await page.select_option("#r-country", SMALL_COUNTRY)
            await page.click("#report-form button")
            await expect(page.locator("#report-scope")).to_contain_text(f"({SMALL_COUNTRY})")
            await expect(page.locator("#report-summary tr", has_text="Cases opened")).to_contain_text("<3")
            await page.wait_for_load_state("networkidle")
            assert await images_loaded(page) == [720] * 4
            await shots(page, "report-small-country", "#chart-cases_per_month")
            html = (await page.content()).lower()
            assert not any(n in html for n in every_name)

            # A bad date is named and the year is shown instead (no crash, no trace).
            await page.goto(f"{base}/reports?from=2026-02-31")
            await expect(page.locator("#report-error")).to_contain_text("From: must be a date")

            # The printable view, printed to PDF by Chromium, rendered to images and looked at.
            await page.goto(f"{base}/reports/print?{PERIOD}")
            await expect(page.locator("header.top")).to_have_count(0)
            await page.wait_for_load_state("networkidle")
            assert await images_loaded(page) == [720] * 4
            pdf = await page.pdf(format="A4", print_background=True)
            assert pdf.startswith(b"%PDF")
            pages = render_pdf(pdf, "report-print-pdf")
            assert pages >= 2
            first = (SCREENSHOTS / "report-print-pdf-page1.png").read_bytes()
            colours, inked = not_blank(first)
            assert colours > 50 and inked > 0.05, (colours, inked)
            # The charts made it onto paper: their bars' blue and orange are on the pages.
            printed = set()
            for n in range(1, pages + 1):
                printed |= bar_colours((SCREENSHOTS / f"report-print-pdf-page{n}.png").read_bytes())
            assert printed == {"blue", "orange"}, printed
            text = pdf_text(pdf)
            assert "Urgent appeals: report" in text and "2025-12-01 to 2026-12-31" in text
            assert not any(n in text.lower() for n in every_name)

            # The head's dashboard, refreshed on load.
            await page.goto(f"{base}/dashboard")
            await expect(page.locator("h1")).to_have_text("Dashboard")
            await expect(page.locator("#dashboard-stages")).to_contain_text("verification")
            await expect(page.locator("#dashboard-clearance")).to_be_visible()
            from desk.dashboard import build_dashboard
            d = build_dashboard(stack.store, datetime.now(UTC))
            await expect(page.locator("#dashboard-time")).to_contain_text(f"{d.open_total} open case")
            await expect(page.locator("#dashboard-due")).to_contain_text(f"{d.overdue} overdue")
            await expect(page.locator("#dashboard-escalated")).to_contain_text(escalated)
            assert d.escalations == 1 and len(refs) == CASES
            await shots(page, "dashboard")
            await page.close()

            # A case officer has reports but no dashboard; a liaison neither.
            olga = await signed_in_page(browser, base, "olga")
            await expect(olga.locator("header.top nav")).not_to_contain_text("Dashboard")
            assert (await olga.goto(f"{base}/reports?{PERIOD}")).status == 200  # type: ignore[union-attr]
            assert (await olga.goto(f"{base}/dashboard")).status == 403  # type: ignore[union-attr]
            await olga.close()
            lina = await signed_in_page(browser, base, "lina")
            await expect(lina.locator("header.top nav")).not_to_contain_text("Reports")
            assert (await lina.goto(f"{base}/reports")).status == 403  # type: ignore[union-attr]
            chart = await lina.request.get(f"{base}/reports/chart/outcomes.png")
            assert chart.status == 403
            await lina.close()
        finally:
            await browser.close()


def render_pdf(pdf: bytes, name: str, scale: float = 1.5) -> int:
    """Each page of the PDF as `<name>-page<N>.png` in the screenshots folder; the page count."""
    import pypdfium2 as pdfium

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob(f"{name}-page*.png"):
        old.unlink()
    document = pdfium.PdfDocument(pdf)
    try:
        for i in range(len(document)):
            image = document[i].render(scale=scale).to_pil()
            image.save(SCREENSHOTS / f"{name}-page{i + 1}.png")
        return len(document)
    finally:
        document.close()


def pdf_text(pdf: bytes) -> str:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf)
    try:
        return "\n".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    finally:
        document.close()
