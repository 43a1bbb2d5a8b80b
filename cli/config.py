"""The command line's own files: the session of `appeals login`, in the user's configuration
directory.

Where: the `config_dir` setting (`APPEALS_CONFIG_DIR`), else the platform's configuration folder:
`$XDG_CONFIG_HOME/appeals` (default `~/.config/appeals`) on Linux and other Unixes,
`~/Library/Application Support/appeals` on macOS, `%APPDATA%\\appeals` on Windows. The folder is
kept 0700 and each session file 0600; a session file that others may read is not used.

One session per deployment (the event store that holds the sessions), in
`session-<12 hex digits>.json`: the user name, the token (the store keeps only its SHA-256) and when
it expires. The token is what proves the person on this machine; the store can end it at any time
(sign-out, password change, deactivation).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

APP = "appeals"
# A command-line session lasts a working day at most, and ends after two hours without a command.
SESSION_LIFETIME = timedelta(hours=12)
SESSION_IDLE = timedelta(hours=2)


@dataclass(frozen=True)
class Session:
    username: str
    token: str
    expires_at: datetime


def config_dir(settings: Any) -> Path:
    configured = getattr(settings, "config_dir", None)
    if configured:
        return Path(configured)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / APP


def deployment(settings: Any) -> str:
    """Which deployment a session belongs to: its event store (which holds the sessions), as a
    short hash (no address in the file name)."""
    from sqlalchemy.engine import make_url
    try:
        database = make_url(settings.database_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any URL still names a deployment
        database = str(settings.database_url).split("@")[-1]
    return hashlib.sha256(str(database).encode()).hexdigest()[:12]


def session_path(settings: Any) -> Path:
    return config_dir(settings) / f"session-{deployment(settings)}.json"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sys.platform != "win32" and stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)


def save_session(settings: Any, session: Session) -> Path:
    """Write the session file (0600, in a 0700 folder), replacing any earlier one at once."""
    path = session_path(settings)
    _private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"username": session.username, "token": session.token,
                       "expires_at": session.expires_at.isoformat()}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def read_session(settings: Any) -> Session | None:
    """The session saved for this deployment; None when there is none, or it is unusable (not
    private, malformed)."""
    path = session_path(settings)
    try:
        info = path.stat()
    except OSError:
        return None
    if sys.platform != "win32" and (stat.S_IMODE(info.st_mode) & 0o077
                                    or info.st_uid != os.getuid()):
        from cli.common import BadInput
        raise BadInput("session", f"{path} may be read by others; it is not used (delete it and "
                       "sign in again with `appeals login`)")
    try:
        data = json.loads(path.read_text())
        return Session(str(data["username"]), str(data["token"]),
                       datetime.fromisoformat(str(data["expires_at"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget_session(settings: Any) -> Session | None:
    """Delete the session file (what it held, if anything)."""
    try:
        session = read_session(settings)
    except Exception:  # noqa: BLE001 - an unsafe file is deleted all the same
        session = None
    with contextlib.suppress(FileNotFoundError):
        session_path(settings).unlink()
    return session
