"""What recipients receive, end to end: the real dev server, the worker process, a real SMTP server
on loopback; the received messages are parsed and checked against routing and the address book."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import pytest

from activities.directories import load_address_book
from domain.addressbook import AddressRole
from domain.countries import country_name
from domain.routing import route_rapporteur
from tests.dev_stack import DevServer, Stack, running_stack
from tests.factories import DEFENDER_NAME, intake
from tests.smtp_sink import SmtpSink
from tests.test_end_to_end import run_to_dispatch
from tests.workflow_env import settle

SUBJECT = re.compile(r"^URGENT APPEAL – (?P<mandates>.+) – (?P<country>.+) – (?P<ref>UA-[0-9A-Z-]+)$")


@pytest.fixture
async def strict_stack(dev_server: DevServer, tmp_path: Any, smtp_sink: SmtpSink) -> Any:
    """A stack whose addresses count as stale after 30 days (the shipped book is older)."""
    async with running_stack(dev_server, tmp_path, smtp_sink,
                             address_max_age_days="30") as s:
        yield s


def parts(message: EmailMessage) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            found[part.get_content_subtype()] = part.get_content()
    return found


async def test_each_recipient_gets_its_routed_complete_message(strict_stack: Stack) -> None:
    stack = strict_stack
    stack.start_worker()
    ref = "UA-2026-MSG1"
    handle = await run_to_dispatch(stack, ref)
    await settle(handle, lambda s: s["stage"] == "follow_up", "follow-up", seconds=60)
    data = intake()
    book = load_address_book()
    groups = {g for d in data["defenders"] for g in d["at_risk_groups"]}
    mandates = route_rapporteur(data["threat_types"], data["rights_affected"], groups)
    expected = {
        "rapporteur": sorted(e.address for e in book.rapporteur_recipients(mandates)),
        "mfa": sorted(e.address for e in book.for_country(AddressRole.MFA_DESK, data["country"])),
        "eu_delegation": sorted(e.address for e in book.for_country(AddressRole.EU_DELEGATION,
                                                                     data["country"])),
    }
    recorded = {e.details["message_id"]: e.details for e in stack.store.trail(ref)
                if e.event == "MessageDispatched"}
    received: dict[str, tuple[list[str], EmailMessage]] = {}
    for _, rcpts, message in stack.sink.messages:
        if message["X-Appeal-Kind"] == "waiting":
            continue  # staff are told what waits for them; tests/test_waiting_notices.py
        assert isinstance(message, EmailMessage)
        received[message["X-Appeal-Action"]] = (sorted(rcpts), message)
    assert set(received) == {"rapporteur", "mfa", "eu_delegation"}
    for kind, (rcpts, message) in received.items():
        assert rcpts == expected[kind], kind
        assert recorded[message["Message-ID"]]["action"] == kind
        assert re.fullmatch(r"<[0-9a-f-]{36}@secretariat\.example\.org>", message["Message-ID"])

    rcpts, letter = received["rapporteur"]
    match = SUBJECT.match(letter["Subject"])
    assert match, letter["Subject"]
    assert match["country"] == country_name(data["country"]) and match["ref"] == ref
    assert match["mandates"] == ", ".join(m.label for m in mandates)
    body = parts(letter)
    assert set(body) == {"plain", "html"}
    assert DEFENDER_NAME in body["plain"] and DEFENDER_NAME in body["html"]
    eu = parts(received["eu_delegation"][1])
    assert "CONFIDENTIAL" in received["eu_delegation"][1]["Subject"] and "html" in eu
    assert "EUR 8,000" in eu["plain"]
    # The verification (source, analysis, do-no-harm note) is internal: in no outgoing message.
    internal = ["Trusted partner in Nairobi", "prefer quiet diplomacy", "Works alone",
                "confirmed by two witnesses"]
    for _, message in received.values():
        for text in parts(message).values():
            assert not [phrase for phrase in internal if phrase in text]

    # The shipped addresses were verified more than 30 days ago: sent, and staff warned.
    warnings = [e.details["warning"] for e in stack.store.trail(ref) if e.event == "StaffWarningRaised"]
    assert warnings and all("not verified for more than 30 days" in w for w in warnings)
