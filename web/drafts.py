"""Forms kept across an ended session (issue: a session ending while someone types must not lose
their text).

When a form is sent after its session ended (expired, or idle too long), the web checks that the
form came from that session's own page (its CSRF token is the one derived from the session's token)
and that the session was not ended on purpose (signed out, revoked by a password change or a
deactivation). Then the form's fields are kept in `appeals_drafts`, sealed with AES-GCM under the
TOTP key (desk.secrets) and bound to their owner and the draft's id, and the browser is sent to sign
in. When the same person signs in again on that browser, the form comes back filled in as it was,
once; nothing of it was recorded. A draft nobody comes back for is deleted after DRAFT_LIFETIME.

Written here by hand (a table and a sealed JSON value): it is a few lines over the store's engine
and the sealing the TOTP secrets use already.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select

from desk.secrets import SealError, seal, unseal
from store import schema

DRAFT_LIFETIME = timedelta(hours=24)
MAX_DRAFT_FIELDS = 1000
_RETURNED = "returned:"


def _id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ended_session_owner(store: Any, token: str) -> str | None:
    """The user of a session that ended by itself (expired or idle), if that user is active;
    None for an unknown token or a session ended on purpose (signed out, revoked)."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    s, u = schema.sessions, schema.users
    with store.engine.connect() as conn:
        row = conn.execute(select(s.c.username, s.c.revoked_at, u.c.active)
                           .select_from(s.outerjoin(u, s.c.username == u.c.username))
                           .where(s.c.id == _id(token))).first()
    if row is None or row.revoked_at is not None or not row.active:
        return None
    return str(row.username)


def _keep(store: Any, key: bytes, username: str, stored_path: str, body: dict[str, Any],
          context: str, lifetime: timedelta, now: datetime) -> str:
    """Seal `body` for `username` under a new token (`context` + the token's id binds it)."""
    token = secrets.token_urlsafe(24)
    sealed = seal(key, json.dumps(body, ensure_ascii=False), context=f"{context}{_id(token)}")
    with store.engine.begin() as conn:
        conn.execute(insert(schema.drafts).values(id=_id(token), username=username,
                                                  path=stored_path[:300], sealed=sealed,
                                                  expires_at=now + lifetime))
    return token


def _owned(conn: Any, token: str, username: str, *, returned: bool) -> Any:
    """The row of this token if it is `username`'s and of the asked kind (a draft, or a form
    sent back); None otherwise, also for a malformed token."""
    if not isinstance(token, str) or not token or len(token) > 100:
        return None
    d = schema.drafts
    row = conn.execute(select(d.c.username, d.c.path, d.c.sealed, d.c.expires_at)
                       .where(d.c.id == _id(token))).first()
    if row is None or row.username != username:
        return None
    return row if str(row.path).startswith(_RETURNED) == returned else None


def _opened(key: bytes, row: Any, context: str, token: str,
            now: datetime) -> dict[str, Any] | None:
    """The body of a row not yet expired, unsealed; None if expired or it does not unseal."""
    expires = schema.utc(row.expires_at)
    if expires is None or expires <= now:
        return None
    try:
        body = json.loads(unseal(key, row.sealed, context=f"{context}{_id(token)}"))
    except (SealError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def save_draft(store: Any, key: bytes, username: str, path: str,
               fields: list[tuple[str, str]], now: datetime) -> str:
    """Keep a form's fields for `username`; the draft's token (for the browser's session)."""
    return _keep(store, key, username, path,
                 {"path": path, "fields": fields[:MAX_DRAFT_FIELDS]},
                 f"draft:{username}:", DRAFT_LIFETIME, now)


def take_draft(store: Any, key: bytes, token: str, username: str,
               now: datetime) -> tuple[str, list[tuple[str, str]]] | None:
    """The draft of this token, if it is `username`'s and not expired: its path and fields. It is
    deleted as it is taken (a draft comes back once)."""
    with store.engine.begin() as conn:
        row = _owned(conn, token, username, returned=False)
        if row is None:
            return None
        conn.execute(delete(schema.drafts).where(schema.drafts.c.id == _id(token)))
    body = _opened(key, row, f"draft:{username}:", token, now)
    if body is None:
        return None
    fields = [(str(k), str(v)) for k, v in body.get("fields", [])]
    return str(body.get("path", "")), fields


def draft_path(store: Any, token: str, username: str) -> str | None:
    """Where the draft of this token was being sent, if it is `username`'s (not taken)."""
    with store.engine.connect() as conn:
        row = _owned(conn, token, username, returned=False)
    return None if row is None else str(row.path)


def prune_drafts(store: Any, now: datetime) -> int:
    """Delete drafts past their lifetime; how many."""
    with store.engine.begin() as conn:
        return int(conn.execute(delete(schema.drafts)
                                .where(schema.drafts.c.expires_at < now)).rowcount)


# ------------------------------------------------------------------ forms sent back (PRG)
# A form the web refused (or a preview it showed) comes back through a redirect, so that the
# browser's history holds only pages fetched with GET: Back or Reload never sends a form again.
# What the page needs to show it again (the fields as typed, the message, the status code) is kept
# like a draft, sealed and bound to its owner, under a token that the redirect's URL carries; it is
# read as often as the page is reloaded, for RETURNED_LIFETIME, and only by its owner.
RETURNED_LIFETIME = timedelta(hours=2)


def save_returned(store: Any, key: bytes, username: str, path: str, state: dict[str, Any],
                  code: int, now: datetime) -> str:
    """Keep what a refused form's page shows (`state`, JSON-able) for `username`; its token."""
    return _keep(store, key, username, _RETURNED + path,
                 {"path": path, "state": state, "code": code},
                 f"{_RETURNED}{username}:", RETURNED_LIFETIME, now)


def read_returned(store: Any, key: bytes, token: str, username: str, path: str,
                  now: datetime) -> tuple[dict[str, Any], int] | None:
    """The state and status code kept under `token`, if it is `username`'s, for this page, and not
    expired; None otherwise (the page then shows as it is now). Not deleted: a reload shows it
    again."""
    with store.engine.connect() as conn:
        row = _owned(conn, token, username, returned=True)
    body = None if row is None else _opened(key, row, f"{_RETURNED}{username}:", token, now)
    if body is None or body.get("path") != path or not isinstance(body.get("state"), dict):
        return None
    return body["state"], int(body.get("code") or 200)


def drop_returned(store: Any, username: str, path: str) -> int:
    """Forget what refused forms of `username` left for the page at `path`, once a form of that
    page went through: Back then shows the page as it is now, not an error that no longer holds."""
    d = schema.drafts
    with store.engine.begin() as conn:
        return int(conn.execute(delete(d).where(d.c.username == username,
                                                d.c.path == (_RETURNED + path)[:300])).rowcount)
