"""What the browser tests share: Debian's Chromium, the web interface served by uvicorn on loopback
for a test's stack, and the stack with the embedded Maildir SMTP sink (stack/sink.py) whose messages
the outbox page shows (fixture `maildir_stack`, registered in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stack.sink import OutboxSink
from tests.dev_stack import DevServer, Stack, free_port, running_stack
from tests.test_web import SESSION_KEY
from web import serve

CHROMIUM = Path("/usr/bin/chromium")


class MaildirSink:
    """The embedded stack's sink on a free loopback port, with the `port` the stack fixture reads."""

    def __init__(self, outbox: Path) -> None:
        self.port = free_port()
        self.sink = OutboxSink(outbox, "127.0.0.1", self.port)
        self.path = outbox


@pytest.fixture
async def maildir_stack(dev_server: DevServer, tmp_path: Path) -> AsyncIterator[tuple[Stack, Path]]:
    outbox = tmp_path / "outbox"
    sink = MaildirSink(outbox)
    sink.sink.start()
    try:
        async with running_stack(dev_server, tmp_path, sink) as s:  # type: ignore[arg-type]
            yield s, outbox
    finally:
        sink.sink.stop()


@contextlib.asynccontextmanager
async def served(stack: Stack, outbox: Path) -> AsyncIterator[str]:
    port = free_port()
    task = asyncio.create_task(serve(stack.settings, stack.plain, stack.store, "127.0.0.1", port,
                                     session_key=SESSION_KEY, outbox=outbox))
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def signed_in_page(browser: Any, base: str, username: str, width: int = 1280) -> Any:
    """A new page of `browser` at `width` px, signed in as `username` (the test password)."""
    from playwright.async_api import expect

    from tests.test_web import PASSWORD

    page = await browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(30_000)
    await page.goto(f"{base}/sign-in")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page.locator("header.top")).to_contain_text("Sign out")
    return page


# Screenshots of the situations the daily pages must resolve, at a desk and on a phone (kept
# after the run, e.g. as CI artifacts; tests/artifacts/ is not committed).
SCREENSHOTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"
WIDTHS = (1280, 390)


async def shots(page: Any, name: str, element: str | None = None) -> list[Path]:
    """Screenshots of the page (or of one element of it) at each of WIDTHS px, written as
    `<name>-<width>.png`; the page is left at 1280 px."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    paths = []
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900 if width > 600 else 844})
        path = SCREENSHOTS / f"{name}-{width}.png"
        if element is None:
            await page.screenshot(path=str(path), full_page=True)
        else:
            await page.locator(element).screenshot(path=str(path))
        assert path.stat().st_size > 1000, path
        paths.append(path)
    await page.set_viewport_size({"width": 1280, "height": 900})
    return paths
