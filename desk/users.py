"""User administration for both doors, through the users log (store.users) with the signed-in person
as the actor: the log's rules decide (only an active head adds users, changes roles, resets another's
password, deactivates or reactivates; a user sets their own password). Its refusals become the
desk's named errors; nothing is recorded when it refuses.

Each change carries the request's idempotency key as its command id (desk.requests): repeated after
an unknown outcome, it records nothing new. Setting a password is the exception: the key is derived
from the arguments, and a password is no argument to hash, so each password change is its own.

Deactivating a user or changing their password ends their sessions, on both doors, in the same
transaction (store.users).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from desk.cases import Person
from desk.errors import InvalidRequest, NotAllowed, NotFound, Rejected

T = TypeVar("T")


def _mapped(change: Callable[[], T]) -> T:
    from domain.users import (
        InvalidUserField,
        NotPermitted,
        UnknownRole,
        UnknownUser,
        UsersRuleError,
    )

    try:
        return change()
    except NotPermitted as exc:
        raise NotAllowed(f"{exc.message.rstrip('.')}; nothing was recorded.") from None
    except UnknownUser as exc:
        raise NotFound(exc.message) from None
    except UnknownRole as exc:
        raise InvalidRequest("role", exc.message) from None
    except InvalidUserField as exc:
        raise InvalidRequest(exc.field, exc.reason) from None
    except UsersRuleError as exc:
        raise Rejected(exc.message) from None


def bootstrap_head(store: Any, username: str, display_name: str, email: str, password_hash: str,
                   *, request_id: str) -> None:
    """The first head, with her password (set by herself, as the log records it); refused
    (Rejected) once any user has the head role. Nobody is signed in yet: this is first setup."""
    _mapped(lambda: store.users.bootstrap_head(username, display_name, email,
                                                command_id=request_id))
    _mapped(lambda: store.users.set_password(username, password_hash, actor=username))


def add_user(store: Any, person: Person, username: str, display_name: str, email: str,
             roles: Iterable[str], *, request_id: str) -> None:
    wanted = list(roles)
    _mapped(lambda: store.users.add(username, display_name, email, wanted,
                                    actor=person.username, command_id=request_id))


def set_roles(store: Any, person: Person, username: str, roles: Iterable[str], *,
              request_id: str) -> None:
    wanted = list(roles)
    _mapped(lambda: store.users.set_roles(username, wanted, actor=person.username,
                                          command_id=request_id))


def set_password(store: Any, person: Person, username: str, password_hash: str) -> None:
    """The person's own password, or (a head) someone else's; the user's sessions end."""
    _mapped(lambda: store.users.set_password(username, password_hash, actor=person.username))


def deactivate(store: Any, person: Person, username: str, reason: str, *,
               request_id: str) -> None:
    _mapped(lambda: store.users.deactivate(username, reason, actor=person.username,
                                           command_id=request_id))


def reactivate(store: Any, person: Person, username: str, *, request_id: str) -> None:
    _mapped(lambda: store.users.reactivate(username, actor=person.username,
                                           command_id=request_id))


def log(store: Any) -> list[dict[str, Any]]:
    """Every change to users and roles, in order (no credential)."""
    return [{"version": e.version, "at": e.at, "actor": e.actor, "event": e.event,
             "command_id": e.command_id, "details": e.details} for e in store.users.log()]


def verify(store: Any) -> dict[str, Any]:
    """The users log's chain, and every user whose table row differs from the log."""
    report = store.users.verify()
    return {"ok": report.ok, "chain": {"ok": report.chain.ok, "text": report.chain.describe()},
            "differences": [{"username": d.username, "problem": d.problem}
                            for d in report.differences],
            "lines": report.describe()}
