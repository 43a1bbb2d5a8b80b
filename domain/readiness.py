"""What each channel's message needs before it may go (docs/design.md section 3).

A pure check over the normalised intake: the names of the fields that are missing, in a fixed
order, as dotted paths staff can act on (e.g. `defenders[0].location`). Nothing is sent half-empty:
the dispatch is held until further information completes the case.

The letter to OHCHR follows OHCHR's own practice: domestic remedies need not have been exhausted
and the perpetrators may be unknown, so neither holds it (the letter says so in words). What the
routed mandates need is checked on top: the working group on enforced disappearances needs, for
each defender the intake records as disappeared, when and where they were last seen; the working
group on arbitrary detention needs, for each defender recorded as detained, when they were
arrested and where they are held. These are the facts without which the working groups cannot
intervene with the authorities for a named person; the other fields of the blocks are optional.
Who is disappeared or detained is what the intake records (a `disappearance` or `detention`
block): a case routed to a working group with nobody so marked is not held, since the account of
the incident then stands for the facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from domain.routing import Mandate, route_intake
from domain.vocab import Action

# Per routed mandate: the block of a defender it looks at and the fields of the block it needs.
MANDATE_NEEDS: dict[Mandate, tuple[str, tuple[str, ...]]] = {
    Mandate.ENFORCED_DISAPPEARANCES: ("disappearance", ("last_seen_date", "last_seen_place")),
    Mandate.ARBITRARY_DETENTION: ("detention", ("arrest_date", "place_of_detention")),
}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def missing_fields(action: str, intake: Mapping[str, Any], *,
                   mandates: Iterable[Mandate | str] | None = None) -> list[str]:
    """The intake fields the message for `action` requires and the case does not have.

    `mandates` are the mandates the rapporteur letter goes to; by default they are routed from
    the intake (domain.routing.route_intake), as the letter itself does.
    """
    missing: list[str] = []

    def need(path: str, value: Any) -> None:
        if _blank(value):
            missing.append(path)

    organisation = intake.get("organisation") or {}
    incident = intake.get("incident") or {}
    need("organisation.name", organisation.get("name"))
    need("incident.description", incident.get("description"))
    if action == Action.RAPPORTEUR:
        # OHCHR's submission elements: who, why urgent, and a submitting organisation that can be
        # contacted (anonymous submissions are not considered). The perpetrators may be unknown
        # and domestic remedies need not be exhausted: neither is required.
        defenders = intake.get("defenders") or []
        for i, defender in enumerate(defenders):
            need(f"defenders[{i}].role", defender.get("role"))
            need(f"defenders[{i}].location", defender.get("location"))
        need("incident.ongoing_risk", incident.get("ongoing_risk"))
        need("organisation.contact_name", organisation.get("contact_name"))
        need("organisation.contact_email", organisation.get("contact_email"))
        routed = set(route_intake(intake) if mandates is None else map(Mandate, mandates))
        for mandate, (block, fields) in MANDATE_NEEDS.items():
            if mandate not in routed:
                continue
            for i, defender in enumerate(defenders):
                facts = defender.get(block)
                if isinstance(facts, Mapping):
                    for name in fields:
                        need(f"defenders[{i}].{block}.{name}", facts.get(name))
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
