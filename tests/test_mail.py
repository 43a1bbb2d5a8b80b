"""activities.mail against a real SMTP server (aiosmtpd on 127.0.0.1, see tests/smtp_sink.py)."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from activities.mail import (
    HeaderInjection,
    InvalidAddress,
    InvalidMessage,
    Mailer,
    MailError,
    OutgoingMessage,
    PermanentMailError,
    TransientMailError,
    build_email,
    check_address,
    classify_smtp_error,
    is_loopback_host,
    make_message_id,
)
from tests.smtp_sink import SmtpSink, TlsPair, make_self_signed_tls, smtp_sink
from worker.settings import Settings

__all__ = ["smtp_sink"]  # the fixture, imported explicitly

SENDER = "urgent-appeals@secretariat.test"
TO = ["rapporteur@ohchr.test", "desk@embassy.test"]
CC = ["duty@secretariat.test"]
MARKER = "Zephyrine Qwoxlandt"


def message(**changes: object) -> OutgoingMessage:
    base = OutgoingMessage(
        sender=SENDER,
        to=list(TO),
        cc=list(CC),
        subject=f"Urgent appeal: {MARKER} detained",
        text=f"Dear Special Rapporteur,\n\n{MARKER} was detained.\n.\nA line with a dot above.\n",
        message_id=make_message_id("UA-2025-0042", "dispatch-1", "secretariat.test"),
        headers={"X-Appeal-Kind": "urgent-appeal"},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def mailer_for(sink: SmtpSink, **options: object) -> Mailer:
    kwargs: dict[str, object] = {
        "host": sink.host,
        "port": sink.port,
        "timeout": 10.0,
        "starttls_required": False,
        "live": False,
    }
    kwargs.update(options)
    return Mailer(**kwargs)  # type: ignore[arg-type]


def assert_no_personal_data(error: BaseException) -> None:
    text = str(error)
    for word in ("Zephyrine", "Qwoxlandt", "rapporteur@", "desk@", "duty@", SENDER, "evil"):
        assert word not in text
    # The original aiosmtplib exception (which quotes addresses and replies) is not chained.
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None


@pytest.fixture
def unused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def tls(tmp_path: Path) -> TlsPair:
    return make_self_signed_tls(tmp_path)


# --- delivery ---------------------------------------------------------------------------------


async def test_sent_message_arrives_with_exact_recipients_and_headers(smtp_sink: SmtpSink) -> None:
    msg = message(html=f"<p>{MARKER} was detained.</p>")
    await mailer_for(smtp_sink).send(msg)

    assert len(smtp_sink.messages) == 1
    envelope_from, rcpt_tos, received = smtp_sink.messages[0]
    assert envelope_from == SENDER
    assert rcpt_tos == [*TO, *CC]
    assert received["From"] == SENDER
    assert received["To"] == ", ".join(TO)
    assert received["Cc"] == ", ".join(CC)
    assert received["Bcc"] is None
    assert received["Subject"] == f"Urgent appeal: {MARKER} detained"
    assert received["Message-ID"] == msg.message_id
    assert received["X-Appeal-Kind"] == "urgent-appeal"
    assert received["Date"] is not None
    assert received.get_content_type() == "multipart/alternative"
    plain = received.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    html = received.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    assert plain.get_content() == msg.text  # including the lone "." line (dot-stuffing works)
    assert html.get_content().strip() == msg.html
    assert smtp_sink.connections == 1


async def test_non_ascii_text_travels_as_7bit(smtp_sink: SmtpSink) -> None:
    subject = "Appel urgent : Zéphyrine Qwoxlandt, défenseure — Ñuñoa"
    text = "Zéphyrine a été arrêtée à Ñuñoa.\n"
    await mailer_for(smtp_sink).send(message(subject=subject, text=text, cc=[]))

    [raw] = smtp_sink.raw
    assert raw.isascii()
    assert b"\r\n" in raw
    _, rcpt_tos, received = smtp_sink.messages[0]
    assert rcpt_tos == TO
    assert received["Subject"] == subject
    # An encoded (quoted-printable/base64) text body carries canonical CRLF line ends.
    assert received.get_content().replace("\r\n", "\n") == text  # type: ignore[attr-defined]


async def test_reply_threading_headers(smtp_sink: SmtpSink) -> None:
    first = make_message_id("UA-2025-0042", "dispatch-1", "secretariat.test")
    second = make_message_id("UA-2025-0042", "dispatch-2", "secretariat.test")
    msg = message(
        message_id=make_message_id("UA-2025-0042", "dispatch-3", "secretariat.test"),
        in_reply_to=second,
        references=[first, second],
    )
    await mailer_for(smtp_sink).send(msg)
    received = smtp_sink.messages[0][2]
    assert received["In-Reply-To"] == second
    assert received["References"] == f"{first} {second}"


async def test_a_recipient_in_to_and_cc_receives_one_copy(smtp_sink: SmtpSink) -> None:
    msg = message(to=["a@secretariat.test", "b@secretariat.test"], cc=["a@secretariat.test"])
    await mailer_for(smtp_sink).send(msg)
    assert smtp_sink.messages[0][1] == ["a@secretariat.test", "b@secretariat.test"]


async def test_mailer_from_settings_sends_to_the_sink(
    smtp_sink: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(var_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=smtp_sink.port)
    await Mailer.from_settings(settings).send(message())
    assert [m[2]["Message-ID"] for m in smtp_sink.messages] == [message().message_id]


# --- invalid messages: refused before connecting ----------------------------------------------


INVALID_MESSAGES = {
    "CRLF in subject": (message(subject=f"{MARKER}\r\nBcc: evil@elsewhere.test"), HeaderInjection),
    "LF in subject": (message(subject=f"{MARKER}\nBcc: evil@elsewhere.test"), HeaderInjection),
    "CR in subject": (message(subject=f"{MARKER}\rBcc: evil@elsewhere.test"), HeaderInjection),
    "VT in subject": (message(subject=f"{MARKER}\x0bBcc: evil@elsewhere.test"), HeaderInjection),
    "FF in subject": (message(subject=f"{MARKER}\x0cBcc: evil@elsewhere.test"), HeaderInjection),
    "NEL in subject": (message(subject=f"{MARKER}\x85Bcc: evil@elsewhere.test"), HeaderInjection),
    "LS in subject": (message(subject=f"{MARKER}\u2028Bcc: evil@elsewhere.test"), HeaderInjection),
    "NUL in subject": (message(subject=f"{MARKER}\x00"), HeaderInjection),
    "CRLF in address": (message(to=["rapporteur@ohchr.test\r\nBcc: evil@elsewhere.test"]), InvalidAddress),
    "display name": (message(to=[f"{MARKER} <rapporteur@ohchr.test>"]), InvalidAddress),
    "two addresses in one": (message(cc=["duty@secretariat.test, evil@elsewhere.test"]), InvalidAddress),
    "no domain": (message(to=["rapporteur"]), InvalidAddress),
    "bad sender": (message(sender="evil@elsewhere.test>"), InvalidAddress),
    "no recipient": (message(to=[], cc=list(CC)), InvalidAddress),
    "CRLF in extra header": (message(headers={"X-Kind": "a\r\nBcc: evil@elsewhere.test"}), HeaderInjection),
    "managed extra header": (message(headers={"Bcc": "evil@elsewhere.test"}), HeaderInjection),
    "managed header any case": (message(headers={"rEpLy-To": "evil@elsewhere.test"}), HeaderInjection),
    "bad header name": (message(headers={"X-Kind\r\nBcc": "evil@elsewhere.test"}), HeaderInjection),
    "bad message id": (message(message_id="<evil@elsewhere.test>\r\nBcc: x"), HeaderInjection),
    "message id without brackets": (message(message_id="id@secretariat.test"), InvalidMessage),
    "bad in-reply-to": (message(in_reply_to="evil"), InvalidMessage),
}


@pytest.mark.parametrize(("msg", "error"), INVALID_MESSAGES.values(), ids=INVALID_MESSAGES.keys())
async def test_invalid_message_is_refused_before_connecting(
    smtp_sink: SmtpSink, msg: OutgoingMessage, error: type[InvalidMessage]
) -> None:
    with pytest.raises(error) as info:
        await mailer_for(smtp_sink).send(msg)
    assert isinstance(info.value, PermanentMailError)
    assert info.value.retryable is False
    assert_no_personal_data(info.value)
    assert smtp_sink.connections == 0
    assert smtp_sink.messages == []


@pytest.mark.parametrize(("msg", "error"), INVALID_MESSAGES.values(), ids=INVALID_MESSAGES.keys())
def test_build_email_refuses_the_same_messages(msg: OutgoingMessage, error: type[InvalidMessage]) -> None:
    with pytest.raises(error):
        build_email(msg)


@pytest.mark.parametrize(
    "address",
    ["a@b.test", "first.last+tag@sub.secretariat.test", "o'brien@ohchr.test", "x@localhost"],
)
def test_plain_addresses_are_accepted(address: str) -> None:
    assert check_address(address, header="To") == address


@pytest.mark.parametrize(
    "address",
    ["", "a@", "@b.test", "a@b.test.", "a..b@c.test", '"quoted"@b.test', "a@[127.0.0.1]", "zé@b.test",
     "a@b.test\n", " a@b.test", "a" * 65 + "@b.test", "a@" + "b" * 250 + ".test"],
)  # fmt: skip
def test_other_addresses_are_refused_naming_only_the_header(address: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        check_address(address, header="Cc[2]")
    assert str(info.value).startswith("Cc[2]:")
    if address.strip():
        assert address.strip() not in str(info.value)


# --- message ids ------------------------------------------------------------------------------


def test_message_id_is_stable_per_dispatch_and_reveals_nothing() -> None:
    reference = "UA-2025-0042"
    first = make_message_id(reference, "appeal-to-rapporteur", "secretariat.test")

    assert make_message_id(reference, "appeal-to-rapporteur", "secretariat.test") == first
    assert make_message_id(reference, "appeal-to-embassy", "secretariat.test") != first
    assert make_message_id("UA-2025-0043", "appeal-to-rapporteur", "secretariat.test") != first
    assert make_message_id("ab", "c", "x.test") != make_message_id("a", "bc", "x.test")
    assert make_message_id("a:b", "c", "x.test") != make_message_id("a", "b:c", "x.test")

    assert first.startswith("<") and first.endswith("@secretariat.test>")
    assert reference not in first and "2025" not in first and "0042" not in first
    assert "rapporteur" not in first
    # A valid Message-ID for build_email.
    assert build_email(message(message_id=first))["Message-ID"] == first


@pytest.mark.parametrize("domain", ["", "bad domain", "x.test>", "a@b.test", "x.test\r\n"])
def test_message_id_refuses_a_bad_domain(domain: str) -> None:
    with pytest.raises(ValueError):
        make_message_id("UA-2025-0042", "d", domain)


# --- SMTP failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "reply", "error", "code"),
    [
        ("rcpt", "450 try later", TransientMailError, 450),
        ("data", "450 try later", TransientMailError, 450),
        ("rcpt", "452 too many recipients", TransientMailError, 452),
        ("rcpt", "550 no", PermanentMailError, 550),
        ("data", "550 no", PermanentMailError, 550),
        ("data", "554 transaction failed", PermanentMailError, 554),
    ],
)
async def test_smtp_replies_are_classified(step: str, reply: str, error: type[MailError], code: int) -> None:
    with SmtpSink(**{f"{step}_reply": reply}) as sink:  # type: ignore[arg-type]
        with pytest.raises(error) as info:
            await mailer_for(sink).send(message())
        assert sink.messages == []
        assert sink.connections == 1
    assert type(info.value) is error
    assert info.value.code == code
    assert info.value.retryable is (error is TransientMailError)
    assert_no_personal_data(info.value)


async def test_connection_refused_is_transient(unused_port: int) -> None:
    mailer = Mailer(host="127.0.0.1", port=unused_port, timeout=10.0, starttls_required=False, live=False)
    with pytest.raises(TransientMailError) as info:
        await mailer.send(message())
    assert info.value.retryable is True
    assert info.value.code is None
    assert_no_personal_data(info.value)


async def test_header_injection_is_found_before_even_trying_to_connect(unused_port: int) -> None:
    # Against a refused port, a connection attempt would be a TransientMailError.
    mailer = Mailer(host="127.0.0.1", port=unused_port, timeout=10.0, starttls_required=False, live=False)
    with pytest.raises(HeaderInjection):
        await mailer.send(message(subject="a\r\nBcc: evil@elsewhere.test"))


# --- STARTTLS ---------------------------------------------------------------------------------


async def test_starttls_required_but_not_offered_is_permanent(smtp_sink: SmtpSink, tls: TlsPair) -> None:
    mailer = mailer_for(smtp_sink, starttls_required=True, tls_context=tls.client)
    with pytest.raises(PermanentMailError, match="STARTTLS") as info:
        await mailer.send(message())
    assert info.value.retryable is False
    assert smtp_sink.connections == 1
    assert smtp_sink.messages == []


async def test_starttls_with_a_trusted_certificate_delivers(tls: TlsPair) -> None:
    # The server refuses MAIL before STARTTLS, so a delivered message went over TLS.
    with SmtpSink(tls_context=tls.server, require_starttls=True) as sink:
        await mailer_for(sink, starttls_required=True, tls_context=tls.client).send(message())
        [(envelope_from, rcpt_tos, received)] = sink.messages
    assert envelope_from == SENDER
    assert rcpt_tos == [*TO, *CC]
    assert received["Message-ID"] == message().message_id


async def test_starttls_with_an_untrusted_certificate_is_permanent(tls: TlsPair) -> None:
    with SmtpSink(tls_context=tls.server, require_starttls=True) as sink:
        untrusted = ssl.create_default_context()  # system CAs only: the self-signed cert fails
        with pytest.raises(PermanentMailError, match="certificate") as info:
            await mailer_for(sink, starttls_required=True, tls_context=untrusted).send(message())
        assert sink.messages == []
    assert_no_personal_data(info.value)


async def test_server_requiring_starttls_refuses_a_plain_session(tls: TlsPair) -> None:
    with SmtpSink(tls_context=tls.server, require_starttls=True) as sink:
        with pytest.raises(PermanentMailError) as info:
            await mailer_for(sink, starttls_required=False).send(message())
        assert sink.messages == []
    assert info.value.code == 530
    assert_no_personal_data(info.value)


# --- the loopback guard -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["smtp.example.org", "10.1.2.3", "localhost.example.org", "127.0.0.1.nip.io"]
)
def test_mailer_refuses_a_real_host_while_live_sending_is_off(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        Mailer(host=host, port=587, timeout=10.0, starttls_required=True, live=False)


def test_mailer_accepts_a_real_host_when_live() -> None:
    Mailer(host="smtp.example.org", port=587, timeout=10.0, starttls_required=True, live=True)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.1", False),
        ("localhost.localdomain", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


# --- classification of other errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), PermanentMailError),
        (aiosmtplib.SMTPAuthenticationError(454, "4.7.0 temporary auth failure"), TransientMailError),
        (aiosmtplib.SMTPServerDisconnected("gone"), TransientMailError),
        (aiosmtplib.SMTPConnectError("refused"), TransientMailError),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TransientMailError),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), TransientMailError),
        (aiosmtplib.SMTPNotSupported("no AUTH"), PermanentMailError),
        (aiosmtplib.SMTPException("STARTTLS extension not supported"), PermanentMailError),
        (aiosmtplib.SMTPResponseException(250, "odd"), PermanentMailError),
        (ConnectionResetError(), TransientMailError),
        (TimeoutError(), TransientMailError),
        (ssl.SSLCertVerificationError("self-signed"), PermanentMailError),
    ],
)
def test_classify_smtp_error(exc: BaseException, error: type[MailError]) -> None:
    classified = classify_smtp_error(exc)
    assert type(classified) is error


def test_classify_leaves_unrelated_errors_alone() -> None:
    assert classify_smtp_error(KeyError("x")) is None
    assert classify_smtp_error(RuntimeError("x")) is None


def test_refused_recipient_text_is_not_carried_over() -> None:
    exc = aiosmtplib.SMTPRecipientRefused(550, f"no such user {MARKER}", "rapporteur@ohchr.test")
    classified = classify_smtp_error(exc)
    assert isinstance(classified, PermanentMailError)
    assert classified.code == 550
    assert_no_personal_data(classified)
