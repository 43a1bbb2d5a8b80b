"""Mail addresses and hosts checked without the mailer (no SMTP client, no Temporal): what the
settings (worker.settings) and the command line check when they start; the error classes of
sending mail, which activities.mail raises.

Error texts name the header or setting only, never an address: Temporal and logs keep them.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
from typing import ClassVar

# --- errors -----------------------------------------------------------------------------------


class MailError(Exception):
    """Sending failed. ``retryable`` says whether trying the same message later may succeed."""

    retryable: ClassVar[bool] = True

    def __init__(self, description: str, *, code: int | None = None) -> None:
        super().__init__(description)
        self.code = code


class TransientMailError(MailError):
    """Connection refused or lost, timeout, or a 4xx reply: retry later."""

    retryable = True


class PermanentMailError(MailError):
    """5xx reply, failed authentication, missing STARTTLS, or an invalid message: do not retry."""

    retryable = False


class InvalidMessage(PermanentMailError, ValueError):
    """The message itself is unacceptable; detected before any connection is made."""


class InvalidAddress(InvalidMessage):
    """An address is not one plain ``user@domain`` addr-spec. The text names the header only."""


class HeaderInjection(InvalidMessage):
    """A header value contains a line break or control character, or an extra header tries to set a
    managed header."""


# --- addresses --------------------------------------------------------------------------------

# RFC 5322 dot-atom local part and an ASCII host name. Deliberately narrower than the RFC (no
# quoted local parts, no address literals, no non-ASCII): every mailbox we write to fits, and a
# narrow grammar leaves no room for smuggling.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_ADDR_SPEC = re.compile(rf"(?P<local>{_ATEXT}(?:\.{_ATEXT})*)@{_HOST}")


def check_address(value: str, *, header: str) -> str:
    """Return ``value`` if it is one plain addr-spec, else raise :class:`InvalidAddress`."""
    match = _ADDR_SPEC.fullmatch(value) if isinstance(value, str) else None
    if (
        match is None
        or len(match["local"]) > 64
        or len(value) > 254
        or email.utils.getaddresses([value]) != [("", value)]
    ):
        raise InvalidAddress(f"{header}: expected one plain address (user@domain), no display name")
    return value


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost. Names other than localhost are not resolved:
    what a name resolves to can change after the check."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
