"""ISO 3166-1 alpha-2 codes and names."""

from __future__ import annotations

import pytest

from domain.countries import COUNTRIES, country_name, is_country_code


def test_all_249_officially_assigned_codes_are_listed() -> None:
    assert len(COUNTRIES) == 249


def test_every_code_is_two_upper_case_letters_and_every_name_is_unique() -> None:
    assert all(len(code) == 2 and code.isascii() and code.isupper() for code in COUNTRIES)
    assert len(set(COUNTRIES.values())) == len(COUNTRIES)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("KE", "Kenya"),
        ("CO", "Colombia"),
        ("DE", "Germany"),
        ("NL", "Netherlands"),
        ("GB", "United Kingdom"),
        ("US", "United States"),
        ("BR", "Brazil"),
        ("PH", "Philippines"),
        ("CD", "Congo, The Democratic Republic of the"),
        ("CG", "Congo"),
        ("CI", "Côte d'Ivoire"),
        ("PS", "Palestine, State of"),
        ("SS", "South Sudan"),
        ("TL", "Timor-Leste"),
        ("MK", "North Macedonia"),
        ("SZ", "Eswatini"),
        ("AX", "Åland Islands"),
        ("AQ", "Antarctica"),
    ],
)
def test_well_known_codes_have_their_short_names(code: str, name: str) -> None:
    assert is_country_code(code)
    assert country_name(code) == name


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("ke", "codes are upper case"),
        ("UK", "the United Kingdom's code is GB"),
        ("EU", "exceptionally reserved, not assigned"),
        ("XK", "user-assigned (Kosovo), not an ISO code"),
        ("AN", "Netherlands Antilles: withdrawn"),
        ("YU", "Yugoslavia: withdrawn"),
        ("", "empty"),
        ("KEN", "alpha-3"),
        (" KE", "padded"),
        (None, "not text"),
        (404, "numeric code"),
    ],
)
def test_things_that_are_not_country_codes(code: object, why: str) -> None:
    assert not is_country_code(code), why


def test_country_name_of_an_unknown_code_names_the_code() -> None:
    with pytest.raises(KeyError, match="XX"):
        country_name("XX")


def test_the_table_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        COUNTRIES["XK"] = "Kosovo"  # type: ignore[index]
