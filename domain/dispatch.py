"""What one dispatch will do, planned once from one loaded case (no I/O).

The sending activities (activities.case `dispatch`, activities.tracks `dispatch_track`) load the
case once, ask `plan_dispatch` what to do, send, and record what the plan says in one store
transaction (store.app.CaseStore.execute_all). The plan holds everything that used to be worked out
again at each step: the fields the channel still lacks, the mandates the rapporteur letter goes to
(routed once, and handed to the readiness check, the address book, the warning check and the
composer), the recipients, the fund, and the staff warnings to record with the dispatch.

A warning keeps the command id it always had (`{ref}/stale-addresses/{action}`,
`{ref}/unaddressed-mandates`), so that a warning an older worker recorded before its send is not
recorded twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from domain.addressbook import AddressBook, AddressEntry, AddressRole, check_live_addresses
from domain.errors import CaseRuleError
from domain.funds import Fund
from domain.readiness import missing_fields
from domain.routing import Mandate, route_intake
from domain.vocab import Action

# What an emergency fund appeal of a case without tracks lacks when no fund can take it.
NO_ELIGIBLE_FUND = "an eligible, available emergency fund (see the fund suggestions)"


class Unsendable(CaseRuleError):
    """The message cannot go to these recipients (not in the address book, no address at all,
    not confirmed while live sending is on): a permanent failure, nothing was sent. Names
    actions, roles and countries, never an address."""


@dataclass(frozen=True)
class PlannedWarning:
    """A staff warning the dispatch records on the case, under its own command id."""

    command_id: str
    warning: str


@dataclass(frozen=True)
class DispatchPlan:
    action: str
    # The intake fields the channel lacks: non-empty means hold, nothing else is planned.
    missing: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    # The rapporteur letter's mandates, routed once (None for the other channels).
    mandates: list[Mandate] | None = None
    fund: Fund | None = None  # the fund an emergency fund application goes to
    warnings: list[PlannedWarning] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return bool(self.missing)


def appeal_recipients(book: AddressBook, intake: Mapping[str, Any], action: str,
                      mandates: list[Mandate] | None = None) -> list[AddressEntry]:
    """The address book entries an action's appeal goes to (none found: an empty list). The
    dispatch uses it, and so does the preview the doors show before a clearance. `mandates`:
    the rapporteur letter's, when already routed (routed from the intake otherwise)."""
    country = intake["country"]
    if action == "rapporteur":
        return book.rapporteur_recipients(route_intake(intake) if mandates is None else mandates)
    if action == "mfa":
        return book.for_country(AddressRole.MFA_DESK, country)
    if action == "eu_delegation":
        return book.for_country(AddressRole.EU_DELEGATION, country)
    raise CaseRuleError(f"{action!s:.40} has no address book role.")


def plan_dispatch(reference: str, intake: Mapping[str, Any], action: str, *, book: AddressBook,
                  today: date, max_age_days: int, fund: Fund | None = None,
                  needs_fund: bool = False, fund_addresses: Collection[str] = (),
                  require_confirmed: bool = False) -> DispatchPlan:
    """Plan the appeal of `action`.

    - `fund`: the fund an emergency fund application goes to (its address is the recipient);
      `needs_fund`: without a fund that has an address the appeal is held for one (cases
      without tracks, whose fund the system chooses); cases with tracks pass the officer's
      chosen fund and check it themselves.
    - `fund_addresses`: the fund directory's addresses, which count as known recipients.
    - `require_confirmed`: live sending: every recipient must be confirmed by staff.

    Raises Unsendable for recipients that cannot be used (nothing may be sent), and the
    CaseRuleError of an action that has no address book role.
    """
    mandates = route_intake(intake) if action == Action.RAPPORTEUR else None
    missing = missing_fields(action, intake, mandates=mandates)
    if not missing and needs_fund and (fund is None or not fund.address):
        missing = [NO_ELIGIBLE_FUND]
    if missing:
        return DispatchPlan(action, missing=missing, mandates=mandates, fund=fund)
    if fund is not None:
        recipients = [fund.address]
    else:
        entries = appeal_recipients(book, intake, action, mandates)
        if not entries:
            raise Unsendable(f"The address book has no address for {action} in "
                             f"{intake['country']}.")
        recipients = [e.address for e in entries]
    if require_confirmed:
        _require_confirmed(book, action, recipients, fund)
    known = {a.lower() for a in fund_addresses}
    unknown = [r for r in recipients if not book.contains(r) and r.lower() not in known]
    if unknown:
        raise Unsendable(f"{len(unknown)} recipient(s) of the {action} message are not in the "
                         "address book; nothing was sent.")
    warnings = []
    stale = stale_addresses_warning(reference, action, book, recipients, today, max_age_days)
    if stale is not None:
        warnings.append(stale)
    if mandates is not None:
        unaddressed = unaddressed_mandates_warning(reference, book, mandates)
        if unaddressed is not None:
            warnings.append(unaddressed)
    return DispatchPlan(action, recipients=recipients, mandates=mandates, fund=fund,
                        warnings=warnings)


def stale_addresses_warning(reference: str, action: str, book: AddressBook,
                            recipients: list[str], today: date,
                            max_age_days: int) -> PlannedWarning | None:
    """Only addresses from the address book (or the fund directory) are used; one not verified
    recently still gets the message, but staff are warned on the case."""
    stale = book.stale_entries(recipients, today, max_age_days)
    if not stale:
        return None
    # One line per address, although several entries (mandates) may share it.
    first = {e.address.lower(): e for e in reversed(stale)}
    listed = "; ".join(f"{e.purpose} ({e.address}, last verified {e.last_verified.isoformat()})"
                       for e in first.values())
    return PlannedWarning(f"{reference}/stale-addresses/{action}",
                          f"Check these addresses, not verified for more than {max_age_days} "
                          f"days: {listed}")


def unaddressed_mandates_warning(reference: str, book: AddressBook,
                                 mandates: list[Mandate]) -> PlannedWarning | None:
    """A mandate the routing picks but the address book has no mailbox for still hears of the
    case through the general OHCHR mailbox; staff are warned so that they can add it."""
    missing = book.missing_mandates(mandates)
    if not missing:
        return None
    return PlannedWarning(f"{reference}/unaddressed-mandates",
                          "No address book entry for the mandate(s) "
                          f"{', '.join(m.value for m in missing)}: the appeal went to the general "
                          "OHCHR mailbox only for them.")


def _require_confirmed(book: AddressBook, action: str, recipients: list[str],
                       fund: Fund | None) -> None:
    """With live sending on, only channels staff confirmed are used: the message is not sent
    (a permanent failure, escalated to staff) until the entry is confirmed."""
    try:
        if fund is not None:
            if not fund.confirmed:
                raise Unsendable(f"The address of fund {fund.id} is not confirmed by staff; with "
                                 "live sending on it is not used.")
        else:
            check_live_addresses(book, recipients)
    except CaseRuleError as exc:
        raise Unsendable(f"{exc} Nothing was sent for {action}.") from None
