"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts, for tests.

Use the ``smtp_sink`` fixture (import it into a test module, or list ``"tests.smtp_sink"`` in
``pytest_plugins``), or build an :class:`SmtpSink` directly for a server that answers differently:

    with SmtpSink(rcpt_reply="450 try later") as sink:
        ...

The server runs in its own thread with its own event loop, so it works with any test loop. A message
is stored before the server answers the client's DATA, so once a send has returned the message is in
``messages``: no waiting or polling is needed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import threading
from collections.abc import Awaitable, Iterator
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["SmtpSink", "TlsPair", "make_self_signed_tls", "smtp_sink"]


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
            self.connections = 0

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started :class:`SmtpSink` that accepts everything (no STARTTLS offered)."""
    with SmtpSink() as sink:
        yield sink


class TlsPair:
    """A self-signed certificate for 127.0.0.1 / localhost: a server context and a client context
    that trusts exactly that certificate."""

    def __init__(self, server: ssl.SSLContext, client: ssl.SSLContext, cert_pem: bytes) -> None:
        self.server = server
        self.client = client
        self.cert_pem = cert_pem


def make_self_signed_tls(directory: Any) -> TlsPair:
    """Generate a fresh key and self-signed certificate in ``directory`` (a :class:`pathlib.Path`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file = directory / "smtp-sink-cert.pem"
    key_file = directory / "smtp-sink-key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return TlsPair(server=server, client=client, cert_pem=cert_pem)
