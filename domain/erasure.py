"""The erasure record of a case: who asked for the case's personal data to be erased, who
confirmed it, when and why. One aggregate per case, with an id derived from the reference but not
the case's own, so that it stays readable after the case's key is destroyed (its own data key is
never destroyed).

Rules (the doors check the roles and the case first): one head asks (`request`), a different
head confirms (`confirm`); a confirmed erasure is final. The reason is a code (REASONS) and a short
text that must not name anybody (staff are told so; the text is cut to MAX_TEXT).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import CaseRuleError

# Why a case is erased: its retention period ended, or the person (or their organisation) asked.
REASONS = ("retention-expired", "erasure-request")
MAX_TEXT = 200


def erasure_id(reference: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"urn:urgent-appeals:erasure:{reference}")


class Erasure(Aggregate):
    """What was asked and confirmed for one case; `confirmed_by` set once it is erased."""

    @event("ErasureRequested")
    def __init__(self, reference: str, reason_code: str, reason: str, at: datetime, actor: str,
                 command_id: str) -> None:
        self.reference = reference
        self.reason_code = reason_code
        self.reason = reason
        self.requested_by = actor
        self.requested_at = at
        self.confirmed_by: str | None = None
        self.confirmed_at: datetime | None = None

    @staticmethod
    def create_id(reference: str, **_: Any) -> UUID:
        return erasure_id(reference)

    @classmethod
    def request(cls, reference: str, reason_code: str, reason: str, at: datetime, actor: str,
                command_id: str) -> Erasure:
        return cls(reference=reference, reason_code=check_reason_code(reason_code),
                   reason=check_reason_text(reason), at=at, actor=actor, command_id=command_id)

    def confirm(self, at: datetime, actor: str, command_id: str) -> None:
        if self.confirmed_by is not None:
            raise CaseRuleError(f"Case {self.reference} was already erased (confirmed by "
                                f"{self.confirmed_by}); nothing was done.")
        if actor == self.requested_by:
            raise CaseRuleError(f"You asked for the erasure of {self.reference} yourself: "
                                "another head must confirm it; nothing was done.")
        self._confirmed(at=at, actor=actor, command_id=command_id)

    @event("ErasureConfirmed")
    def _confirmed(self, at: datetime, actor: str, command_id: str) -> None:
        self.confirmed_by = actor
        self.confirmed_at = at

    def public(self) -> dict[str, Any]:
        return {"reference": self.reference, "reason_code": self.reason_code,
                "reason": self.reason, "requested_by": self.requested_by,
                "requested_at": self.requested_at.isoformat(),
                "confirmed_by": self.confirmed_by,
                "confirmed_at": self.confirmed_at.isoformat() if self.confirmed_at else None}


def check_reason_code(code: str) -> str:
    if code not in REASONS:
        raise CaseRuleError(f"reason code: must be one of {', '.join(REASONS)}")
    return code


def check_reason_text(text: str) -> str:
    cleaned = " ".join(str(text or "").split())
    if not cleaned:
        raise CaseRuleError("reason: say briefly why (no names)")
    if len(cleaned) > MAX_TEXT:
        raise CaseRuleError(f"reason: at most {MAX_TEXT} characters, and no names")
    return cleaned
