"""What will be sent, shown before it is: the letters of one action (for the liaison's clearance)
and further information to earlier recipients, composed by the same code the activities use
(activities.messages.Composer, domain.dispatch.appeal_recipients), the mandates routed once.

For the staff member asking only: the texts hold names, as the case page does. Nothing here logs;
an error names the template, the action or the role, never case data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from activities.messages import Composer, MessageError
from domain.addressbook import COUNTRY_ROLES, AddressBook, AddressEntry
from domain.dispatch import appeal_recipients
from domain.errors import CaseRuleError
from domain.readiness import missing_fields
from domain.routing import route_intake
from domain.vocab import Action


@dataclass
class Letter:
    """One message as it would go now: subject, recipients (role and mailbox), text."""

    action: str
    subject: str = ""
    recipients: list[tuple[str, str]] = field(default_factory=list)  # (role, address)
    text: str = ""
    note: str = ""  # why there is no letter to show (held, no address, composed later)


def role_of(entry: AddressEntry) -> str:
    """An address book entry named by what it is for, in words."""
    if entry.mandate is not None:
        return f"UN mandate: {entry.mandate.value.replace('_', ' ')}"
    if entry.role in COUNTRY_ROLES:
        where = entry.country or "fallback entry"
        return f"{entry.role.value.replace('_', ' ')} ({where})"
    return f"{entry.role.value.replace('_', ' ')} mailbox"


def appeal_letters(case: Any, action: str, book: AddressBook,
                   composer: Composer | None = None) -> list[Letter]:
    """The appeal(s) the dispatch of `action` would send now, as the activity composes them."""
    composer = composer or Composer()
    if action == Action.EMERGENCY_FUND:
        return [Letter(action, note="The fund is chosen after the clearance; its application is "
                                    "composed for the chosen fund and shown on this page then.")]
    mandates = route_intake(case.intake) if action == Action.RAPPORTEUR else None
    missing = missing_fields(action, case.intake, mandates=mandates)
    if missing:
        return [Letter(action, note="Nothing can be sent yet: the intake lacks "
                                    + ", ".join(missing) + ". The message is held until the "
                                    "case officer completes them.")]
    try:
        entries = appeal_recipients(book, case.intake, action, mandates)
    except CaseRuleError:
        entries = []
    if not entries:
        return [Letter(action, note=f"The address book has no address for {action} in "
                                    f"{case.intake.get('country', '')}: nothing could be sent.")]
    try:
        composed = composer.appeal(case, action, mandates=mandates)
    except MessageError as exc:
        return [Letter(action, note=f"The letter cannot be composed: {exc}.")]
    return [Letter(action, composed.subject, [(role_of(e), e.address) for e in entries],
                   composed.text)]


def information_letters(case: Any, actions: Sequence[str], information: str,
                        composer: Composer | None = None) -> list[Letter]:
    """Further information as it would go to the earlier recipients of each action."""
    composer = composer or Composer()
    letters = []
    for action in actions:
        state = (case.actions or {}).get(action) or {}
        recipients = [("earlier recipient", r) for r in state.get("recipients") or []]
        try:
            composed = composer.further_information(case, action, information)
        except MessageError as exc:
            letters.append(Letter(action, note=f"The message cannot be composed: {exc}."))
            continue
        letters.append(Letter(action, composed.subject, recipients, composed.text))
    return letters


__all__ = ["Letter", "appeal_letters", "information_letters", "role_of"]
