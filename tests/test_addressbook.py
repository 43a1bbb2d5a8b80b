"""The address book file: every malformed entry is refused naming the file, the entry and the field."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from activities.directories import DirectoryFileError, load_address_book
from domain.addressbook import AddressRole, check_live_addresses, parse_address_entry, unconfirmed
from domain.errors import CaseRuleError, UnconfirmedAddress

ROOT = Path(__file__).resolve().parent.parent

GOOD = '''[[entries]]
address = "desk@example.org"
role = "mfa_desk"
country = "KE"
purpose = "MFA desk for Kenya"
last_verified = 2026-06-01
example = true
'''


def book(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "address_book.toml"
    path.write_text(text)
    return path


def test_a_well_formed_entry_loads(tmp_path: Path) -> None:
    loaded = load_address_book(book(tmp_path, GOOD))
    [entry] = loaded.for_country(AddressRole.MFA_DESK, "KE")
    assert entry.last_verified == date(2026, 6, 1) and not entry.live_ready
    assert entry.is_stale(date(2027, 7, 1), 365) and not entry.is_stale(date(2026, 12, 1), 365)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("last_verified = 2026-06-01", 'last_verified = "June 2026"'),
         "field 'last_verified' must be a date written YYYY-MM-DD"),
        (("last_verified = 2026-06-01", "last_verified = 2026-06-01T10:00:00"),
         "field 'last_verified' must be a date written YYYY-MM-DD"),
        (('address = "desk@example.org"', 'address = "Desk <desk@example.org>"'), "field 'address'"),
        (('country = "KE"', 'country = "Kenya"'), "field 'country'"),
        (("example = true", "example = false"), "field 'example'"),
        (('role = "mfa_desk"', 'role = "embassy"'), "field 'role' must be one of"),
        (("example = true", "example = true\nphone = \"+1\""), "field 'phone' is not a known field"),
    ],
)
def test_a_malformed_entry_is_refused_naming_file_and_field(
        tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = book(tmp_path, GOOD.replace(*change))
    with pytest.raises(DirectoryFileError) as info:
        load_address_book(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_the_same_address_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError, match="desk@example.org"):
        load_address_book(book(tmp_path, GOOD + "\n" + GOOD))


def test_the_shipped_book_has_the_design_mailboxes_and_fallback_desks() -> None:
    shipped = load_address_book()
    for address in ("urgent-action@ohchr.org", "defenders@ohchr.org", "freedex@ohchr.org",
                    "freeassembly@ohchr.org"):
        assert shipped.contains(address)
    # A country without its own desk falls back to the role's general entry.
    assert shipped.for_country(AddressRole.MFA_DESK, "NO") and shipped.for_country(
        AddressRole.EU_DELEGATION, "NO")


# --- where an address was published, and whether staff confirmed it ------------------------------

REAL = '''[[entries]]
address = "desk@mfa.gov.zz"
role = "mfa_desk"
country = "KE"
purpose = "MFA desk for Kenya"
last_verified = 2026-06-01
'''


def test_source_and_confirmed_default_to_unknown_and_unconfirmed(tmp_path: Path) -> None:
    [entry] = load_address_book(book(tmp_path, GOOD)).entries
    assert entry.source == "" and entry.confirmed is False
    confirmed = REAL + 'source = "Ministry staff list, June 2026"\nconfirmed = true\n'
    [entry] = load_address_book(book(tmp_path, confirmed)).entries
    assert entry.source == "Ministry staff list, June 2026" and entry.confirmed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (REAL + 'confirmed = "yes"\n', "field 'confirmed' must be true or false"),
        (REAL + "source = 2026\n", "field 'source' must be text"),
        (REAL + "confirmed = true\n",
         "field 'source' must say where the address was published when 'confirmed' is true"),
        (GOOD + 'source = "x"\nconfirmed = true\n',
         "field 'confirmed' cannot be true for an example or placeholder address"),
    ],
)
def test_a_bad_source_or_confirmation_is_refused_naming_entry_and_field(
        tmp_path: Path, text: str, message: str) -> None:
    path = book(tmp_path, text)
    with pytest.raises(DirectoryFileError) as info:
        load_address_book(path)
    text_of_error = str(info.value)
    assert text_of_error.startswith(f"{path}: address book entry 1 (") and message in text_of_error
    assert "\n" not in text_of_error


def test_the_shipped_books_load_and_nothing_unconfirmable_is_confirmed() -> None:
    for shipped in (load_address_book(), load_address_book(ROOT / "deploy" /
                                                           "address_book.example.toml")):
        stand_ins = [e for e in shipped.entries if e.example or e.placeholder]
        assert stand_ins and set(stand_ins) <= set(unconfirmed(shipped.entries))
        assert all(e.source for e in shipped.entries if e.confirmed)


def test_unconfirmed_lists_the_entries_staff_have_not_confirmed() -> None:
    entries = [parse_address_entry({"address": f"{name}@mfa.gov.zz", "role": "mfa_desk",
                                    "purpose": "desk", "last_verified": "2026-06-01",
                                    "source": "list", "confirmed": name == "yes"})
               for name in ("yes", "no")]
    assert [e.address for e in unconfirmed(entries)] == ["no@mfa.gov.zz"]


class _Fund:
    def __init__(self, fund_id: str, address: str, confirmed: bool) -> None:
        self.id, self.address, self.confirmed = fund_id, address, confirmed


def test_with_live_sending_on_an_unconfirmed_address_is_never_used(tmp_path: Path) -> None:
    text = (REAL + 'source = "Ministry staff list"\nconfirmed = true\n\n'
            + REAL.replace("desk@", "other@").replace('"KE"', '"CO"'))
    loaded = load_address_book(book(tmp_path, text))
    funds = [_Fund("solidarity", "apply@fund.zz", True), _Fund("other_fund", "x@fund.zz", False)]
    # Live sending off: nothing is refused (mail goes to the development sink).
    check_live_addresses(loaded, ["other@mfa.gov.zz", "nobody@else.zz"], live=False)
    # Live sending on: confirmed addresses pass, by book or by fund directory...
    check_live_addresses(loaded, ["DESK@mfa.gov.zz", "apply@fund.zz"], live=True, funds=funds)
    # ...and anything unconfirmed or unknown is refused, named by what it is, never by address.
    with pytest.raises(UnconfirmedAddress) as info:
        check_live_addresses(loaded, ["desk@mfa.gov.zz", "other@mfa.gov.zz", "x@fund.zz",
                                      "nobody@else.zz"], live=True, funds=funds)
    message = str(info.value)
    assert isinstance(info.value, CaseRuleError)
    assert "mfa_desk CO" in message and "fund other_fund" in message
    assert "neither the address book nor the fund directory" in message
    assert "with live sending on they cannot be used" in message
    assert "@" not in message and "mfa_desk KE" not in message and "\n" not in message
    # The default is the live check.
    with pytest.raises(UnconfirmedAddress):
        check_live_addresses(loaded, ["other@mfa.gov.zz"])


def test_the_shipped_placeholders_are_refused_with_live_sending_on() -> None:
    shipped = load_address_book()
    with pytest.raises(UnconfirmedAddress, match="mandate torture"):
        check_live_addresses(shipped, [e.address for e in shipped.for_mandate("torture")], live=True)
