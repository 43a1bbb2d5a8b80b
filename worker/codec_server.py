"""The codec server: the Temporal UI sends encrypted payloads here to show them to staff.

It serves the same payload codec as the worker (`worker.codec`), so only someone who can reach it
with the shared access token reads payloads in plain text; the Temporal server and everybody else
see only ciphertext. Endpoints follow Temporal's remote codec protocol: POST /decode and /encode
with `{"payloads": [...]}` in protobuf JSON. Run: `python -m worker.codec_server`.

- `/decode` needs the token; a browser page of any other origin than the UI's is refused.
- `/encode` needs the token *and* the request must come from the UI's own page (its `Origin`):
  encoding makes payloads the workers accept as genuine, so nothing else may use it.

`make run` (stack.main) serves the same app on loopback for the dev server's UI, which has no
sign-in and so no token to forward: there, without a token, both endpoints answer only requests
from the UI's own page.

It reads only what it needs (`CodecServerSettings`): the payload codec keys, its token, the UI's
origins and where to listen. It never holds the event store key, the database password or the
Temporal client certificate, and warns when its environment carries them.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from google.protobuf import json_format
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from worker.codec import EncryptionCodec, PayloadDecryptionError
from worker.keys import KeyMaterialError, KeyRing, load_or_create_key_file, read_key_file
from worker.settings import (
    ENV_PREFIX,
    FILE_SUFFIX,
    SecretFileSettings,
    _require_key_file,
    error_line,
)

log = logging.getLogger("appeals.codec_server")

MAX_BODY = 4 * 1024 * 1024
MIN_TOKEN_LENGTH = 16
# Settings of the other services that the codec server must not be given (docs/operations.md).
NOT_FOR_THE_CODEC_SERVER = ("event_cipher_key", "event_cipher_key_file", "database_url",
                            "database_password", "smtp_password", "decision_key_file",
                            "temporal_tls_key_file")


def _env(field: str) -> str:
    return ENV_PREFIX + field.upper()


def normalise_origin(value: str) -> str:
    """`scheme://host[:port]` in lower case, as browsers send it in `Origin`; ValueError otherwise."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{_env('codec_server_ui_origins')}: {value[:80]!r} is not an origin "
                         "like https://temporal-ui.example.org")
    return f"{parts.scheme}://{parts.netloc}".lower()


class CodecServerSettings(SecretFileSettings):
    """The codec server's settings: a subset of `worker.settings.Settings` (same variables, same
    meaning; the README's configuration table describes them), and nothing else."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, use_attribute_docstrings=True,
                                      hide_input_in_errors=True, extra="forbid")
    secret_file_fields = ("codec_keys", "codec_server_token")

    environment: Literal["development", "production"] = "development"
    var_dir: Path = Path("var")
    codec_keys: SecretStr | None = None
    codec_key_file: Path = Field(
        default_factory=lambda data: data["var_dir"] / "keys" / "payload-codec.key")
    codec_server_token: SecretStr | None = None
    codec_server_ui_origins: list[str] = Field(default_factory=list)
    codec_server_host: str = "127.0.0.1"
    codec_server_port: int = Field(default=8888, ge=1, le=65535)

    @field_validator("codec_keys")
    @classmethod
    def _codec_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            KeyRing.parse(value.get_secret_value(), setting=_env("codec_keys"))
        return value

    @field_validator("codec_server_token")
    @classmethod
    def _token_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"{_env('codec_server_token')}: the codec server needs an access "
                             f"token of at least {MIN_TOKEN_LENGTH} characters")
        return value

    @field_validator("codec_server_ui_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        return [normalise_origin(origin) for origin in value]

    @model_validator(mode="after")
    def _production_is_explicit(self) -> CodecServerSettings:
        if self.codec_server_token is None:  # unset: its field validator did not run
            raise ValueError(f"{_env('codec_server_token')}: the codec server needs an access "
                             f"token of at least {MIN_TOKEN_LENGTH} characters")
        if self.environment == "production":
            if self.codec_keys is None:
                _require_key_file(self.codec_key_file, "codec_keys", "codec_key_file")
            if not self.codec_server_ui_origins:
                raise ValueError(f"{_env('codec_server_ui_origins')}: production needs the "
                                 "Temporal UI's origin, the only page allowed to call")
        return self

    @property
    def token(self) -> str:
        assert self.codec_server_token is not None  # checked above
        return self.codec_server_token.get_secret_value()

    def codec_keyring(self) -> KeyRing:
        """As `Settings.codec_keyring`: the key ring, or one key from the key file."""
        if self.codec_keys is not None:
            return KeyRing.parse(self.codec_keys.get_secret_value(), setting=_env("codec_keys"))
        if self.environment == "development":
            return KeyRing.single(load_or_create_key_file(self.codec_key_file))
        return KeyRing.single(read_key_file(self.codec_key_file))


def load_codec_server_settings(**overrides: Any) -> CodecServerSettings:
    return CodecServerSettings(**overrides)


def misplaced_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """The variables of other services' secrets present in this environment (names only)."""
    environ = dict(os.environ if environ is None else environ)
    names = [_env(f) for f in NOT_FOR_THE_CODEC_SERVER]
    names += [n + FILE_SUFFIX for n in names if not n.endswith(FILE_SUFFIX)]
    return sorted(n for n in names if environ.get(n))


