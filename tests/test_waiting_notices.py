"""Staff learn by email that a decision now waits for them (workflows.tracks, "waiting notices").

On the time-skipping test server with a real SQLite store and the real SMTP sink: one short notice
per decision the case comes to wait for, to the active staff who may take it (as the web inbox
shows it), holding the reference, the decision's label, the action, the deadline and where to
act, and no defender's name. Not again on a retry, an escalation or a later change; a failed send
never holds the case up.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

from activities.mail import OutgoingMessage, PermanentMailError, TransientMailError
from activities.messages import stamp
from domain.decisions import DECISIONS
from domain.view import CaseView
from tests.factories import DEFENDER_NAME, INCIDENT_TEXT
from tests.test_tracks_workflow import clear, grant, verify
from tests.workflow_env import CaseEnv, keep_history, settle
from workflows.inputs import CloseInput, ConsentInput, TracksStart
from workflows.tracks import TrackedCaseWorkflow as WF

ONE_ACTION = {"requested_actions": ["rapporteur"], "refused_actions": [], "eu_grant": None}
TWO_ACTIONS = {"requested_actions": ["rapporteur", "mfa"], "refused_actions": [], "eu_grant": None}


def notices(env: CaseEnv, decision: str | None = None) -> list[tuple[list[str], Message]]:
    """(recipients, message) of every waiting notice the SMTP server received."""
    return [(rcpts, m) for _, rcpts, m in env.sink.messages
            if m["X-Appeal-Kind"] == "waiting"
            and (decision is None or m["X-Appeal-Decision"] == decision)]


def text_of(message: Message) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return f"{message['Subject']}\n{body.get_content()}"


def whole(message: Message) -> str:
    """Every header and the body, as sent."""
    return "\n".join(f"{k}: {v}" for k, v in message.items()) + "\n" + text_of(message)


def no_personal_data(message: Message) -> None:
    sent = whole(message)
    for part in [*DEFENDER_NAME.split(), "Vrennick", "Orvenne", "Nairobi", "Kenya", "Police"]:
        assert part not in sent  # no name, no organisation, no place or country, no incident
    assert INCIDENT_TEXT not in sent


async def test_a_clearance_mails_the_liaisons_once_with_the_reference_and_no_name(
        tracked_env: CaseEnv) -> None:
    store = tracked_env.store
    store.add_user("leo", "Leo", "leo@secretariat.example.org", ["ministry_liaison"])
    handle = await tracked_env.start(**ONE_ACTION)
    await verify(handle)
    status = await grant(handle, "rapporteur")
    assert status["tracks"]["rapporteur"]["step"] == "clearance"
    await wait_for(tracked_env, 3)  # the notices go in the background
    [(rcpts, message)] = notices(tracked_env, "record_clearance")
    assert sorted(rcpts) == ["leo@secretariat.example.org", "lina@secretariat.example.org"]
    text = text_of(message)
    ref = tracked_env.ref
    assert ref in message["Subject"] and DECISIONS["record_clearance"].label in message["Subject"]
    assert f"Case:      {ref}" in text
    assert "For:       UN Special Procedures" in text
    assert f"/cases/{ref}" in text and f"appeals case clear {ref} rapporteur" in text
    deadline = datetime.fromisoformat(status["tracks"]["rapporteur"]["deadline"])
    assert f"Deadline:  {stamp(deadline)}" in text
    assert "four eyes" in text
    assert message["X-Appeal-Decision-Action"] == "rapporteur"
    assert message["X-Appeal-Action"] is None  # that header is for outgoing appeals
    no_personal_data(message)

    # The deadline passes: an escalation, but not a second notice; the clearance ends the wait.
    await tracked_env.env.sleep(timedelta(hours=12, minutes=1))
    await settle(handle, lambda s: s["tracks"]["rapporteur"]["escalation_level"] == 1, "escalated")
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["tracks"]["rapporteur"]["step"] == "follow_up", "sent")
    await handle.execute_update(WF.close, CloseInput("olga", "resolved", "done"))
    await handle.result()
    assert len(notices(tracked_env, "record_clearance")) == 1
    assert len(tracked_env.sent("escalation")) == 1
    # Each decision the case came to wait for was mailed once: the verification, the consent,
    # the clearance; never a closing while an action was still under way.
    assert sorted(m["X-Appeal-Decision"] for _, m in notices(tracked_env)) == [
        "grant_or_refuse_consent", "record_clearance", "record_verification"]
    for _, m in notices(tracked_env):
        no_personal_data(m)
    await keep_history(handle, "tracks_waiting_notices")


async def test_the_case_officers_decisions_go_to_the_cases_own_officer(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(**TWO_ACTIONS)
    olga = ["olga@secretariat.example.org"]
    [(rcpts, message)] = await wait_for(tracked_env, 1)
    assert rcpts == olga and message["X-Appeal-Decision"] == "record_verification"
    assert DECISIONS["record_verification"].label in text_of(message)
    await verify(handle)
    found = await wait_for(tracked_env, 3)
    consents = [m for r, m in found if m["X-Appeal-Decision"] == "grant_or_refuse_consent"]
    assert sorted(m["X-Appeal-Decision-Action"] for m in consents) == ["mfa", "rapporteur"]
    assert "Record consent or a refusal" in text_of(consents[0])
    # Both refused: nothing is left to move, so the case waits only to be closed.
    for action in ("rapporteur", "mfa"):
        await handle.execute_update(WF.refuse_consent, ConsentInput("olga", action, "no"))
    found = await wait_for(tracked_env, 4)
    [close] = [m for _, m in found if m["X-Appeal-Decision"] == "close"]
    assert f"appeals case close {tracked_env.ref}" in text_of(close)
    assert "Every proposed action has ended" in text_of(close)
    # Omar, another case officer, and the head (who may close too) get nothing: it is Olga's case.
    assert all(r == olga for r, _ in found)
    for _, m in found:
        no_personal_data(m)
    await handle.execute_update(WF.close, CloseInput("olga", "no_further_action", ""))
    await handle.result()
    assert len(notices(tracked_env)) == 4


async def wait_for(env: CaseEnv, count: int) -> list[tuple[list[str], Message]]:
    """The notices once there are `count` (they go in the background; real time)."""
    for _ in range(200):
        found = notices(env)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} waiting notices, got {len(notices(env))}")


class RefusingNotices:
    """The worker's mailer, but waiting notices fail: for good, or for a while (server time)."""

    def __init__(self, env: CaseEnv, *, permanent: bool = False,
                 outage: timedelta = timedelta(0)) -> None:
        self.env, self.real, self.permanent, self.outage = env, env.activities.mailer, permanent, outage
        self.until: Any = None
        self.refused = 0

    async def send(self, message: OutgoingMessage) -> None:
        if message.headers.get("X-Appeal-Kind") == "waiting":
            if self.permanent:
                self.refused += 1
                raise PermanentMailError("550 mailbox unavailable")
            now = await self.env.env.get_current_time()
            self.until = self.until or now + self.outage
            if now < self.until:
                self.refused += 1
                raise TransientMailError("421 try later")
        await self.real.send(message)


