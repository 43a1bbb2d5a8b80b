"""Outgoing mail: building RFC 5322 messages safely and handing them to an SMTP server.

No Temporal here: the activity that wraps :class:`Mailer` turns :class:`MailError` into a retry
(``retryable``) or a non-retryable failure. Error texts carry an SMTP code and a generic phrase,
never recipients, subjects or bodies, because Temporal and logs keep them.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING

import aiosmtplib

# The address checks and the error classes live in activities.addresses (the settings import them
# without the mailer); their names stay importable from here.
from activities.addresses import _ATEXT, _HOST
from activities.addresses import HeaderInjection as HeaderInjection
from activities.addresses import InvalidAddress as InvalidAddress
from activities.addresses import InvalidMessage as InvalidMessage
from activities.addresses import MailError as MailError
from activities.addresses import PermanentMailError as PermanentMailError
from activities.addresses import TransientMailError as TransientMailError
from activities.addresses import check_address as check_address
from activities.addresses import is_loopback_host as is_loopback_host

if TYPE_CHECKING:
    from worker.settings import Settings


# --- the message ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OutgoingMessage:
    """One email, as rendered by the templates; plain data so it can cross an activity boundary."""

    sender: str
    to: list[str]
    subject: str
    text: str
    message_id: str
    """Stable per dispatch (see :func:`make_message_id`), so a resent message is recognisable."""
    cc: list[str] = field(default_factory=list)
    html: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers (e.g. ``X-Appeal-Kind``); never address or structural headers."""


_HOSTNAME = re.compile(_HOST)
_MSG_ID = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@{_HOST}>")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':' (RFC 5322 ftext)
_HEADER_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_MANAGED_HEADERS = frozenset(
    {
        "from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id",
        "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
    }
)  # fmt: skip
# 7bit keeps bodies deliverable through relays without 8BITMIME; SMTP policy writes CRLF.
# Headers are folded only past RFC 5322's hard limit: the library's folding of long encoded
# subjects at 78 characters leaves a stray space before the break, which readers then see.
_POLICY = email.policy.SMTP.clone(cte_type="7bit", max_line_length=998)


def check_header_value(value: str, *, header: str) -> str:
    """Return ``value`` unless it contains a line break or another control character.

    Not only CR and LF: the email library also treats VT, FF, the file/group/record separators,
    NEL and the Unicode line and paragraph separators as line breaks (``str.splitlines``), and
    refuses them with a bare ``ValueError`` that would escape the mail error classes. NUL and the
    other C0 controls are not allowed in header fields at all (RFC 5322). TAB is whitespace.
    """
    if _HEADER_FORBIDDEN.search(value):
        raise HeaderInjection(f"{header}: header values must not contain line breaks or control characters")
    return value


def _check_message_id(value: str, *, header: str) -> str:
    check_header_value(value, header=header)
    if not _MSG_ID.fullmatch(value):
        raise InvalidMessage(f"{header}: expected <left@right>")
    return value


def _addresses(values: Sequence[str], *, header: str) -> list[str]:
    return [check_address(v, header=f"{header}[{i}]") for i, v in enumerate(values)]


