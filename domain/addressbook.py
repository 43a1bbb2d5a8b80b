"""The address book: where each kind of message goes, with the date each address was last checked.

Addresses are configuration (activities/data/address_book.toml), never code (docs/design.md section 3.1:
OHCHR has been moving mandate mailboxes, so every address carries a last-verified date). This
module is pure: it builds the book from plain dicts, validates every entry with an error that
names the entry and the field, and answers lookups. Reading the file is an activity's job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Protocol

from domain.countries import is_country_code
from domain.errors import UnconfirmedAddress
from domain.fields import as_date
from domain.routing import Mandate


class AddressRole(StrEnum):
    GENERAL = "general"  # the OHCHR mailbox for individual cases, written to with every appeal
    MANDATE = "mandate"  # one Special Procedures mandate's own mailbox
    MFA_DESK = "mfa_desk"  # the Ministry of Foreign Affairs desk for a country
    EU_DELEGATION = "eu_delegation"  # the EU delegation in a country


COUNTRY_ROLES = frozenset({AddressRole.MFA_DESK, AddressRole.EU_DELEGATION})

# Same shape as the intake's check: no display names, no lists, a dotted domain.
_EMAIL_RE = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$"
)
# RFC 2606 names that can never reach anyone: where example entries must point.
_EXAMPLE_DOMAIN_RE = re.compile(
    r"(^|\.)(example\.(org|com|net)|[a-z0-9-]+\.(example|test|invalid))$"
)


class AddressBookError(ValueError):
    """An address book entry is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class AddressEntry:
    address: str
    purpose: str
    role: AddressRole
    last_verified: date
    mandate: Mandate | None = None
    # ISO 3166-1 alpha-2 for country desks and delegations; None is the role's fallback entry.
    country: str | None = None
    note: str = ""
    # At an RFC 2606 example domain: a stand-in for the embedded default, never a real recipient.
    example: bool = False
    # Inferred from a pattern, not confirmed with the recipient: verify before live use.
    placeholder: bool = False
    # Where the address was published (a page, in words or as an https:// address); "" if unknown.
    source: str = ""
    # Staff confirmed the address with the recipient; with live sending on, only these are used.
    confirmed: bool = False

    @property
    def live_ready(self) -> bool:
        """False for stand-ins that live sending must not rely on."""
        return not (self.example or self.placeholder)

    def is_stale(self, today: date, max_age_days: int) -> bool:
        return (today - self.last_verified).days > max_age_days


