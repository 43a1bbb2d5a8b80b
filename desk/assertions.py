"""Signed assertions of who decided: issued by the door that signed the person in, checked by the
worker's activity before anything is recorded.

An assertion is a short-lived JWT (HS256, PyJWT) over the user, their roles, the case, the
decision and the Temporal update id it is for. The key is held by the doors and the workers, never
by a bare Temporal client: a program that can reach Temporal, even one holding the payload key,
cannot record a decision in someone's name. Binding the update id means a captured assertion
cannot be used for another decision; Temporal and the store's command log make the same update id
record nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

ALGORITHM = "HS256"
AUDIENCE = "urgent-appeals/decision"
# Long enough for a slow network and the worker's first attempt; short enough that a captured
# assertion is useless soon after. Activity retries re-check it, so a decision whose recording is
# delayed past this is refused and must be made again (nothing half-recorded).
LIFETIME = timedelta(minutes=10)
# The opening of a case is "open_case", with update id "open".
OPEN = ("open_case", "open")


class InvalidAssertion(Exception):
    """The decision is not signed by a signed-in person, or not for this decision; the message
    says why, without personal data."""


@dataclass(frozen=True)
class Assertion:
    id: str
    user: str
    roles: tuple[str, ...]
    case: str
    decision: str
    update: str
    expires: datetime


def issue(key: bytes, *, user: str, roles: list[str] | tuple[str, ...], case: str, decision: str,
          update: str, now: datetime | None = None, lifetime: timedelta = LIFETIME) -> str:
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user, "roles": sorted(roles), "case": case, "decision": decision,
        "update": update, "jti": str(uuid.uuid4()), "aud": AUDIENCE,
        "iat": int(now.timestamp()), "exp": int((now + lifetime).timestamp()),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(token: Any, key: bytes, *, case: str, decision: str, update: str) -> Assertion:
    """The assertion, if it is valid, unexpired and for exactly this case, decision and update."""
    if not isinstance(token, str) or not token:
        raise InvalidAssertion("the decision carries no signed assertion from a signed-in person")
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE,
                            options={"require": ["sub", "exp", "iat", "jti", "aud"]})
    except jwt.ExpiredSignatureError:
        raise InvalidAssertion("the decision's signed assertion has expired; sign the decision "
                               "again") from None
    except jwt.InvalidTokenError:
        raise InvalidAssertion("the decision's assertion is not validly signed") from None
    for name, wanted in (("case", case), ("decision", decision), ("update", update)):
        if claims.get(name) != wanted:
            raise InvalidAssertion(f"the decision's assertion was issued for another {name}")
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidAssertion("the decision's assertion names no roles")
    return Assertion(id=str(claims["jti"]), user=str(claims["sub"]), roles=tuple(roles),
                     case=case, decision=decision, update=update,
                     expires=datetime.fromtimestamp(int(claims["exp"]), UTC))
