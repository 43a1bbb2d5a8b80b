"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts, for tests: the
``smtp_sink`` fixture over stack.sink.SmtpSink (the server itself lives there, shared with the
benchmarks), and a self-signed certificate for the STARTTLS tests.

Use the ``smtp_sink`` fixture (import it into a test module, or list ``"tests.smtp_sink"`` in
``pytest_plugins``), or build an :class:`SmtpSink` directly for a server that answers differently:

    with SmtpSink(rcpt_reply="450 try later") as sink:
        ...
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from stack.sink import SmtpSink

__all__ = ["SmtpSink", "TlsPair", "make_self_signed_tls", "smtp_sink"]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started :class:`SmtpSink` that accepts everything (no STARTTLS offered)."""
    with SmtpSink() as sink:
        yield sink


class TlsPair:
    """A self-signed certificate for 127.0.0.1 / localhost: a server context and a client context
    that trusts exactly that certificate."""

    def __init__(self, server: ssl.SSLContext, client: ssl.SSLContext, cert_pem: bytes) -> None:
        self.server = server
        self.client = client
        self.cert_pem = cert_pem


def make_self_signed_tls(directory: Any) -> TlsPair:
    """Generate a fresh key and self-signed certificate in ``directory`` (a :class:`pathlib.Path`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file = directory / "smtp-sink-cert.pem"
    key_file = directory / "smtp-sink-key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return TlsPair(server=server, client=client, cert_pem=cert_pem)
