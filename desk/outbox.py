"""The messages the development stack's SMTP sink kept (a Maildir under `<var_dir>/outbox`), for
both doors: listed oldest first, and one message's headers and plain text.

Production has no outbox: the sink exists only in the embedded development stack.
"""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from desk.errors import NotFound

# X-Appeal-Kind: what the system sent (appeal, further information...); X-Sink-Rcpt-To: the envelope
# recipients the sink was given.
SHOWN_HEADERS = ("Date", "From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References",
                 "X-Appeal-Kind", "X-Sink-Rcpt-To")


def outbox_path(settings: Any) -> Path:
    return Path(settings.var_dir) / "outbox"


def _maildir(path: Path) -> mailbox.Maildir | None:
    if not (path / "cur").is_dir() and not (path / "new").is_dir():
        return None
    return mailbox.Maildir(str(path), factory=None, create=False)


def _parse(box: mailbox.Maildir, key: str) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(box.get_bytes(key))
    assert isinstance(message, EmailMessage)
    return message


def message_date(message: EmailMessage) -> datetime | None:
    try:
        when = parsedate_to_datetime(str(message["Date"]))
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def header(message: EmailMessage, name: str) -> str:
    try:
        value = message[name]
    except Exception:  # noqa: BLE001 - a malformed header is shown as missing
        return ""
    return "" if value is None else str(value)


def list_messages(path: Path) -> list[dict[str, Any]]:
    """Every message of the sink, oldest first: id, date, from, to, cc, subject, message_id,
    kind (X-Appeal-Kind) and envelope_to (X-Sink-Rcpt-To)."""
    box = _maildir(path)
    rows = []
    for key in box.iterkeys() if box is not None else []:
        assert box is not None
        message = _parse(box, key)
        rows.append({"id": key, "date": message_date(message), "from": header(message, "From"),
                     "to": header(message, "To"), "cc": header(message, "Cc"),
                     "subject": header(message, "Subject"),
                     "message_id": header(message, "Message-ID"),
                     "kind": header(message, "X-Appeal-Kind"),
                     "envelope_to": header(message, "X-Sink-Rcpt-To")})
    rows.sort(key=lambda r: (r["date"] or datetime.min.replace(tzinfo=UTC), r["id"]))
    return rows


def find_message(path: Path, wanted: str) -> dict[str, Any]:
    """One message by its id in the sink or its Message-ID: id, headers and plain text.
    NotFound when there is none."""
    box = _maildir(path)
    found: EmailMessage | None = None
    key_found = ""
    if box is not None:
        if wanted in box:
            found, key_found = _parse(box, wanted), wanted
        else:
            bare = wanted.strip().strip("<>")
            for key in box.iterkeys():
                message = _parse(box, key)
                if header(message, "Message-ID").strip().strip("<>") == bare:
                    found, key_found = message, key
                    break
    if found is None:
        shown = " ".join(wanted.split())[:100]
        raise NotFound(f"ID: no message {shown} in the outbox")
    headers = {name: header(found, name) for name in SHOWN_HEADERS if header(found, name)}
    body = found.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    return {"id": key_found, "headers": headers, "text": text}
