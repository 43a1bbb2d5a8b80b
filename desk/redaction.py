"""Need to know: what the audit views of both doors hide unless a head reveals it.

The audit trail (`CaseStore.trail`) carries every event's details in full. Shown on the audit
pages, exported as CSV or JSON, or printed by `appeals audit`, it goes through `redact`, which
replaces these values with `REDACTED` wherever they occur in an event's details:

- `verifying_source`: who confirmed the threat (the verification, docs/design.md section 2.2);
- `confidential_information`: the intake's confidential part (in the opening and in every later
  version of the intake that further information records).

Hidden values are hidden for every role. A head may reveal them for one view: the door records
the command `reveal_confidential` (event `ConfidentialRevealed`, carrying the head's reason and
nothing of what was shown) on the case first, then shows that view with `reveal=True`. Nothing
else is redacted: the do-no-harm deliberation and the threat analysis stay readable to the
auditors and heads who may open the trail at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

REDACTED = "[redacted: need to know]"
# Keys whose values are hidden wherever they occur in an event's details (at any depth).
CONFIDENTIAL_KEYS = frozenset({"verifying_source", "confidential_information"})
# The command and event by which a head reveals them for one view (both case aggregates).
REVEAL_COMMAND = "reveal_confidential"
REVEAL_EVENT = "ConfidentialRevealed"

Entry = TypeVar("Entry")


def redact(trail_entries: Iterable[Entry], reveal: bool) -> list[Entry]:
    """The entries with every confidential value replaced by REDACTED (copies: the input is not
    changed); with `reveal`, copies of the entries as they are.

    An entry is a dataclass with a `details` mapping (store.app.TrailEntry) or a mapping with a
    `details` key (an entry already turned into JSON); anything else is returned as it is."""
    return [_entry(e, reveal) for e in trail_entries]


def hidden_count(trail_entries: Iterable[Any]) -> int:
    """How many values `redact(..., reveal=False)` hides in these entries (0: nothing to reveal)."""
    return sum(_redacted(_details(e))[1] for e in trail_entries)


def redact_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """One event's details with the confidential values hidden (a copy)."""
    value, _ = _redacted(details)
    return dict(value)


def _entry(entry: Entry, reveal: bool) -> Entry:
    details = _details(entry)
    if details is None:
        return entry
    new = _copy(details) if reveal else _redacted(details)[0]
    if isinstance(entry, Mapping):
        return {**entry, "details": new}  # type: ignore[return-value]
    return dataclasses.replace(entry, details=new)  # type: ignore[type-var]


def _details(entry: Any) -> Mapping[str, Any] | None:
    details = entry.get("details") if isinstance(entry, Mapping) else getattr(entry, "details", None)
    return details if isinstance(details, Mapping) else None


def _redacted(value: Any) -> tuple[Any, int]:
    """A deep copy of `value` with confidential values hidden, and how many were."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        hidden = 0
        for key, item in value.items():
            if key in CONFIDENTIAL_KEYS and item not in (None, "", [], {}):
                out[key] = REDACTED
                hidden += 1
            else:
                out[key], n = _redacted(item)
                hidden += n
        return out, hidden
    if isinstance(value, list | tuple):
        items = [_redacted(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value
