"""The embedded stack as `make run` starts it (`python -m stack`), driven by the `appeals` command
as a newcomer would: the README walkthrough is executed here, so it cannot drift from the code.
Then the stack is stopped and started again, and a case that was waiting for consent continues."""

from __future__ import annotations

import base64
import contextlib
import json
import mailbox
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.dev_stack import ROOT, free_port
from worker.main import store_for
from worker.settings import Settings, load_settings, reference_markdown

README = ROOT / "README.md"
# The first passwords the walkthrough gives (on standard input); later commands sign in with them.
PASSWORDS = {"hana": "hana's own passphrase", "olga": "olga's first passphrase",
             "lina": "lina's first passphrase"}


def walkthrough() -> str:
    """The README walkthrough's shell block (between its markers), as written."""
    text = README.read_text()
    block = text.split("<!-- walkthrough:start -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    return block.split("```sh\n", 1)[1].split("```", 1)[0]


@dataclass
class Embedded:
    env: dict[str, str]
    home: Path
    proc: subprocess.Popen[str] | None = None
    signed_in: set[str] = field(default_factory=set)

    def start(self) -> None:
        log = (self.home / "stack.log").open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "stack"], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("Ready."):
                return
        raise AssertionError(f"stack did not start: {(self.home / 'stack.log').read_text()[-3000:]}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.proc.wait(60)

    def appeals(self, *args: str, user: str = "olga", check: bool = True,
                stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`appeals ARGS` as `user`, signed in on their own machine (a configuration directory
        of their own) with the password the walkthrough gave them."""
        env = {**self.env, "APPEALS_CONFIG_DIR": str(self.home / "config" / user)}
        if user not in self.signed_in and args[:1] != ("login",):
            self.signed_in.add(user)
            self.appeals("login", user, user=user, stdin=PASSWORDS[user] + "\n")
        result = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                                input=stdin, capture_output=True, text=True, timeout=120)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def settings(self) -> Settings:
        return load_settings(var_dir=self.home / "var")

    def stage(self, ref: str) -> str:
        return str(json.loads(self.appeals("case", "show", ref, "--json").stdout)["stage"])

    def wait_for_stage(self, ref: str, stage: str, seconds: float = 60) -> None:
        end = time.monotonic() + seconds
        while self.stage(ref) != stage:
            assert time.monotonic() < end, f"{ref} never reached {stage}"
            time.sleep(0.5)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APPEALS_")}
    env = {**clean, "APPEALS_VAR_DIR": str(tmp_path / "var"),
           "APPEALS_CONFIG_DIR": str(tmp_path / "config" / "walkthrough"),
           "APPEALS_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
           "APPEALS_TEMPORAL_UI_PORT": str(free_port()), "APPEALS_SMTP_PORT": str(free_port()),
           "APPEALS_WEB_PORT": str(free_port()), "APPEALS_CODEC_SERVER_PORT": str(free_port())}
    stack = Embedded(env, tmp_path)
    try:
        yield stack
    finally:
        if stack.proc and stack.proc.poll() is None:
            stack.proc.kill()
            stack.proc.wait(30)


def run_walkthrough(stack: Embedded) -> str:
    """Runs the README block with bash, as a newcomer pastes it (with `appeals` on the PATH);
    returns what it printed."""
    env = {**stack.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


def test_readme_walkthrough_then_restart_continues_a_waiting_case(embedded: Embedded,
                                                                   tmp_path: Path) -> None:
    block = walkthrough()
    assert "APPEALS_USER" not in block and "--as" not in block
    assert all(f'appeals login {user} <<< "{password}"' in block
               for user, password in PASSWORDS.items())
    embedded.start()
    # make run serves the web interface too: its sign-in page answers.
    web = f"http://127.0.0.1:{embedded.env['APPEALS_WEB_PORT']}/sign-in"
    with urllib.request.urlopen(web, timeout=10) as page:
        assert page.status == 200 and "Sign in" in page.read().decode()
    printed = run_walkthrough(embedded)
    settings = embedded.settings()
    first = re.findall(r"UA-\d{4}-\d{4}", printed)[0]
    assert embedded.stage(first) == "closed"
    assert printed.splitlines()[-1] == "OK"  # the walkthrough ends with `appeals audit --verify`
    the_temporal_ui_shows_the_cases_payloads_decoded(embedded, first)

    # The sink kept exactly the dispatched messages, and the audit verifies.
    outbox = mailbox.Maildir(settings.var_dir / "outbox", create=False)
    kept = {m["Message-ID"] for m in outbox}
    store = store_for(settings)
    try:
        trail = store.trail(first)
    finally:
        store.close()
    sent = {e.details["message_id"] for e in trail if e.event == "MessageDispatched"}
    # The walkthrough's case went through every step of a per-action case.
    assert {"ConsentRefused", "FundsChosen", "FundApplicationSubmitted", "DispatchHeld"} <= {
        e.event for e in trail}
    assert sent and sent <= kept
    listed = json.loads(embedded.appeals("outbox", "list", "--json").stdout)
    assert {m["message_id"] for m in listed} >= sent
    assert embedded.appeals("audit", first, "--verify").stdout.splitlines()[-1] == "OK"
    # The stack signs its chain and wrote signed checkpoints (one after the close): the store
    # verifies against the latest with the public key only.
    assert list((settings.var_dir / "checkpoints").glob("checkpoint-*.json"))
    checked = embedded.appeals("audit", "store").stdout.splitlines()
    assert checked[-1].endswith(": OK") and any(line.startswith("checked against checkpoint-")
                                                for line in checked), checked

    # A second case waits for consent while the stack is stopped and started again.
    second = tmp_path / "second.json"
    intake = json.loads((ROOT / "examples" / "intake.json").read_text())
    intake["organisation"]["contact_name"] = "Wanjiru Example"
    intake.update(requested_actions=["rapporteur", "mfa"], refused_actions=["eu_delegation"],
                  eu_grant=None)
    second.write_text(json.dumps({**intake, "reference": "UA-2026-0002"}))
    embedded.appeals("case", "open", str(second))
    embedded.appeals("case", "verify", "UA-2026-0002", str(ROOT / "examples" / "verification.json"))
    assert embedded.stage("UA-2026-0002") == "consent"
    assert embedded.stop() == 0
    embedded.start()
    assert embedded.stage("UA-2026-0002") == "consent"
    for action in intake["requested_actions"]:
        embedded.appeals("case", "consent", "UA-2026-0002", action, "--grant", "--given-by", "lawyer",
                         "--relationship", "her lawyer", "--channel", "in_person")
    for action in intake["requested_actions"]:
        embedded.appeals("case", "clear", "UA-2026-0002", action, "--grant", user="lina")
    embedded.wait_for_stage("UA-2026-0002", "follow_up")
    assert embedded.appeals("audit", "UA-2026-0002", "--verify").stdout.splitlines()[-1] == "OK"
    assert embedded.stop() == 0


def the_temporal_ui_shows_the_cases_payloads_decoded(stack: Embedded, ref: str) -> None:
    """The dev server's UI was told where the codec server is, and the codec server `make run`
    started decodes the case's real (encrypted) history for a request from that UI's page; for
    anyone else it does not."""
    ui = f"http://127.0.0.1:{stack.env['APPEALS_TEMPORAL_UI_PORT']}"
    codec = f"http://127.0.0.1:{stack.env['APPEALS_CODEC_SERVER_PORT']}"
    with urllib.request.urlopen(f"{ui}/api/v1/settings", timeout=10) as answer:
        assert json.loads(answer.read())["Codec"]["Endpoint"] == codec
    history = subprocess.run(
        [str(Path(sys.executable).parent / "temporal"), "workflow", "show", "--workflow-id", ref,
         "--address", stack.env["APPEALS_TEMPORAL_ADDRESS"], "--output", "json"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    started = json.loads(history)["events"][0]["workflowExecutionStartedEventAttributes"]
    sealed = {"payloads": started["input"]["payloads"]}
    assert "Example-Oduya" not in history  # Temporal holds ciphertext only

    def decode(**headers: str) -> tuple[int, str]:
        request = urllib.request.Request(f"{codec}/decode", data=json.dumps(sealed).encode(),
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode()

    status, body = decode(Origin=ui, **{"X-Namespace": "default"})
    assert status == 200
    [plain] = json.loads(body)["payloads"]
    start = json.loads(base64.b64decode(plain["data"]))
    assert start["reference"] == ref and start["intake"]["defenders"][0]["name"] == (
        "Amara Example-Oduya")
    assert decode()[0] == 403  # not from the UI's page: a tool on this machine gets nothing
    assert decode(Origin="http://evil.example")[0] == 403


def test_the_stack_starts_the_dev_servers_ui_with_the_codec_endpoint(tmp_path: Path) -> None:
    from stack.main import codec_endpoint, dev_server_command_for, ui_origins
    settings = load_settings(var_dir=tmp_path / "var", temporal_address="127.0.0.1:17233",
                             temporal_ui_port=18233, codec_server_port=18888)
    command = dev_server_command_for(settings)
    assert command[command.index("--ui-port") + 1] == "18233"
    assert command[command.index("--ui-codec-endpoint") + 1] == "http://127.0.0.1:18888"
    assert codec_endpoint(settings) == "http://127.0.0.1:18888" and "--headless" not in command
    assert ui_origins(settings) == ["http://127.0.0.1:18233", "http://localhost:18233"]


async def test_the_stacks_codec_server_decodes_for_the_ui_page_only(tmp_path: Path) -> None:
    import asyncio

    import httpx
    from temporalio.converter import DataConverter

    from stack.main import serve_codec
    from worker.codec import EncryptionCodec
    settings = load_settings(var_dir=tmp_path / "var", temporal_ui_port=18234,
                             codec_server_port=free_port())
    codec = EncryptionCodec(settings.codec_keyring())  # the stack's own key (made on first use)
    [payload] = DataConverter.default.payload_converter.to_payloads([{"case": "UA-2026-0001"}])
    [sealed] = await codec.encode([payload])
    body = {"payloads": [{"metadata": {k: base64.b64encode(v).decode()
                                       for k, v in sealed.metadata.items()},
                          "data": base64.b64encode(sealed.data).decode()}]}
    server = asyncio.create_task(serve_codec(settings))
    url = f"http://127.0.0.1:{settings.codec_server_port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    await client.options("/decode")
                    break
                await asyncio.sleep(0.05)
            for page in ("http://127.0.0.1:18234", "http://localhost:18234"):
                ok = await client.post("/decode", json=body, headers={"Origin": page})
                assert ok.status_code == 200
                [plain] = ok.json()["payloads"]
                assert json.loads(base64.b64decode(plain["data"])) == {"case": "UA-2026-0001"}
            assert (await client.post("/decode", json=body)).status_code == 403
            other = await client.post("/decode", json=body, headers={"Origin": "http://127.0.0.1:8000"})
            assert other.status_code == 403 and "UA-2026-0001" not in other.text
            # Encoding, too, only for the UI's page.
            assert (await client.post("/encode", json=body)).status_code == 403
            preflight = await client.options("/decode", headers={
                "Origin": "http://127.0.0.1:18234", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace"})
            assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:18234"
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


def test_a_port_in_use_gives_a_clear_message(embedded: Embedded) -> None:
    embedded.start()
    again = subprocess.run([sys.executable, "-m", "stack"], cwd=ROOT, env=embedded.env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert "is in use" in again.stderr and "APPEALS_TEMPORAL_ADDRESS" in again.stderr
    assert "Traceback" not in again.stderr
    assert embedded.stop() == 0


def test_the_readme_configuration_reference_lists_every_setting() -> None:
    text = README.read_text()
    table = text.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table == reference_markdown()
