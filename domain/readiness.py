"""What each channel's message needs before it may go (DESIGN.md section 3).

A pure check over the normalised intake: the names of the fields that are missing, in a fixed
order, as dotted paths staff can act on (e.g. `defenders[0].location`). Nothing is sent half-empty:
the dispatch is held until further information completes the case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.vocab import Action


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def missing_fields(action: str, intake: Mapping[str, Any]) -> list[str]:
    """The intake fields the message for `action` requires and the case does not have."""
    missing: list[str] = []

    def need(path: str, value: Any) -> None:
        if _blank(value):
            missing.append(path)

    organisation = intake.get("organisation") or {}
    incident = intake.get("incident") or {}
    need("organisation.name", organisation.get("name"))
    need("incident.description", incident.get("description"))
    if action == Action.RAPPORTEUR:
        # OHCHR's submission elements: who, by whom, why urgent, what was tried at home, and a
        # submitting organisation that can be contacted (anonymous submissions are not considered).
        for i, defender in enumerate(intake.get("defenders") or []):
            need(f"defenders[{i}].role", defender.get("role"))
            need(f"defenders[{i}].location", defender.get("location"))
        need("incident.perpetrators", incident.get("perpetrators"))
        need("incident.ongoing_risk", incident.get("ongoing_risk"))
        need("domestic_steps", intake.get("domestic_steps"))
        need("organisation.contact_name", organisation.get("contact_name"))
        need("organisation.contact_email", organisation.get("contact_email"))
    elif action in (Action.MFA, Action.EU_DELEGATION):
        need("incident.ongoing_risk", incident.get("ongoing_risk"))
    elif action == Action.EMERGENCY_FUND:
        request = intake.get("fund_request")
        if request is None:
            missing.append("fund_request")
        else:
            need("fund_request.purpose", request.get("purpose"))
            need("fund_request.amount_eur", request.get("amount_eur"))
        need("organisation.contact_email", organisation.get("contact_email"))
    return missing