def build_codec_app(codec: PayloadCodec, token: str | None, ui_origins: list[str]) -> Starlette:
    """`token`: the bearer token the UI forwards (staff with access have it); `ui_origins`: the
    Temporal UI's address(es), the only pages allowed to call from a browser and the only callers
    of /encode. `token` None is for the embedded development stack only (`make run`, loopback):
    every request must then come from the UI's own page, /decode too."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"codec server: the access token must be at least {MIN_TOKEN_LENGTH} "
                         "characters")
    allowed = frozenset(normalise_origin(o) for o in ui_origins)
    if token is None and not allowed:
        raise ValueError("codec server: without a token it answers only the Temporal UI's page; "
                         "give the UI's origin")

    async def handle(request: Request, decode: bool) -> Response:
        given = request.headers.get("authorization", "")
        if token is not None and not hmac.compare_digest(given.encode(),
                                                         f"Bearer {token}".encode()):
            return JSONResponse({"error": "not authorised"}, status_code=401)
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() not in allowed:
            return JSONResponse({"error": "this origin may not call the codec server"},
                                status_code=403)
        if origin is None and (token is None or not decode):
            what = "encoding" if not decode else "this codec server"
            return JSONResponse({"error": f"{what} is only for the Temporal UI"}, status_code=403)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, ValueError):
            return JSONResponse({"error": "body must be {\"payloads\": [...]}"}, status_code=400)
        try:
            if decode:
                out = await codec.decode(payloads.payloads)
            else:
                out = await codec.encode(payloads.payloads)
        except PayloadDecryptionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        result: dict[str, Any] = json_format.MessageToDict(Payloads(payloads=out))
        return Response(json.dumps(result), media_type="application/json")

    async def decode(request: Request) -> Response:
        return await handle(request, decode=True)

    async def encode(request: Request) -> Response:
        return await handle(request, decode=False)

    return Starlette(
        routes=[Route("/decode", decode, methods=["POST"]), Route("/encode", encode, methods=["POST"])],
        middleware=[Middleware(CORSMiddleware, allow_origins=sorted(allowed), allow_methods=["POST"],
                               allow_headers=["authorization", "content-type", "x-namespace"],
                               allow_credentials=True)],
    )


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_codec_server_settings()
        app = build_codec_app(EncryptionCodec(settings.codec_keyring()), settings.token,
                              settings.codec_server_ui_origins)
    except (ValidationError, KeyMaterialError, ValueError) as exc:
        print(f"codec server: cannot start: {error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    if misplaced := misplaced_secrets():
        log.warning("the codec server never reads %s: remove them from its environment, it needs "
                    "only the payload codec keys and its token (docs/operations.md)",
                    ", ".join(misplaced))
    if not settings.codec_server_ui_origins:
        log.warning("%s is empty: no browser page may call, and /encode is refused to everyone",
                    _env("codec_server_ui_origins"))
    uvicorn.run(app, host=settings.codec_server_host, port=settings.codec_server_port,
                server_header=False, access_log=False)


if __name__ == "__main__":
    main()
