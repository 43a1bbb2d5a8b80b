"""The codec server: the Temporal UI sends encrypted payloads here to show them to staff.

It serves the same payload codec as the worker (`worker.codec`), so only someone who can reach it
with the shared access token reads payloads in plain text; the Temporal server and everybody else
see only ciphertext. Endpoints follow Temporal's remote codec protocol: POST /decode and /encode
with `{"payloads": [...]}` in protobuf JSON. Run: `python -m worker.codec_server`.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from worker.codec import EncryptionCodec, PayloadDecryptionError
from worker.settings import load_settings

MAX_BODY = 4 * 1024 * 1024


def build_codec_app(codec: PayloadCodec, token: str, ui_origins: list[str]) -> Starlette:
    """`token`: the bearer token the UI forwards (staff with access have it); `ui_origins`: the
    Temporal UI's address(es), the only pages allowed to call from a browser."""
    if len(token) < 16:
        raise ValueError("codec server: the access token must be at least 16 characters")

    async def handle(request: Request, decode: bool) -> Response:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "not authorised"}, status_code=401)
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
        middleware=[Middleware(CORSMiddleware, allow_origins=ui_origins, allow_methods=["POST"],
                               allow_headers=["authorization", "content-type", "x-namespace"],
                               allow_credentials=True)],
    )


def main() -> None:
    import uvicorn

    settings = load_settings()
    token = settings.codec_server_token.get_secret_value() if settings.codec_server_token else ""
    app = build_codec_app(EncryptionCodec(settings.codec_keyring()), token,
                          settings.codec_server_ui_origins)
    uvicorn.run(app, host=settings.metrics_host, port=settings.codec_server_port)


if __name__ == "__main__":
    main()
