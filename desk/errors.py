"""What the desk tells a door when a request does not go through: a few named errors, each with a
sentence for the person (no personal data: references, codes, staff usernames, field names).

Each door maps them to its own answer: the command line to an exit code, the web to a page.

- NotSignedIn: nobody is signed in, or the session ended (expired, signed out, password changed,
  user deactivated).
- NotAllowed: the signed-in person may not do this (a role they lack, someone else's name);
  nothing was recorded.
- NotFound (CaseNotFound): no such case (or user, fund, message).
- Rejected: the workflow (or the users log) refused the request; its sentence is the message.
  Nothing was recorded.
- Unreachable: a service did not answer. With `may_have_taken_effect`, the request may have been
  recorded; repeating it as is (same idempotency key) is safe: it records nothing twice.
- InvalidRequest(field, reason): the request itself is malformed; names the field.
"""

from __future__ import annotations

REPEAT_SAFELY = ("it may have taken effect; repeating the same command is safe (it records "
                 "nothing twice)")


class DeskError(Exception):
    """A request that did not go through; `message` is one sentence for the person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotSignedIn(DeskError):
    pass


class NotAllowed(DeskError):
    pass


class NotFound(DeskError):
    pass


class CaseNotFound(NotFound):
    def __init__(self, reference: str) -> None:
        super().__init__(f"case {_short(reference, 60)} not found")
        self.reference = reference


class Rejected(DeskError):
    pass


class Unreachable(DeskError):
    """`reason`: what did not answer, without the sentence on repeating (a door may say that in
    its own words: the web says "sending the same form again")."""

    def __init__(self, message: str, *, may_have_taken_effect: bool = False) -> None:
        reason = message
        if may_have_taken_effect:
            message = f"{message.rstrip('.')}; {REPEAT_SAFELY}."
        super().__init__(message)
        self.reason = reason
        self.may_have_taken_effect = may_have_taken_effect


class InvalidRequest(DeskError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _short(text: str, limit: int) -> str:
    return " ".join(str(text).split())[:limit]
