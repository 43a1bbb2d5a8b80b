"""The codec server decrypts payloads for the Temporal UI, and only for callers with the token."""

from __future__ import annotations

import base64
import os

import httpx
from temporalio.converter import DataConverter

from tests.factories import DEFENDER_NAME
from worker.codec import EncryptionCodec
from worker.codec_server import build_codec_app
from worker.keys import KeyRing

TOKEN = "staff-only-token-0123456789"


async def test_decode_needs_the_token_and_returns_the_plaintext() -> None:
    codec = EncryptionCodec(KeyRing.single(os.urandom(32)))
    app = build_codec_app(codec, TOKEN, ["http://127.0.0.1:8233"])
    [payload] = DataConverter.default.payload_converter.to_payloads([{"name": DEFENDER_NAME}])
    [sealed] = await codec.encode([payload])
    body = {"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                          "data": base64.b64encode(sealed.data).decode()}]}
    assert DEFENDER_NAME.encode() not in sealed.data
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://codec") as client:
        refused = await client.post("/decode", json=body)
        assert refused.status_code == 401
        wrong = await client.post("/decode", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.post("/decode", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        [plain] = ok.json()["payloads"]
        assert DEFENDER_NAME in base64.b64decode(plain["data"]).decode()
        bad = await client.post("/decode", content=b"not json",
                                headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 400 and "payloads" in bad.json()["error"]
