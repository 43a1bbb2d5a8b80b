"""Temporal over mutual TLS: the worker, the command line and an in-process client connect through
`worker.client.connect` (re-exported by worker.main) with their client certificates; a client
without one is refused.

The dev server speaks plaintext only, so a TLS terminator that requires a client certificate
signed by the test CA (`TlsTerminator`: asyncio + ssl, ALPN h2, bytes forwarded to the dev
server) stands in front of it, as the production Temporal frontend would with
`TEMPORAL_TLS_REQUIRE_CLIENT_AUTH=true`. The certificates are made here with `cryptography`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import TLSConfig

from tests.dev_stack import PASSWORD, ROOT, DevServer, appeals_command
from worker.main import connect, data_converter
from worker.settings import Settings, load_settings

CONNECT_SECONDS = 20


# ============================================================================== certificates
@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))


class TestCA:
    """A throw-away certificate authority; `issue` makes server or client certificates."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, directory: Path, name: str = "Appeals test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        self.cert_file = directory / "ca.crt"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool = False, days: float = 1,
              names: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",),
              ago: dt.timedelta = dt.timedelta(0)) -> Issued:
        """A certificate valid for `days` from a few minutes before now (minus `ago`: so an
        expired one is `ago` longer than `days`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC) - ago
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]
                + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{common_name}.crt", self.directory / f"{common_name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued


# ============================================================================== TLS terminator
@dataclass
class TlsTerminator:
    """Accepts TLS on 127.0.0.1 (ALPN h2), requires a client certificate signed by `client_ca`,
    and forwards the bytes to `upstream` in plaintext. Runs in its own thread and event loop, so
    that worker and CLI processes can use it while the test blocks. Records the common name of
    every client certificate it accepted, and counts the handshakes it refused."""

    upstream: tuple[str, int]
    server: Issued
    client_ca: Path
    port: int = 0
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    _context: ssl.SSLContext | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.server.cert, self.server.key)
        context.load_verify_locations(cafile=self.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        return context

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._context is not None
        try:
            await writer.start_tls(self._context, ssl_handshake_timeout=10)
        except (OSError, ssl.SSLError, TimeoutError):
            # No certificate, one from an unknown CA, or no TLS at all.
            self.refused += 1
            writer.transport.abort()
            return
        peer = writer.get_extra_info("peercert") or {}
        names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
        self.accepted.extend(names)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> TlsTerminator:
        started = threading.Event()
        loop = asyncio.new_event_loop()
        self._context = self.context()

        async def serve() -> None:
            # Plain TCP first, TLS in the handler: a refused handshake is then seen and counted.
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            async with server:
                await server.serve_forever()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.create_task(serve())
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="tls-terminator", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the TLS terminator did not start")
        return self

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)
            self._loop.close()


@contextlib.contextmanager
def tls_in_front_of(server: DevServer, directory: Path) -> Iterator[tuple[TlsTerminator, TestCA]]:
    """A TLS terminator requiring client certificates in front of a dev server, and its CA."""
    ca = TestCA(directory)
    host, _, port = server.address.rpartition(":")
    terminator = TlsTerminator((host, int(port)), ca.issue("temporal-frontend", server=True),
                               ca.cert_file).start()
    try:
        yield terminator, ca
    finally:
        terminator.stop()


def tls_values(terminator: TlsTerminator, ca: TestCA, client: Issued) -> dict[str, str]:
    """The settings (field: value) of a process that connects through the terminator."""
    return {"temporal_address": terminator.address, "temporal_tls": "true",
            "temporal_tls_ca_file": str(ca.cert_file), "temporal_tls_cert_file": str(client.cert),
            "temporal_tls_key_file": str(client.key)}


def tls_environment(terminator: TlsTerminator, ca: TestCA, client: Issued) -> dict[str, str]:
    """The same as APPEALS_* environment variables (for a process started in a test)."""
    return {f"APPEALS_{k.upper()}": v for k, v in tls_values(terminator, ca, client).items()}


def environment(values: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APPEALS_")}
    return {**clean, **{f"APPEALS_{k.upper()}": v for k, v in values.items()}}


# ============================================================================== the tests
@pytest.fixture
def mtls(dev_server: DevServer, tmp_path: Path) -> Iterator[tuple[TlsTerminator, TestCA]]:
    with tls_in_front_of(dev_server, tmp_path / "pki") as pair:
        yield pair


async def pollers(client: Client, task_queue: str) -> list[str]:
    answer = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
    return [p.identity for p in answer.pollers]


async def test_the_worker_the_cli_and_a_client_connect_with_their_certificates(
        mtls: tuple[TlsTerminator, TestCA], tmp_path: Path) -> None:
    terminator, ca = mtls
    worker_cert, staff_cert = ca.issue("appeals-worker"), ca.issue("appeals-staff")
    common = {"task_queue": f"tls-{tmp_path.name[-20:]}", "var_dir": str(tmp_path / "var"),
              "codec_key_file": str(tmp_path / "var" / "keys" / "codec.key")}
    (tmp_path / "var").mkdir()
    # The test's own client, through worker.main.connect exactly as the web interface and the CLI.
    settings = load_settings(**common, **tls_values(terminator, ca, staff_cert))
    assert isinstance(settings.temporal_tls_config(), TLSConfig)
    client = await asyncio.wait_for(connect(settings), CONNECT_SECONDS)
    assert "appeals-staff" in terminator.accepted

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT,
                              env=environment({**common, **tls_values(terminator, ca, worker_cert)}))
    try:
        end = time.monotonic() + 60
        while not await pollers(client, settings.task_queue):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < end, "the worker never polled through the TLS terminator"
            await asyncio.sleep(0.3)
        assert "appeals-worker" in terminator.accepted

        # The command line (`appeals`, run from the source tree): it reaches Temporal (the case
        # is unknown there and in the store, so the answer is "not found", not "not reachable").
        # Every command acts as a signed-in person: the first head is made and signs in first.
        cli_env = environment({**common, **tls_values(terminator, ca, staff_cert),
                               "config_dir": str(tmp_path / "config")})
        for args, stdin in ((("users", "bootstrap", "rosa", "--name", "Rosa Example", "--email",
                              "rosa@secretariat.example.org"), PASSWORD + "\n"),
                            (("login", "rosa"), PASSWORD + "\n")):
            done = appeals_command(cli_env, *args, stdin=stdin)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        accepted = len(terminator.accepted)
        cli = appeals_command(cli_env, "case", "show", "UA-2026-9999", "--json")
        assert "not reachable" not in cli.stderr + cli.stdout, cli.stderr
        assert re.search(r"not found", cli.stderr + cli.stdout, re.I), (cli.stdout, cli.stderr)
        assert "appeals-staff" in terminator.accepted[accepted:], "the CLI did not connect with TLS"
    finally:
        worker.terminate()
        worker.wait(20)
        log.close()


async def test_a_client_without_a_certificate_is_refused(
        mtls: tuple[TlsTerminator, TestCA], tmp_path: Path) -> None:
    terminator, ca = mtls
    converter = data_converter(load_settings(var_dir=tmp_path / "var"))
    outsider_ca = TestCA(tmp_path / "other-pki", "Someone else's CA")
    attempts: dict[str, TLSConfig | bool] = {
        "no client certificate": TLSConfig(server_root_ca_cert=ca.cert_file.read_bytes()),
        "a certificate from another CA": TLSConfig(
            server_root_ca_cert=ca.cert_file.read_bytes(),
            client_cert=(issued := outsider_ca.issue("intruder")).cert.read_bytes(),
            client_private_key=issued.key.read_bytes()),
        "no TLS at all": False,
    }
    for what, tls in attempts.items():
        refused_before = terminator.refused
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(Client.connect(terminator.address, data_converter=converter,
                                                  tls=tls), CONNECT_SECONDS)
        for _ in range(50):  # the terminator's thread counts it a moment after the client gives up
            if terminator.refused > refused_before:
                break
            await asyncio.sleep(0.1)
        assert terminator.refused > refused_before, what
    assert terminator.accepted == [], "a connection without a valid client certificate got through"


async def test_the_server_certificate_is_checked(mtls: tuple[TlsTerminator, TestCA],
                                                 tmp_path: Path) -> None:
    terminator, ca = mtls
    staff = ca.issue("appeals-staff")
    stranger = TestCA(tmp_path / "stranger", "A CA the client does not trust")
    values = {**tls_values(terminator, ca, staff), "var_dir": str(tmp_path / "var")}
    # Right CA, and a server name the certificate carries: connects.
    named = load_settings(**values, temporal_tls_server_name="localhost")
    client = await asyncio.wait_for(connect(named), CONNECT_SECONDS)
    assert client.namespace == "default"
    # A CA that did not sign the server's certificate, or a name it does not carry: refused.
    for wrong in ({"temporal_tls_ca_file": str(stranger.cert_file)},
                  {"temporal_tls_server_name": "temporal.elsewhere.test"}):
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(connect(load_settings(**{**values, **wrong})), CONNECT_SECONDS)


def test_a_worker_with_half_a_client_certificate_stops_naming_the_setting(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    staff = ca.issue("appeals-staff")
    result = subprocess.run(
        [sys.executable, "-m", "worker"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=environment({"var_dir": str(tmp_path / "var"), "temporal_tls": "true",
                         "temporal_tls_cert_file": str(staff.cert)}))
    assert result.returncode == 2, result.stderr
    assert "APPEALS_TEMPORAL_TLS_KEY_FILE" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ============================================================================== one way to connect
PACKAGES = ("domain", "store", "workflows", "activities", "worker", "stack", "web", "cli", "desk")


def test_every_temporal_client_is_made_by_worker_client_connect() -> None:
    callers = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if re.search(r"\bClient\.connect\(", path.read_text()):
                callers.add(str(path.relative_to(ROOT)))
    assert callers == {"worker/client.py"}, callers


def test_the_connect_function_passes_the_tls_configuration() -> None:
    source = (ROOT / "worker" / "client.py").read_text()
    call = source[source.index("Client.connect("):]
    assert "tls=settings.temporal_tls_config()" in call[:400]


def test_development_stays_plaintext_to_its_own_dev_server(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    assert settings.temporal_tls is False and settings.temporal_tls_config() is False
    assert settings.temporal_address.startswith("127.0.0.1:")
