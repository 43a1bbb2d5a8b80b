"""The staff web interface (issue 6): `build_app` for an ASGI app, `serve` to run it in the stack's
event loop, `set_password` / `enable_totp` for the users' credentials (setup and tests; people
change their own on the web's account page)."""

from web.app import DEFAULT_WEB_PORT, build_app, serve
from web.auth import (
    GENERIC_REFUSAL,
    PasswordRejected,
    ThrottlePolicy,
    disable_totp,
    enable_totp,
    set_password,
)

__all__ = ["DEFAULT_WEB_PORT", "GENERIC_REFUSAL", "PasswordRejected", "ThrottlePolicy", "build_app",
           "disable_totp", "enable_totp", "serve", "set_password"]
