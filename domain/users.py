"""The users log: who may use the system and with which roles, as one event-sourced aggregate.

Every change to the registry of staff (a user added, roles changed, a password set or reset, a second
factor enrolled or removed, a user deactivated or reactivated) is a past-tense event carrying the
actor and the command id. The store keeps `appeals_users` as the read model of this log, written in
the same transaction as its events, and can compare the two (store.users).

Guards: only an active head may add users, change roles, reset another's password, remove a second
factor, deactivate or reactivate; a user may set their own password and enrol their own second
factor. The last active head cannot be deactivated or lose the head role; unknown roles are refused;
a deactivated user cannot be changed, only reactivated. The first head is bootstrapped once, while no
head exists.

The actor `bootstrap` stands for first setup (and test fixtures): it passes the head checks but not
the other rules; it is never a username, and the store does not let the doors act as it.

Messages name staff usernames and roles only (staff, not the defenders the fund protects) and never
a credential. Credentials themselves are not in the events: a password or second factor event holds
only a fingerprint (SHA-256) of the value the store keeps, so a value swapped in the table outside the
log can be detected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.vocab import Role

USERS_LOG_ID = uuid5(NAMESPACE_URL, "urn:urgent-appeals:users-log")
BOOTSTRAP = "bootstrap"
# Names that are actors of their own and may never be usernames.
RESERVED_NAMES = frozenset({BOOTSTRAP, "system"})
HEAD = Role.HEAD.value
ROLES = frozenset(r.value for r in Role)
USERNAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_REASON = 500
# How a password event came about: the user's own, set by a head for someone else, or removed.
SET, RESET, REMOVED = "set", "reset", "removed"


class UsersRuleError(Exception):
    """A change to the users registry that the rules do not allow; nothing was recorded."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class NotPermitted(UsersRuleError):
    """The actor may not make this change (only an active head may, or the user themselves)."""


class BootstrapRefused(UsersRuleError):
    """The first head is bootstrapped once; after that a head adds users."""


class UnknownUser(UsersRuleError):
    pass


class UserExists(UsersRuleError):
    pass


class UnknownRole(UsersRuleError, ValueError):
    """Also a ValueError, as unknown role names were before the users log."""


class LastHead(UsersRuleError):
    """The last active head cannot be deactivated or lose the head role."""


class UserInactive(UsersRuleError):
    """A deactivated user cannot be changed, only reactivated."""


class UserActive(UsersRuleError):
    """Only a deactivated user can be reactivated."""