@dataclass(frozen=True)
class AddressBook:
    entries: tuple[AddressEntry, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AddressBook:
        return parse_address_book(data)

    def general(self) -> list[AddressEntry]:
        return [e for e in self.entries if e.role is AddressRole.GENERAL]

    def for_mandate(self, mandate: Mandate | str) -> list[AddressEntry]:
        wanted = Mandate(mandate)
        return [e for e in self.entries if e.mandate is wanted]

    def for_country(self, role: AddressRole | str, country: str) -> list[AddressEntry]:
        """The role's entries for the country; the role's fallback entries when it has none."""
        wanted = AddressRole(role)
        if wanted not in COUNTRY_ROLES:
            raise ValueError(f"{wanted.value!r} addresses are not kept per country")
        of_role = [e for e in self.entries if e.role is wanted]
        exact = [e for e in of_role if e.country == country]
        return exact or [e for e in of_role if e.country is None]

    def rapporteur_recipients(self, mandates: Iterable[Mandate | str]) -> list[AddressEntry]:
        """General mailbox first, then each mandate's in the given order; one entry per address."""
        chosen = self.general() + [e for m in mandates for e in self.for_mandate(m)]
        seen: set[str] = set()
        unique = []
        for entry in chosen:
            if _key(entry.address) not in seen:
                seen.add(_key(entry.address))
                unique.append(entry)
        return unique

    def missing_mandates(self, mandates: Iterable[Mandate | str]) -> list[Mandate]:
        """The mandates that have no address of their own in this book."""
        return [Mandate(m) for m in mandates if not self.for_mandate(m)]

    def contains(self, address: str) -> bool:
        return any(_key(e.address) == _key(address) for e in self.entries)

    def entries_for(self, addresses: Iterable[str]) -> list[AddressEntry]:
        """Every entry of these addresses, in book order (an address may have several)."""
        wanted = {_key(a) for a in addresses}
        return [e for e in self.entries if _key(e.address) in wanted]

    def stale_entries(
        self, addresses: Iterable[str], today: date, max_age_days: int
    ) -> list[AddressEntry]:
        """Entries for these addresses not verified within `max_age_days` days of `today`.

        Addresses that are not in the book are not reported here: ask `contains` for those.
        """
        wanted = {_key(a) for a in addresses}
        return [
            e
            for e in self.entries
            if _key(e.address) in wanted and e.is_stale(today, max_age_days)
        ]


def _key(address: str) -> str:
    # Compared without case: mail domains are case-insensitive and no mailbox here relies on case.
    return address.strip().lower()


def unconfirmed(addresses: Iterable[AddressEntry]) -> list[AddressEntry]:
    """The entries that staff have not confirmed (never used while live sending is on)."""
    return [e for e in addresses if not e.confirmed]


class FundChannel(Protocol):
    """What the live-sending check needs of a fund directory entry (domain.funds.Fund)."""

    @property
    def id(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def confirmed(self) -> bool: ...


def check_live_addresses(
    book: AddressBook,
    recipients: Iterable[str],
    live: bool = True,
    funds: Iterable[FundChannel] = (),
) -> None:
    """With live sending on, refuse a message to any address staff have not confirmed.

    An address of the book counts as confirmed when every entry for it is; a fund's address when
    its directory entry is; an address in neither is never confirmed. With live sending off (the
    development sink) nothing is refused. The error names roles, mandates, countries and fund ids,
    never the addresses themselves.
    """
    if not live:
        return
    fund_list = list(funds)
    problems: list[str] = []
    for recipient in dict.fromkeys(_key(r) for r in recipients):
        entries = book.entries_for([recipient])
        of_funds = [f for f in fund_list if f.address and _key(f.address) == recipient]
        if entries:
            problems += [_describe(e) for e in unconfirmed(entries)]
        elif of_funds:
            problems += [f"fund {f.id}" for f in of_funds if not f.confirmed]
        else:
            problems.append("an address in neither the address book nor the fund directory")
    if problems:
        listed = "; ".join(dict.fromkeys(problems))
        raise UnconfirmedAddress(
            f"Recipients not confirmed by staff ({listed}); with live sending on they cannot be "
            "used: confirm them (confirmed = true) in the address book or the fund directory first."
        )


def _describe(entry: AddressEntry) -> str:
    """An entry named by what it is for, without its address."""
    if entry.mandate is not None:
        return f"mandate {entry.mandate.value}"
    if entry.role in COUNTRY_ROLES:
        return f"{entry.role.value} {entry.country or 'fallback'}"
    return f"{entry.role.value} mailbox"


# Parsing from plain data: {"entries": [ {...}, ... ]}, as tomllib reads address_book.toml.

_ENTRY_KEYS = frozenset(
    {"address", "purpose", "role", "mandate", "country", "last_verified", "note", "example",
     "placeholder", "source", "confirmed"}
)

_Fail = Callable[[str, str], AddressBookError]


def parse_address_book(data: Mapping[str, Any]) -> AddressBook:
    raw = data.get("entries") if isinstance(data, Mapping) else None
    if not isinstance(raw, list) or not raw:
        raise AddressBookError("address book: 'entries' must be a non-empty list of entries")
    entries = tuple(parse_address_entry(item, index) for index, item in enumerate(raw, start=1))
    _refuse_duplicates(entries)
    return AddressBook(entries)


def parse_address_entry(raw: Any, index: int = 1) -> AddressEntry:
    """One entry; errors name it by position and address, and name the field."""
    if not isinstance(raw, Mapping):
        raise AddressBookError(f"address book entry {index}: must be a table of fields")
    address = raw.get("address")
    where = f"address book entry {index}" + (
        f" ({address})" if isinstance(address, str) and address.strip() else ""
    )

    def fail(key: str, problem: str) -> AddressBookError:
        return AddressBookError(f"{where}: field {key!r} {problem}")

    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise fail(unknown[0], "is not a known field")
    mandate = _mandate(raw, fail)
    role = _role(raw, mandate, fail)
    entry = AddressEntry(
        address=_address(raw, fail),
        purpose=_required_text(raw, "purpose", fail),
        role=role,
        last_verified=_date(raw, "last_verified", fail),
        mandate=mandate,
        country=_country(raw, role, fail),
        note=_text(raw, "note", fail),
        example=_flag(raw, "example", fail),
        placeholder=_flag(raw, "placeholder", fail),
        # Both optional, so that entries written before they existed still load (as unconfirmed).
        source=_text(raw, "source", fail),
        confirmed=_flag(raw, "confirmed", fail),
    )
    _check_markings(entry, fail)
    return entry


def _address(raw: Mapping[str, Any], fail: _Fail) -> str:
    value = _required_text(raw, "address", fail)
    if not _EMAIL_RE.match(value):
        raise fail("address", "must be a plain e-mail address (name@domain.tld)")
    return value


def _mandate(raw: Mapping[str, Any], fail: _Fail) -> Mandate | None:
    value = raw.get("mandate")
    if value is None:
        return None
    try:
        return Mandate(str(value))
    except ValueError:
        allowed = ", ".join(m.value for m in Mandate)
        raise fail("mandate", f"must be one of: {allowed}") from None


def _role(raw: Mapping[str, Any], mandate: Mandate | None, fail: _Fail) -> AddressRole:
    value = raw.get("role")
    if value is None:
        if mandate is None:
            raise fail("role", "is required when there is no 'mandate'")
        return AddressRole.MANDATE
    try:
        role = AddressRole(str(value))
    except ValueError:
        allowed = ", ".join(r.value for r in AddressRole)
        raise fail("role", f"must be one of: {allowed}") from None
    if (role is AddressRole.MANDATE) != (mandate is not None):
        raise fail("mandate", "is required with role 'mandate' and allowed with no other role")
    return role


def _country(raw: Mapping[str, Any], role: AddressRole, fail: _Fail) -> str | None:
    value = raw.get("country")
    if value is None:
        return None
    if role not in COUNTRY_ROLES:
        raise fail("country", "is only for roles mfa_desk and eu_delegation")
    if not is_country_code(value):
        raise fail("country", "must be an upper-case ISO 3166-1 alpha-2 code, e.g. KE")
    return str(value)


def _check_markings(entry: AddressEntry, fail: _Fail) -> None:
    at_example_domain = bool(_EXAMPLE_DOMAIN_RE.search(entry.address.lower().split("@")[1]))
    if entry.example != at_example_domain:
        raise fail("example", "must be true exactly for addresses at example domains")
    if entry.placeholder and not entry.note:
        raise fail("note", "must say what to verify when 'placeholder' is true")
    if entry.confirmed and (entry.example or entry.placeholder):
        raise fail("confirmed", "cannot be true for an example or placeholder address")
    if entry.confirmed and not entry.source:
        raise fail("source", "must say where the address was published when 'confirmed' is true")


def _refuse_duplicates(entries: Iterable[AddressEntry]) -> None:
    seen: set[tuple[str, AddressRole, Mandate | None, str | None]] = set()
    for e in entries:
        key = (_key(e.address), e.role, e.mandate, e.country)
        if key in seen:
            raise AddressBookError(
                f"address book: {e.address} is listed twice for the same role, mandate and country"
            )
        seen.add(key)


def _required_text(raw: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = _text(raw, key, fail)
    if not value:
        raise fail(key, "is required")
    return value


def _text(raw: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise fail(key, "must be text")
    return value.strip()


def _flag(raw: Mapping[str, Any], key: str, fail: _Fail) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise fail(key, "must be true or false")
    return value


def _date(raw: Mapping[str, Any], key: str, fail: _Fail) -> date:
    value = as_date(raw.get(key))
    if value is None:
        raise fail(key, "must be a date written YYYY-MM-DD")
    return value