async def test_a_notice_refused_for_good_becomes_a_warning_and_the_case_goes_on(
        tracked_env: CaseEnv) -> None:
    mailer = RefusingNotices(tracked_env, permanent=True)
    tracked_env.activities.mailer = mailer  # type: ignore[assignment]
    handle = await tracked_env.start(**ONE_ACTION)
    await verify(handle)
    await grant(handle, "rapporteur")
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["tracks"]["rapporteur"]["step"] == "follow_up", "sent")
    status = await settle(handle, lambda s: s["warnings"] == 3, "three warnings")
    assert mailer.refused == 3 and not notices(tracked_env)
    warnings = [e for e in tracked_env.trail() if e.event == "StaffWarningRaised"]
    assert len(warnings) == 3
    assert all("Staff notification could not be sent" in e.details["warning"] for e in warnings)
    assert status["stage"] == "follow_up"


async def test_staff_mail_down_holds_no_decision_and_the_notice_goes_once_it_is_back(
        tracked_env: CaseEnv) -> None:
    mailer = RefusingNotices(tracked_env, outage=timedelta(minutes=3))
    tracked_env.activities.mailer = mailer  # type: ignore[assignment]
    handle = await tracked_env.start(**ONE_ACTION)
    # The verification's notice is being retried: the verification and the consent still go in.
    await verify(handle)
    status = await grant(handle, "rapporteur")
    assert status["tracks"]["rapporteur"]["step"] == "clearance"
    await tracked_env.env.sleep(timedelta(minutes=10))
    found = await wait_for(tracked_env, 3)
    assert mailer.refused >= 3
    assert sorted(m["X-Appeal-Decision"] for _, m in found) == [
        "grant_or_refuse_consent", "record_clearance", "record_verification"]
    # Retries reuse the Message-ID: one notice per decision, however many attempts.
    assert len({m["Message-ID"] for _, m in found}) == 3
    await clear(handle, "rapporteur")
    await handle.execute_update(WF.close, CloseInput("olga", "resolved", ""))
    await handle.result()
    assert len(notices(tracked_env)) == 3


