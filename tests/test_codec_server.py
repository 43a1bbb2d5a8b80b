"""The codec server decrypts payloads for the Temporal UI, and only for callers with the token;
it encodes only for the UI's own page, and reads only the codec keys and its token."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from temporalio.converter import DataConverter

from tests.dev_stack import ROOT, free_port
from tests.factories import DEFENDER_NAME
from worker.codec import EncryptionCodec
from worker.codec_server import (
    CodecServerSettings,
    build_codec_app,
    load_codec_server_settings,
    misplaced_secrets,
)
from worker.keys import KeyRing, encode_key
from worker.settings import Settings, error_line, load_settings

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


# --- who may call: the token, and for /encode the Temporal UI's own page -------------------------
UI = "https://temporal-ui.secretariat.test"


def plain_body(text: str = "clean") -> dict[str, Any]:
    return {"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                          "data": base64.b64encode(json.dumps(text).encode()).decode()}]}


@pytest.fixture
def codec_client() -> Iterator[httpx.AsyncClient]:
    app = build_codec_app(EncryptionCodec(KeyRing.single(os.urandom(32))), TOKEN, [UI + "/"])
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


async def test_encode_is_only_for_the_temporal_ui_with_the_token(codec_client: httpx.AsyncClient) -> None:
    token = {"Authorization": f"Bearer {TOKEN}"}
    async with codec_client as client:
        # The token alone is not enough: encoding makes payloads the workers take as genuine.
        assert (await client.post("/encode", json=plain_body(), headers=token)).status_code == 403
        other = await client.post("/encode", json=plain_body(),
                                  headers={**token, "Origin": "https://evil.example"})
        assert other.status_code == 403
        assert (await client.post("/encode", json=plain_body(), headers={"Origin": UI})).status_code == 401
        ok = await client.post("/encode", json=plain_body(), headers={**token, "Origin": UI.upper()})
        assert ok.status_code == 200 and b"clean" not in base64.b64decode(ok.json()["payloads"][0]["data"])
        # What the UI encoded, the UI (or a tool with the token) can decode again.
        back = await client.post("/decode", json=ok.json(), headers={**token, "Origin": UI})
        assert back.json() == plain_body()
        assert (await client.post("/decode", json=ok.json(), headers=token)).json() == plain_body()


async def test_decode_from_another_page_is_refused_even_with_the_token(
        codec_client: httpx.AsyncClient) -> None:
    async with codec_client as client:
        sealed = await client.post("/encode", json=plain_body(),
                                   headers={"Authorization": f"Bearer {TOKEN}", "Origin": UI})
        refused = await client.post("/decode", json=sealed.json(), headers={
            "Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"})
        assert refused.status_code == 403 and "clean" not in refused.text
        assert (await client.post("/decode", json=sealed.json(), headers={"Origin": UI})).status_code == 401


async def test_browsers_are_told_only_the_ui_may_call(codec_client: httpx.AsyncClient) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    async with codec_client as client:
        ui = await client.options("/decode", headers={**preflight, "Origin": UI})
        assert ui.status_code == 200 and ui.headers["access-control-allow-origin"] == UI
        evil = await client.options("/decode", headers={**preflight, "Origin": "https://evil.example"})
        assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers


@pytest.mark.parametrize("origin", ["*", "temporal-ui.example.org", "https://ui.example.org/path",
                                    "ftp://ui.example.org", "https://user@ui.example.org"])
def test_an_origin_that_is_not_one_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="APPEALS_CODEC_SERVER_UI_ORIGINS"):
        build_codec_app(EncryptionCodec(KeyRing.single(os.urandom(32))), TOKEN, [origin])


# --- what the codec server reads: its own narrow settings ----------------------------------------
@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("APPEALS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APPEALS_VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


def codec_server_secrets(tmp_path: Path) -> dict[str, str]:
    """Production: the codec keys and the token from files, as docker-compose.yml gives them."""
    folder = tmp_path / "run-secrets"
    folder.mkdir(exist_ok=True)
    (folder / "codec_keys").write_text(f"k2:{encode_key(os.urandom(32))},k1:{encode_key(os.urandom(32))}\n")
    (folder / "codec_server_token").write_text(TOKEN + "\n")
    return {"APPEALS_ENVIRONMENT": "production",
            "APPEALS_CODEC_KEYS_FILE": str(folder / "codec_keys"),
            "APPEALS_CODEC_SERVER_TOKEN_FILE": str(folder / "codec_server_token"),
            "APPEALS_CODEC_SERVER_UI_ORIGINS": json.dumps([UI])}


def test_production_codec_server_needs_only_the_codec_keys_and_its_token(
        env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in codec_server_secrets(tmp_path).items():
        env.setenv(name, value)
    # No event store key, no database, no contacts, no signatory, no Temporal certificate: the
    # full settings would refuse to start; the codec server's own settings do not ask for them.
    with pytest.raises(ValidationError):
        load_settings()
    settings = load_codec_server_settings()
    assert settings.codec_keyring().current_id == "k2" and set(settings.codec_keyring().keys) == {"k1", "k2"}
    assert settings.token == TOKEN and settings.codec_server_ui_origins == [UI]
    assert not (tmp_path / "var").exists()


def test_the_codec_server_settings_are_a_subset_of_the_documented_ones() -> None:
    for name, info in CodecServerSettings.model_fields.items():
        assert name in Settings.model_fields, name
        documented = Settings.model_fields[name]
        assert info.annotation == documented.annotation, name
        if info.default_factory is None:
            assert info.default == documented.default, name
    assert set(CodecServerSettings.secret_file_fields) <= set(Settings.secret_file_fields)
    assert not {"event_cipher_key", "database_url", "database_password", "smtp_password",
                "temporal_tls_key_file"} & set(CodecServerSettings.model_fields)


@pytest.mark.parametrize(("change", "message"), [
    ({"APPEALS_CODEC_SERVER_TOKEN_FILE": ""},
     "APPEALS_CODEC_SERVER_TOKEN: the codec server needs an access token of at least 16 characters"),
    ({"APPEALS_CODEC_SERVER_TOKEN_FILE": "", "APPEALS_CODEC_SERVER_TOKEN": "short"},
     "APPEALS_CODEC_SERVER_TOKEN: the codec server needs an access token of at least 16 characters"),
    ({"APPEALS_CODEC_SERVER_UI_ORIGINS": "[]"},
     "APPEALS_CODEC_SERVER_UI_ORIGINS: production needs the Temporal UI's origin"),
    ({"APPEALS_CODEC_SERVER_UI_ORIGINS": '["*"]'}, "APPEALS_CODEC_SERVER_UI_ORIGINS: '*' is not an origin"),
    ({"APPEALS_CODEC_KEYS_FILE": ""},
     "settings: production needs APPEALS_CODEC_KEYS, or APPEALS_CODEC_KEY_FILE"),
    ({"APPEALS_CODEC_KEYS_FILE": "/run/secrets/nowhere"},
     "APPEALS_CODEC_KEYS_FILE: /run/secrets/nowhere cannot be read (No such file or directory)"),
])
def test_a_codec_server_misconfiguration_is_one_line_naming_the_variable(
        env: pytest.MonkeyPatch, tmp_path: Path, change: dict[str, str], message: str) -> None:
    for name, value in {**codec_server_secrets(tmp_path), **change}.items():
        if value:
            env.setenv(name, value)
        else:
            env.delenv(name, raising=False)
    with pytest.raises(ValidationError) as info:
        load_codec_server_settings()
    assert error_line(info.value).startswith(message) and TOKEN not in str(info.value)


def test_the_other_services_secrets_in_its_environment_are_named() -> None:
    assert misplaced_secrets({"APPEALS_EVENT_CIPHER_KEY": "x", "APPEALS_DATABASE_PASSWORD_FILE": "/r",
                              "APPEALS_CODEC_KEYS": "k1:x", "APPEALS_SMTP_PASSWORD": ""}) == \
        ["APPEALS_DATABASE_PASSWORD_FILE", "APPEALS_EVENT_CIPHER_KEY"]


def test_the_codec_server_process_starts_with_its_secrets_from_files(tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("APPEALS_")},
           **codec_server_secrets(tmp_path), "APPEALS_CODEC_SERVER_PORT": str(port),
           "APPEALS_EVENT_CIPHER_KEY": encode_key(os.urandom(32))}  # wrongly given: warned about
    log = tmp_path / "codec-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker.codec_server"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": UI}
        for _ in range(150):
            assert proc.poll() is None, log.read_text()
            try:
                answer = httpx.post(f"{url}/encode", json=plain_body(), headers=headers, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer.status_code == 200
        assert httpx.post(f"{url}/decode", json=answer.json(), headers=headers).json() == plain_body()
        assert httpx.post(f"{url}/encode", json=plain_body(),
                          headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
    finally:
        proc.terminate()
        proc.wait(15)
    text = log.read_text()
    assert "never reads APPEALS_EVENT_CIPHER_KEY" in text and env["APPEALS_EVENT_CIPHER_KEY"] not in text
    assert TOKEN not in text


def test_the_codec_server_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("APPEALS_")},
           "APPEALS_VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run([sys.executable, "-m", "worker.codec_server"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("codec server: cannot start: APPEALS_CODEC_SERVER_TOKEN: the codec "
                                     "server needs an access token of at least 16 characters")


async def test_without_a_token_only_the_ui_page_may_call() -> None:
    """The embedded stack's mode (`make run`: loopback, a dev UI with no sign-in to forward a
    token): no token, so the UI's own page is the only caller, of /decode as of /encode."""
    with pytest.raises(ValueError, match="UI's origin"):
        build_codec_app(EncryptionCodec(KeyRing.single(os.urandom(32))), None, [])
    app = build_codec_app(EncryptionCodec(KeyRing.single(os.urandom(32))), None, [UI])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as client:
        sealed = await client.post("/encode", json=plain_body(), headers={"Origin": UI})
        assert sealed.status_code == 200
        back = await client.post("/decode", json=sealed.json(), headers={"Origin": UI})
        assert back.json() == plain_body()
        for headers in ({}, {"Origin": "https://evil.example"},
                        {"Authorization": f"Bearer {TOKEN}"}):
            assert (await client.post("/decode", json=sealed.json(), headers=headers)).status_code == 403
            assert (await client.post("/encode", json=plain_body(), headers=headers)).status_code == 403
