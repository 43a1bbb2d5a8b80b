"""`python -m web`: the staff web interface on its own (production; `make run` embeds it)."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from store.recorder import SchemaNotReady
from web.app import serve
from worker.keys import KeyMaterialError
from worker.main import connect, store_for
from worker.settings import error_line, load_settings


async def main() -> None:
    try:
        settings = load_settings()
        totp_key = settings.totp_key()  # production: the key file must be there (no new key)
        store = store_for(settings)
    except (ValidationError, KeyMaterialError, SchemaNotReady) as exc:
        print(f"web: cannot start: {error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    client = await connect(settings)
    task = asyncio.create_task(serve(settings, client, store, settings.web_host, settings.web_port,
                                     totp_key=totp_key,
                                     trusted_proxies=settings.web_trusted_proxies))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        store.close()


asyncio.run(main())