async def test_a_long_outage_retries_while_awaited_and_stops_once_decided_or_closed(
        tracked_env: CaseEnv) -> None:
    mailer = RefusingNotices(tracked_env, outage=timedelta(minutes=25))
    tracked_env.activities.mailer = mailer  # type: ignore[assignment]
    handle = await tracked_env.start(**ONE_ACTION)
    # Ten minutes of retries fail, the workflow waits ten more, then tries again and gets through.
    await tracked_env.env.sleep(timedelta(minutes=40))
    [(_, message)] = await wait_for(tracked_env, 1)
    assert message["X-Appeal-Decision"] == "record_verification"
    refused = mailer.refused
    assert refused >= 5
    # Staff mail goes down for good: the consent's notice is dropped once consent is recorded,
    # the clearance's is cancelled when the case closes; neither holds a decision up.
    mailer.until = datetime.max.replace(tzinfo=UTC)
    await verify(handle)
    await tracked_env.env.sleep(timedelta(minutes=5))
    await grant(handle, "rapporteur")
    await tracked_env.env.sleep(timedelta(minutes=30))
    await handle.execute_update(WF.close, CloseInput("olga", "resolved", ""))
    await handle.result()
    assert mailer.refused > refused
    assert len(notices(tracked_env)) == 1
    await keep_history(handle, "tracks_waiting_notices_retried")


async def test_a_case_continued_from_a_run_without_notices_tells_only_what_becomes_pending(
        tracked_env: CaseEnv) -> None:
    """A case that ran before notices continues as new with `notified` None: what it already
    waited for is not announced then; what becomes pending from there on is."""
    handle = await tracked_env.start(**TWO_ACTIONS)
    await verify(handle)
    status = await grant(handle, "rapporteur")
    await wait_for(tracked_env, 4)  # verification, consent x 2, clearance of the OHCHR letter
    await tracked_env.terminate(handle, "as if the run had continued as new")
    view = CaseView.from_json(status)
    successor = await tracked_env.client.start_workflow(
        WF.run, TracksStart(tracked_env.ref, {}, "olga", view=view, notified=None),
        id=tracked_env.ref, task_queue=tracked_env.task_queue)
    tracked_env.handles.append(successor)
    await settle(successor, lambda s: s["stage"] == "consent", "running again")
    await grant(successor, "mfa")
    found = await wait_for(tracked_env, 5)
    assert [m["X-Appeal-Decision-Action"] for _, m in found[4:]] == ["mfa"]
    assert found[4][1]["X-Appeal-Decision"] == "record_clearance"
    await asyncio.sleep(1)
    assert len(notices(tracked_env)) == 5
