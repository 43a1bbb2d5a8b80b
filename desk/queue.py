"""The case list both doors show (the web inbox's queue, `appeals case list`): its filters, checked
once here, and how a deadline reads as a countdown.

A `CaseQuery` holds the filters; `CaseQuery.from_params` reads them from a web query string (the
same names make shareable links) and refuses an unknown filter or value with an `InvalidRequest`
naming the filter. `desk.cases.Desk.cases` runs a query over the store's case index
(`store.app.CaseStore.list_cases`), so each filter is written once for both doors.

Filters (query parameter = meaning):

- `q`: part of a case reference (`0042`, `UA-2026`) or a two-letter country code (`KE`);
- `country`: a country code; `stage`, `risk`, `threat`: one value of their vocabularies;
- `overdue=1`: past the next deadline;
- `mine=held`: cases I hold; `mine=waiting`: cases waiting for a decision of mine;
- `state`: `open` (default on the web), `closed` or `all`;
- `sort`: `deadline` (soonest first, the default), `opened` (newest first) or `reference`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime

from desk.errors import InvalidRequest
from domain.vocab import Stage, ThreatType, Urgency

MINE = ("held", "waiting")
STATES = ("open", "closed", "all")
SORTS = ("deadline", "opened", "reference")
_SEARCH = re.compile(r"^[A-Za-z0-9-]{1,40}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
# Query parameter -> the words a message names it by.
NAMES = {"q": "search", "country": "country", "stage": "stage", "risk": "risk",
         "threat": "threat type", "overdue": "overdue", "mine": "mine", "state": "state",
         "sort": "sort"}


@dataclass(frozen=True)
class CaseQuery:
    """Which cases a list shows, and in what order (see the module's docstring)."""

    q: str | None = None
    country: str | None = None
    stage: str | None = None
    risk: str | None = None
    threat: str | None = None
    overdue: bool = False
    mine: str | None = None
    state: str = "all"
    sort: str = "deadline"

    def checked(self) -> CaseQuery:
        """The same query, normalised; an unknown value is an InvalidRequest naming the filter."""
        q = (self.q or "").strip() or None
        if q is not None and not _SEARCH.match(q):
            raise InvalidRequest("search", "give part of a case reference (letters, digits and "
                                 "hyphens, at most 40) or a two-letter country code")
        country = (self.country or "").strip() or None
        if country is not None and not _COUNTRY.match(country):
            raise InvalidRequest("country", "give a two-letter country code, such as KE")
        return CaseQuery(
            q=q, country=country.upper() if country else None,
            stage=_one_of(self.stage, "stage", [s.value for s in Stage]),
            risk=_one_of(self.risk, "risk", [u.value for u in Urgency]),
            threat=_one_of(self.threat, "threat type", [t.value for t in ThreatType]),
            overdue=bool(self.overdue),
            mine=_one_of(self.mine, "mine", MINE),
            state=_one_of(self.state, "state", STATES) or "all",
            sort=_one_of(self.sort, "sort", SORTS) or "deadline")

    @classmethod
    def from_params(cls, params: Iterable[tuple[str, str]], *,
                    state: str = "open") -> CaseQuery:
        """A query from query-string pairs (repeated or unknown names are refused); `state` is
        the default when the parameters name none."""
        given: dict[str, str] = {}
        for name, value in params:
            if name not in NAMES:
                raise InvalidRequest("filter", f"there is no filter called {_short(name)!r}; "
                                     "the filters are " + ", ".join(NAMES))
            if name in given:
                raise InvalidRequest(NAMES[name], "give it once")
            given[name] = value
        overdue = given.get("overdue", "").strip().lower()
        if overdue not in _TRUE + _FALSE:
            raise InvalidRequest("overdue", "give 1 for overdue cases only, or leave it out")
        return cls(q=given.get("q"), country=given.get("country"),
                   stage=given.get("stage") or None, risk=given.get("risk") or None,
                   threat=given.get("threat") or None, overdue=overdue in _TRUE,
                   mine=given.get("mine") or None, state=given.get("state") or state,
                   sort=given.get("sort") or "deadline").checked()

    def params(self, **changes: str | None) -> dict[str, str]:
        """The query as query-string parameters (filters not set left out), with `changes`
        applied (None removes one): what a link to this list, or to it sorted otherwise,
        carries."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "overdue":
                value = "1" if value else None
            if value not in (None, ""):
                out[f.name] = str(value)
        for name, change in changes.items():
            if change is None:
                out.pop(name, None)
            else:
                out[name] = change
        return out


def _one_of(value: str | None, name: str, allowed: Iterable[str]) -> str | None:
    if value is None or value == "":
        return None
    choices = list(allowed)
    if value not in choices:
        raise InvalidRequest(name, "must be one of " + ", ".join(choices))
    return value


def _short(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "?", text)[:30]


def countdown(deadline: datetime | None, now: datetime) -> str:
    """How far away a deadline is: "in 2 d 4 h", "in 35 min", "overdue 3 h"; "" for none."""
    if deadline is None:
        return ""
    seconds = int((deadline - now).total_seconds())
    days, rest = divmod(abs(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        text = f"{days} d {hours} h" if hours else f"{days} d"
    elif hours:
        text = f"{hours} h"
    else:
        text = f"{max(minutes, 1)} min"
    return f"overdue {text}" if seconds < 0 else f"in {text}"
