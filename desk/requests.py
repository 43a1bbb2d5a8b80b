"""Idempotency keys: every request through the desk carries one, so that a request repeated after
an unknown outcome (a connection cut after the server recorded it) records nothing new.

The key of a request is derived from who asks, which command, its canonical arguments and the UTC
date, so that the same command typed again the same day is recognised as the same request; a door
may let the person give their own request id instead (`--request-id`), which is scoped to the person
and the command. A decision's key is its Temporal update id (Temporal answers a repeated update id
with the first outcome, and the workflow remembers handled ids across continue-as-new); a case
opening's key is bound to its reference in the store before its workflow is started
(`CaseStore.reserve_reference`).

Keys are hashes: they carry no argument values, names or free text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from desk.errors import InvalidRequest

DOORS = frozenset({"cli", "web"})
_GIVEN = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def canonical(value: Any) -> Any:
    """Plain, order-independent JSON data for hashing (tuples as lists, sets sorted, dates as ISO
    text)."""
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(canonical(v) for v in value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def request_key(door: str, user: str, command: str, arguments: Mapping[str, Any], *,
                day: date | None = None, given: str | None = None) -> str:
    """The idempotency key of a request: `<door>-<40 hex digits>`. With `given` (a request id the
    person chose), the key is that id's, scoped to the person and the command; otherwise it is
    derived from the arguments and the UTC date."""
    if door not in DOORS:
        raise ValueError("door must be cli or web")
    if given is not None:
        if not _GIVEN.match(given):
            raise InvalidRequest("--request-id", "letters, digits and . _ : - only (at most 100)")
        material: list[Any] = ["given", user, command, given]
    else:
        material = ["derived", user, command, canonical(dict(arguments)),
                    (day or datetime.now(UTC).date()).isoformat()]
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False,
                                       separators=(",", ":")).encode()).hexdigest()
    return f"{door}-{digest[:40]}"


def content_digest(data: bytes) -> str:
    """What a file argument contributes to a key: its content's hash (an edited file is a new
    request, the same file again is the same request)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
