"""Issue 15, item 1: a dispatch reads the case once, plans once (domain.dispatch) and records the
dispatch with its staff warnings in one transaction (store.app.CaseStore.execute_all).

The activities run in Temporal's ActivityEnvironment against a real SQLite file (its links
signed), the shipped address book and fund directory, and a real SMTP server on loopback. The
failed save after a send is a real database error, raised inside the transaction by a trigger.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.case import CaseConfig
from activities.directories import load_address_book, load_fund_directory
from activities.mail import Mailer
from activities.messages import Composer
from activities.tracks import TrackActivities
from domain.addressbook import AddressBook
from domain.dispatch import NO_ELIGIBLE_FUND, Unsendable, plan_dispatch
from domain.errors import CaseRuleError
from domain.routing import route_intake
from store import schema
from store.app import CaseStore, Command, sqlite_url
from store.signing import ChainSigner
from tests.backends import Backend, new_key
from tests.factories import T0, intake, open_args, verification
from tests.smtp_sink import SmtpSink
from workflows.inputs import Dispatch, TrackEvent

REF = "UA-2026-0415"
AT = T0 + timedelta(days=2)
STALE = f"{REF}/stale-addresses/rapporteur"
UNADDRESSED = f"{REF}/unaddressed-mandates"
DISPATCH = f"{REF}/dispatch/appeal/rapporteur"
CONTACTS = {1: ["duty@secretariat.example.org"], 2: ["head@secretariat.example.org"]}


def routed() -> list[Any]:
    return route_intake(intake())


def old_book(without_mandate: bool = True) -> AddressBook:
    """The shipped book with every address last verified in 2020 (stale after 30 days), less
    the mailbox of the last mandate the test intake routes to (that mandate is unaddressed)."""
    book = load_address_book()
    dropped = routed()[-1] if without_mandate else None
    return AddressBook(tuple(dataclasses.replace(e, last_verified=date(2020, 1, 1))
                             for e in book.entries if dropped is None or e.mandate is not dropped))


class CountingStore(CaseStore):
    """The real store, counting the reads of a case (`get`)."""

    reads = 0

    def get(self, reference: str) -> Any:
        self.reads += 1
        return super().get(reference)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    app = CountingStore(sqlite_url(str(tmp_path / "events.sqlite")), new_key(),
                        signer=ChainSigner.generate())
    try:
        yield app
    finally:
        app.close()


def activities(store: CaseStore, sink: SmtpSink, book: AddressBook | None = None
               ) -> TrackActivities:
    mailer = Mailer(host="127.0.0.1", port=sink.port, timeout=10, starttls_required=False,
                    live=False)
    config = CaseConfig(mail_from="appeals@secretariat.example.org", escalation_contacts=CONTACTS,
                        address_max_age_days=30)
    return TrackActivities(store, mailer, book or old_book(), load_fund_directory(), Composer(),
                           config)


def ready_to_send(store: CaseStore, tracked: bool = True) -> None:
    """A case whose rapporteur letter may go: verified, consented, cleared."""
    store.open_case(**open_args(REF, actions=["rapporteur"]), tracked=tracked)
    consent: dict[str, Any] = {"action": "rapporteur", "conditions": ""}
    if tracked:  # who consented for each defender
        consent["consents"] = [{"defender": 0, "given_by": "defender", "relationship": "",
                                "channel": "secure_message",
                                "given_at": (T0 - timedelta(days=1)).isoformat()}]
    for command, args, actor in (
            ("record_verification", {"verification": verification()}, "olga"),
            ("grant_consent", consent, "olga"),
            ("record_clearance", {"action": "rapporteur", "granted": True, "reason": ""}, "lina")):
        store.execute(REF, command, {**args, "at": T0}, actor, f"{REF}/{command}")


def trail_tail(store: CaseStore, after: int) -> list[tuple[str, str]]:
    return [(e.event, e.command_id) for e in store.trail(REF)[after:]]


def recorded(store: CaseStore, *command_ids: str) -> set[str]:
    return set(store.prior_results(list(command_ids)))


def sent_ids(sink: SmtpSink) -> list[str]:
    return [str(m["Message-ID"]) for _, _, m in sink.messages if m["X-Appeal-Kind"] == "appeal"]


# ---------------------------------------------------------------------------- the pure plan
def test_the_plan_routes_once_and_lists_the_warnings_with_their_command_ids() -> None:
    book = old_book()
    plan = plan_dispatch(REF, intake(), "rapporteur", book=book, today=AT.date(),
                         max_age_days=30)
    assert plan.mandates == routed() and not plan.held
    assert plan.recipients == [e.address for e in book.rapporteur_recipients(routed())]
    assert [w.command_id for w in plan.warnings] == [STALE, UNADDRESSED]
    assert "not verified for more than 30 days" in plan.warnings[0].warning
    assert routed()[-1].value in plan.warnings[1].warning
    fresh = plan_dispatch(REF, intake(), "mfa", book=load_address_book(), today=T0.date(),
                          max_age_days=365_000)
    assert fresh.mandates is None and fresh.warnings == [] and fresh.recipients


def test_the_plan_holds_for_missing_fields_and_refuses_unknown_recipients() -> None:
    book = old_book()
    lacking = intake(incident={**intake()["incident"], "ongoing_risk": ""})
    held = plan_dispatch(REF, lacking, "mfa", book=book, today=AT.date(), max_age_days=30)
    assert held.held and held.missing == ["incident.ongoing_risk"] and not held.warnings
    asking = intake(fund_request={"purpose": "legal_fees", "amount_eur": 900})
    no_fund = plan_dispatch(REF, asking, "emergency_fund", book=book, today=AT.date(),
                            max_age_days=30, needs_fund=True)
    assert no_fund.missing == [NO_ELIGIBLE_FUND]
    fund = dataclasses.replace(load_fund_directory()[0], address="unknown@fund.example.org")
    with pytest.raises(Unsendable, match="1 recipient"):
        plan_dispatch(REF, asking, "emergency_fund", book=book, today=AT.date(),
                      max_age_days=30, fund=fund)


# ------------------------------------------------------------------------ the store method
def test_several_commands_are_saved_in_one_transaction_or_not_at_all(backend: Backend) -> None:
    store = CaseStore(backend.url, backend.key, signer=ChainSigner.generate())
    try:
        ready_to_send(store)
        before = len(store.trail(REF))
        warn = Command("raise_warning", {"warning": "Check the addresses", "at": AT}, STALE)
        refused = Command("record_dispatch", {"action": "eu_delegation", "kind": "appeal",
                                              "recipients": ["x@example.org"],
                                              "message_id": "<m@secretariat.example.org>",
                                              "at": AT}, DISPATCH)
        with pytest.raises(CaseRuleError):  # not an action of this case
            store.execute_all(REF, [warn, refused], "system")
        assert len(store.trail(REF)) == before and recorded(store, STALE, DISPATCH) == set()

        second = Command("raise_warning", {"warning": "No mailbox", "at": AT}, UNADDRESSED)
        summary = store.execute_all(REF, [warn, second], "system")
        assert trail_tail(store, before) == [("StaffWarningRaised", STALE),
                                             ("StaffWarningRaised", UNADDRESSED)]
        assert summary["version"] == before + 2
        # The same commands again: recorded once, the last one's first result answers.
        assert store.execute_all(REF, [warn, second], "system") == summary
        assert len(store.trail(REF)) == before + 2
        report = store.verify(REF)
        assert report.ok and report.signed == before + 2, report.describe()
    finally:
        store.close()


def test_a_copy_read_before_someone_else_wrote_is_read_again(backend: Backend) -> None:
    store = CaseStore(backend.url, backend.key)
    try:
        ready_to_send(store)
        before = len(store.trail(REF))
        warn = Command("raise_warning", {"warning": "Check the addresses", "at": AT}, STALE)
        stale = store.get(REF)
        store.execute(REF, "comment", {"text": "Called the grantee", "at": AT}, "olga", "c1")
        summary = store.execute_all(REF, [warn], "system", case=stale)  # lost the race: again
        assert summary["version"] == before + 2
        assert trail_tail(store, before) == [("CommentAdded", "c1"),
                                             ("StaffWarningRaised", STALE)]
        # A copy from before the clearance refuses the dispatch; the case as it is now takes it.
        store.open_case(**open_args("UA-2026-0416", actions=["mfa"]))
        other = "UA-2026-0416"
        store.execute(other, "record_verification", {"verification": verification(), "at": T0},
                      "olga", "v")
        store.execute(other, "grant_consent", {"action": "mfa", "conditions": "", "at": T0},
                      "olga", "c")
        early = store.get(other)
        store.execute(other, "record_clearance", {"action": "mfa", "granted": True, "reason": "",
                                                  "at": T0}, "lina", "k")
        sent = store.execute_all(other, [Command("record_dispatch", {
            "action": "mfa", "kind": "appeal", "recipients": ["desk-ke@mfa.example.org"],
            "message_id": "<d@secretariat.example.org>", "at": AT}, "d")], "system", case=early)
        assert sent["actions"]["mfa"]["dispatch"] == "sent"
    finally:
        store.close()


# ----------------------------------------------------------------------- the sending activity
async def test_a_tracked_dispatch_reads_once_and_records_warnings_with_the_dispatch(
        store: CountingStore, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    ready_to_send(store)
    before = len(store.trail(REF))
    acts = activities(store, smtp_sink)
    routings = []

    def counted(intake: Any) -> Any:
        routings.append(1)
        return route_intake(intake)

    # Everywhere the mandates could be routed: the plan, the readiness check, the composer.
    for module in ("domain.dispatch", "domain.readiness", "activities.messages"):
        monkeypatch.setattr(f"{module}.route_intake", counted)
    store.reads = 0
    summary = await ActivityEnvironment().run(acts.dispatch_track,
                                              TrackEvent(REF, "rapporteur", AT))
    assert store.reads == 1
    assert trail_tail(store, before) == [("StaffWarningRaised", STALE),
                                         ("StaffWarningRaised", UNADDRESSED),
                                         ("MessageDispatched", DISPATCH)]
    assert summary["version"] == before + 3
    assert summary["tracks"]["rapporteur"]["dispatch"] == "sent"
    assert len(sent_ids(smtp_sink)) == 1 and len(routings) == 1  # routed once
    _, _, letter = smtp_sink.messages[0]
    assert all(m.label in str(letter["Subject"]) for m in routed())
    report = store.verify(REF)
    assert report.ok and report.signed == before + 3, report.describe()
    # Sent and recorded: again, nothing is sent or recorded.
    await ActivityEnvironment().run(acts.dispatch_track, TrackEvent(REF, "rapporteur", AT))
    assert len(sent_ids(smtp_sink)) == 1 and len(store.trail(REF)) == before + 3


async def test_a_save_that_fails_after_the_send_records_nothing_and_the_retry_records_once(
        store: CountingStore, smtp_sink: SmtpSink) -> None:
    ready_to_send(store)
    before = len(store.trail(REF))
    acts = activities(store, smtp_sink)
    # A database error inside the recording transaction, when the dispatch's chain link is
    # written (after the warnings' events, links and command results).
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER fail_dispatch BEFORE INSERT ON appeals_chain "
                          "WHEN NEW.event_name = 'MessageDispatched' "
                          "BEGIN SELECT json('the disk is full'); END"))
    with pytest.raises(Exception, match="malformed JSON"):
        await ActivityEnvironment().run(acts.dispatch_track, TrackEvent(REF, "rapporteur", AT))
    assert len(sent_ids(smtp_sink)) == 1  # the message went out...
    assert len(store.trail(REF)) == before  # ...and neither the warnings nor the dispatch stay
    assert recorded(store, STALE, UNADDRESSED, DISPATCH) == set()
    with store.engine.connect() as conn:
        links = conn.execute(select(schema.chain.c.version)
                             .where(schema.chain.c.case_id == str(store.get(REF).id))).all()
    assert len(links) == before

    with store.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER fail_dispatch"))
    await ActivityEnvironment().run(acts.dispatch_track, TrackEvent(REF, "rapporteur", AT))
    first, again = sent_ids(smtp_sink)
    assert first == again  # the retry sent under the same Message-ID (the recipient dedupes)
    assert trail_tail(store, before) == [("StaffWarningRaised", STALE),
                                         ("StaffWarningRaised", UNADDRESSED),
                                         ("MessageDispatched", DISPATCH)]
    assert store.verify(REF).ok


async def test_a_warning_an_older_worker_recorded_before_its_send_is_not_recorded_again(
        store: CountingStore, smtp_sink: SmtpSink) -> None:
    ready_to_send(store)
    acts = activities(store, smtp_sink)
    plan = plan_dispatch(REF, store.get(REF).intake, "rapporteur", book=acts.book,
                         today=AT.date(), max_age_days=30)
    # The old code recorded the address warning on its own, then crashed before sending.
    store.execute(REF, "raise_warning", {"warning": plan.warnings[0].warning, "at": AT}, "system",
                  STALE)
    before = len(store.trail(REF))
    await ActivityEnvironment().run(acts.dispatch_track, TrackEvent(REF, "rapporteur", AT))
    assert trail_tail(store, before) == [("StaffWarningRaised", UNADDRESSED),
                                         ("MessageDispatched", DISPATCH)]
    assert [e.command_id for e in store.trail(REF)].count(STALE) == 1


async def test_warnings_are_recorded_when_the_send_fails_for_good(store: CountingStore) -> None:
    ready_to_send(store)
    before = len(store.trail(REF))
    with SmtpSink(rcpt_reply="550 5.1.1 mailbox unavailable") as refusing:
        acts = activities(store, refusing)
        with pytest.raises(ApplicationError) as failed:
            await ActivityEnvironment().run(acts.dispatch_track,
                                            TrackEvent(REF, "rapporteur", AT))
    assert failed.value.type == "PermanentMailError" and failed.value.non_retryable
    # Staff see the warnings although nothing went out; the failure is the workflow's to record.
    assert trail_tail(store, before) == [("StaffWarningRaised", STALE),
                                         ("StaffWarningRaised", UNADDRESSED)]


async def test_a_case_without_tracks_is_sent_the_same_way(store: CountingStore,
                                                           smtp_sink: SmtpSink) -> None:
    ready_to_send(store, tracked=False)
    before = len(store.trail(REF))
    acts = activities(store, smtp_sink, old_book(without_mandate=False))
    store.reads = 0
    summary = await ActivityEnvironment().run(acts.dispatch, Dispatch(REF, "rapporteur", AT))
    assert store.reads == 1
    assert trail_tail(store, before) == [("StaffWarningRaised", STALE),
                                         ("MessageDispatched", f"{REF}/dispatch/rapporteur")]
    assert summary["actions"]["rapporteur"]["dispatch"] == "sent"
    await ActivityEnvironment().run(acts.dispatch, Dispatch(REF, "rapporteur", AT))
    assert len(sent_ids(smtp_sink)) == 1 and len(store.trail(REF)) == before + 2