class InvalidUserField(UsersRuleError):
    """A username, display name, email address or reason that is missing or malformed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_roles(roles: Iterable[str]) -> list[str]:
    """Known role names, sorted and without repeats; at least one."""
    wanted = sorted(set(roles))
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        raise UnknownRole(f"Unknown role {unknown[0]!s:.40}; the roles are "
                          + ", ".join(sorted(ROLES)) + ".")
    if not wanted:
        raise InvalidUserField("roles", "at least one role is required (to remove someone's "
                                        "access, deactivate them)")
    return wanted


def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise InvalidUserField("username", "letters, digits, dots, dashes and underscores only "
                                           "(at most 100)")
    if username.lower() in RESERVED_NAMES:
        raise InvalidUserField("username", f"{username} is reserved")
    return username


def _check_line(field: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit \
            or _CONTROL.search(value):
        raise InvalidUserField(field, f"one line of at most {limit} characters")
    return value


def check_email(email: str) -> str:
    _check_line("email", email, 254)
    local, at, domain = email.partition("@")
    if not at or not local or not domain or "@" in domain or any(c.isspace() for c in email):
        raise InvalidUserField("email", "expected one plain address (user@domain)")
    return email


class UsersLog(Aggregate):
    """All users and their history; one aggregate with a fixed id (USERS_LOG_ID)."""

    # `adopted`: the users already in the registry table when the log started (a registry from
    # before the log); each with username, display_name, email, roles, active and the
    # fingerprints password and second_factor (None when not set).
    @event("LogStarted")
    def __init__(self, adopted: list[dict[str, Any]], actor: str, command_id: str) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        for user in adopted:
            self.users[user["username"]] = {
                "display_name": user["display_name"], "email": user["email"],
                "roles": list(user["roles"]), "active": bool(user["active"]),
                "password": user["password"], "second_factor": user["second_factor"],
            }

    @staticmethod
    def create_id() -> UUID:
        return USERS_LOG_ID

    # ------------------------------------------------------------------------------------ reads
    def user(self, username: str) -> dict[str, Any]:
        try:
            return self.users[username]
        except KeyError:
            raise UnknownUser(f"No user {username!s:.100}.") from None

    def active_heads(self) -> set[str]:
        return {name for name, u in self.users.items() if u["active"] and HEAD in u["roles"]}

    def is_active_head(self, actor: str) -> bool:
        return actor == BOOTSTRAP or actor in self.active_heads()

    # --------------------------------------------------------------------------------- commands
    def bootstrap_head(self, username: str, display_name: str, email: str,
                       command_id: str) -> None:
        if any(HEAD in u["roles"] for u in self.users.values()):
            raise BootstrapRefused("A head already exists, so the first head cannot be "
                                   "bootstrapped again; a head adds users.")
        self._check_new(username, display_name, email)
        self._first_head_bootstrapped(username=username, display_name=display_name, email=email,
                                      roles=[HEAD], actor=BOOTSTRAP, command_id=command_id)

    def add_user(self, actor: str, username: str, display_name: str, email: str,
                 roles: Iterable[str], command_id: str) -> None:
        self._require_head(actor, "add users")
        self._check_new(username, display_name, email)
        self._user_added(username=username, display_name=display_name, email=email,
                         roles=check_roles(roles), actor=actor, command_id=command_id)

    def set_roles(self, actor: str, username: str, roles: Iterable[str], command_id: str) -> None:
        """Replace the user's roles; nothing is recorded when they are the same."""
        self._require_head(actor, "change roles")
        new = check_roles(roles)
        old = self._require_active(username)["roles"]
        if new == old:
            return
        if HEAD in old and HEAD not in new:
            self._require_other_head(username, "lose the head role")
        self._roles_changed(username=username, old=list(old), new=new, actor=actor,
                            command_id=command_id)

    def set_password(self, actor: str, username: str, fingerprint: str | None,
                     command_id: str) -> None:
        """`fingerprint`: of the stored password hash, or None when the password is removed."""
        self._require_self_or_head(actor, username, "set another user's password")
        self._require_active(username)
        change = REMOVED if fingerprint is None else SET if actor == username else RESET
        self._password_set(username=username, change=change, fingerprint=fingerprint,
                           actor=actor, command_id=command_id)

    def enrol_second_factor(self, actor: str, username: str, fingerprint: str,
                            command_id: str) -> None:
        self._require_self_or_head(actor, username, "enrol another user's second factor")
        self._require_active(username)
        self._second_factor_enrolled(username=username, fingerprint=fingerprint, actor=actor,
                                     command_id=command_id)

    def remove_second_factor(self, actor: str, username: str, command_id: str) -> None:
        self._require_head(actor, "remove a second factor")
        if self._require_active(username)["second_factor"] is None:
            return
        self._second_factor_removed(username=username, actor=actor, command_id=command_id)

    def deactivate(self, actor: str, username: str, reason: str, command_id: str) -> None:
        self._require_head(actor, "deactivate users")
        _check_line("reason", reason, MAX_REASON)
        if HEAD in self._require_active(username)["roles"]:
            self._require_other_head(username, "be deactivated")
        self._user_deactivated(username=username, reason=reason, actor=actor,
                               command_id=command_id)

    def reactivate(self, actor: str, username: str, command_id: str) -> None:
        self._require_head(actor, "reactivate users")
        if self.user(username)["active"]:
            raise UserActive(f"User {username} is active; only a deactivated user can be "
                             "reactivated.")
        self._user_reactivated(username=username, actor=actor, command_id=command_id)

    # ----------------------------------------------------------------------------------- guards
    def _require_head(self, actor: str, what: str) -> None:
        if not self.is_active_head(actor):
            raise NotPermitted(f"Only an active head may {what}.")

    def _require_self_or_head(self, actor: str, username: str, what: str) -> None:
        if actor == username and actor in self.users and self.users[actor]["active"]:
            return
        self._require_head(actor, what)

    def _require_active(self, username: str) -> dict[str, Any]:
        user = self.user(username)
        if not user["active"]:
            raise UserInactive(f"User {username} is deactivated; reactivate them first.")
        return user

    def _require_other_head(self, username: str, what: str) -> None:
        if not self.active_heads() - {username}:
            raise LastHead(f"{username} is the last active head and cannot {what}; make "
                           "someone else a head first.")

    def _check_new(self, username: str, display_name: str, email: str) -> None:
        check_username(username)
        _check_line("display name", display_name, 200)
        check_email(email)
        if username in self.users:
            state = "" if self.users[username]["active"] else " (deactivated: reactivate them)"
            raise UserExists(f"User {username} already exists{state}.")

    # ----------------------------------------------------------------------------------- events
    @event("FirstHeadBootstrapped")
    def _first_head_bootstrapped(self, username: str, display_name: str, email: str,
                                 roles: list[str], actor: str, command_id: str) -> None:
        self._add(username, display_name, email, roles)

    @event("UserAdded")
    def _user_added(self, username: str, display_name: str, email: str, roles: list[str],
                    actor: str, command_id: str) -> None:
        self._add(username, display_name, email, roles)

    @event("RolesChanged")
    def _roles_changed(self, username: str, old: list[str], new: list[str], actor: str,
                       command_id: str) -> None:
        self.users[username]["roles"] = list(new)

    @event("PasswordSet")
    def _password_set(self, username: str, change: str, fingerprint: str | None, actor: str,
                      command_id: str) -> None:
        self.users[username]["password"] = fingerprint

    @event("SecondFactorEnrolled")
    def _second_factor_enrolled(self, username: str, fingerprint: str, actor: str,
                                command_id: str) -> None:
        self.users[username]["second_factor"] = fingerprint

    @event("SecondFactorRemoved")
    def _second_factor_removed(self, username: str, actor: str, command_id: str) -> None:
        self.users[username]["second_factor"] = None

    @event("UserDeactivated")
    def _user_deactivated(self, username: str, reason: str, actor: str, command_id: str) -> None:
        self.users[username]["active"] = False

    @event("UserReactivated")
    def _user_reactivated(self, username: str, actor: str, command_id: str) -> None:
        self.users[username]["active"] = True

    def _add(self, username: str, display_name: str, email: str, roles: list[str]) -> None:
        self.users[username] = {"display_name": display_name, "email": email,
                                "roles": list(roles), "active": True, "password": None,
                                "second_factor": None}


def public_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """An event's fields for people to read: fingerprints become whether a value is set."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        if key == "fingerprint":
            continue
        if key == "adopted":
            value = [{**{k: v for k, v in u.items() if k not in ("password", "second_factor")},
                      "password": u.get("password") is not None,
                      "second_factor": u.get("second_factor") is not None} for u in value]
        out[key] = value
    return out