def _extra_headers(headers: Mapping[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _FIELD_NAME.fullmatch(name) or name.lower() in _MANAGED_HEADERS:
            raise HeaderInjection(f"extra header {name!r} is not allowed")
        check_header_value(value, header=name)
    return dict(headers)


def build_email(msg: OutgoingMessage) -> EmailMessage:
    """Validate ``msg`` and build the MIME message (multipart/alternative when html is given)."""
    if not msg.to:
        raise InvalidAddress("To: at least one recipient is required")
    out = EmailMessage(policy=_POLICY)
    out["From"] = check_address(msg.sender, header="From")
    out["To"] = ", ".join(_addresses(msg.to, header="To"))
    if msg.cc:
        out["Cc"] = ", ".join(_addresses(msg.cc, header="Cc"))
    out["Subject"] = check_header_value(msg.subject, header="Subject")
    out["Date"] = email.utils.formatdate(usegmt=True)
    out["Message-ID"] = _check_message_id(msg.message_id, header="Message-ID")
    if msg.in_reply_to is not None:
        out["In-Reply-To"] = _check_message_id(msg.in_reply_to, header="In-Reply-To")
    if msg.references:
        refs = [_check_message_id(r, header="References") for r in msg.references]
        out["References"] = " ".join(refs)
    for name, value in _extra_headers(msg.headers).items():
        out[name] = value
    out.set_content(msg.text)
    if msg.html is not None:
        out.add_alternative(msg.html, subtype="html")
    return out


_MESSAGE_ID_NAMESPACE = uuid.UUID("4e8f8d99-60b3-41ca-a3c5-b3571e120beb")
"""Fixed namespace for Message-ID uuid5s; changing it would change every future Message-ID."""


def make_message_id(case_reference: str, dispatch_key: str, domain: str) -> str:
    """A Message-ID that is the same for the same case and dispatch, and reveals neither."""
    if not _HOSTNAME.fullmatch(domain):
        raise ValueError("make_message_id: domain must be a plain host name")
    # Length prefix: ("ab", "c") and ("a", "bc") must not give the same id.
    name = f"{len(case_reference)}:{case_reference}:{dispatch_key}"
    return f"<{uuid.uuid5(_MESSAGE_ID_NAMESPACE, name)}@{domain}>"


# --- sending ----------------------------------------------------------------------------------


class Mailer:
    """Sends :class:`OutgoingMessage` over SMTP, one connection per message.

    With ``live=False`` the host must be loopback, so that nothing leaves the machine unless live
    sending was switched on on purpose. With ``starttls_required`` a server that does not offer
    STARTTLS is a permanent error, and credentials are only sent after the upgrade.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        timeout: float,
        starttls_required: bool,
        live: bool,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        capture_host: str | None = None,
    ) -> None:
        if not live and not is_loopback_host(host) and host != capture_host:
            raise ValueError("Mailer: live sending is off, so the SMTP host must be loopback "
                             "or the declared mail-capturing host")
        self._host, self._port, self._timeout = host, port, timeout
        self._starttls_required = starttls_required
        self._username, self._password = username, password
        self._tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        ca_file = settings.smtp_ca_file
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout_seconds,
            starttls_required=settings.starttls_required,
            live=settings.live_sending,
            capture_host=settings.smtp_capture_host,
            username=settings.smtp_username,
            password=password,
            tls_context=ssl.create_default_context(cafile=ca_file) if ca_file else None,
        )

    async def send(self, msg: OutgoingMessage) -> None:
        """Deliver ``msg`` to every To and Cc recipient, or to none of them.

        Raises :class:`InvalidMessage` before connecting, then :class:`TransientMailError` or
        :class:`PermanentMailError`.
        """
        built = build_email(msg)
        recipients = list(dict.fromkeys([*msg.to, *msg.cc]))
        try:
            await self._transact(msg.sender, recipients, built.as_bytes(policy=_POLICY))
        except MailError:
            raise
        except Exception as exc:
            error = classify_smtp_error(exc)
            if error is None:
                raise
            # "from None": aiosmtplib's own texts can echo addresses and server replies.
            raise error from None

    async def _transact(self, sender: str, recipients: list[str], data: bytes) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            start_tls=False,  # decided in _secure, so that a missing STARTTLS is ours to classify
            tls_context=self._tls_context,
        )
        async with smtp:
            await self._secure(smtp)
            if self._username is not None:
                await smtp.login(self._username, self._password or "")
            await smtp.mail(sender)
            # Every RCPT must succeed before DATA: a refused recipient aborts the whole
            # transaction (QUIT without DATA), so a retry never duplicates mail to the others.
            for recipient in recipients:
                await smtp.rcpt(recipient)
            await smtp.data(data)

    async def _secure(self, smtp: aiosmtplib.SMTP) -> None:
        if not self._starttls_required:
            return
        await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            raise PermanentMailError("SMTP server does not offer STARTTLS, which is required")
        await smtp.starttls()


def classify_smtp_error(exc: BaseException) -> MailError | None:
    """Map an aiosmtplib or network exception to a mail error; ``None`` if it is neither."""
    kind = type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_reply_code(exc.code, kind)
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Before the OSError case: a certificate that fails verification does not fix itself.
        return PermanentMailError(f"SMTP server certificate not trusted ({kind})")
    if isinstance(exc, OSError):  # refused, reset, unreachable, timeouts (TimeoutError is one)
        return TransientMailError(f"SMTP connection failed ({kind})")
    if isinstance(exc, aiosmtplib.SMTPException):
        return PermanentMailError(f"SMTP client error ({kind})")
    return None


def _by_reply_code(code: int, kind: str) -> MailError:
    if 400 <= code < 500:
        return TransientMailError(f"SMTP server answered {code}: temporary failure ({kind})", code=code)
    if 500 <= code < 600:
        return PermanentMailError(f"SMTP server answered {code}: permanent failure ({kind})", code=code)
    return PermanentMailError(f"SMTP server answered unexpected code {code} ({kind})", code=code)
