"""The embedded stack's SMTP sink: a real SMTP server on loopback that keeps every message it
receives in a Maildir under var/outbox for staff to review (`appeals outbox`)."""

from __future__ import annotations

import mailbox
from pathlib import Path

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
