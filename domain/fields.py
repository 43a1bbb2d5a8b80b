"""Small field readers shared by the directory parsers (address book, fund directory)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any


def as_date(value: Any) -> date | None:
    """A calendar date from a TOML date or `YYYY-MM-DD` text; None for anything else
    (including a date with a time, which a last-verified field must not be)."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, date) or isinstance(value, datetime):
        return None
    return value
