"""SMTP servers on loopback: the embedded stack's sink (`OutboxSink`), which keeps every message it
receives in a Maildir under var/outbox for staff to review (`appeals outbox`), and `SmtpSink`, which
keeps what it accepts in memory and can answer as a failing relay does (the tests and the
benchmarks).

`SmtpSink` runs in its own thread with its own event loop, so it works beside any event loop. A
message is stored before the server answers the client's DATA, so once a send has returned the
message is in ``messages``: no waiting or polling is needed.

    with SmtpSink(rcpt_reply="450 try later") as sink:
        ...
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import mailbox
import ssl
import threading
import time
from collections.abc import Awaitable
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class _KeepInMaildir:
    def __init__(self, outbox: mailbox.Maildir) -> None:
        self.outbox = outbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        # The envelope recipients are kept beside the headers: they are who really got it.
        header = f"X-Sink-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        self.outbox.add(mailbox.MaildirMessage(header + data))
        return "250 Message kept in the local outbox"


class OutboxSink:
    def __init__(self, outbox: Path, host: str, port: int) -> None:
        outbox.parent.mkdir(parents=True, exist_ok=True)
        self.path = outbox
        self.controller = Controller(_KeepInMaildir(mailbox.Maildir(outbox, create=True)),
                                     hostname=host, port=port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self._sink.rcpt_reply is not None:
            with self._sink._lock:
                self._sink.refused += 1
            return self._sink.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._sink.data_reply is not None:
            with self._sink._lock:
                self._sink.refused += 1
            return self._sink.data_reply
        if self._sink.data_delay:
            await asyncio.sleep(self._sink.data_delay)  # a slow relay
        content = envelope.content
        assert isinstance(content, bytes)  # decode_data is off: the raw bytes as sent
        # Parsed with "\n" line ends so bodies compare equal to the text that was sent; ``raw``
        # keeps the bytes exactly as received (CRLF).
        message = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert envelope.mail_from is not None
        with self._sink._lock:
            self._sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
            self._sink.raw.append(content)
            self._sink.arrivals.append(time.perf_counter())
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """Binds port 0 and learns the port the system chose, so no free-port guessing is needed."""

    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), hostname="127.0.0.1", port=0, **kwargs)
        self._sink = sink

    def _create_server(self) -> Awaitable[Any]:
        create = super()._create_server()

        async def bind() -> Any:
            server = await create
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bind()

    def factory(self) -> SMTP:
        # Called once per accepted connection.
        with self._sink._lock:
            self._sink.connections += 1
        smtpd: SMTP = super().factory()  # type: ignore[no-untyped-call]
        return smtpd


class SmtpSink:
    """An SMTP server on 127.0.0.1 that stores what it accepts.

    ``messages`` holds ``(envelope_from, rcpt_tos, message)`` per accepted message, parsed with "\\n"
    line ends; ``raw`` the bytes exactly as received (CRLF). ``connections`` counts the connections
    made since :meth:`start`.

    ``rcpt_reply`` / ``data_reply`` (e.g. ``"450 try later"``) make the server refuse at that step.
    ``tls_context`` makes it offer STARTTLS (``require_starttls`` refuses mail before the upgrade);
    without it the server does not offer STARTTLS at all.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        rcpt_reply: str | None = None,
        data_reply: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
    ) -> None:
        self.rcpt_reply = rcpt_reply
        self.refused = 0  # RCPT or DATA commands answered with rcpt_reply / data_reply
        self.data_delay = 0.0  # seconds the server waits before accepting a message's data
        self.data_reply = data_reply
        self.messages: list[tuple[str, list[str], Message]] = []
        self.raw: list[bytes] = []
        self.arrivals: list[float] = []  # time.perf_counter() when each message was stored
        self.connections = 0
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        self._controller = _Controller(self, **kwargs)
        self._started = False

    @property
    def port(self) -> int:
        if not self._started:
            raise RuntimeError("SmtpSink: not started")
        return int(self._controller.port)

    def start(self) -> SmtpSink:
        self._controller.start()
        self._started = True
        with self._lock:
            # Controller.start() opens one connection of its own to check the server is up.
            self.connections = 0
        return self

    def stop(self) -> None:
        if self._started:
            self._controller.stop()
            self._started = False

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.raw.clear()
            self.arrivals.clear()
            self.connections = 0

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
