"""Per-action tracks on the time-skipping test server, with a real SQLite store and SMTP sink.

Each proposed action moves on its own after the verification: these tests show an emergency-fund
request going out while the OHCHR appeal still waits for the ministry, escalations per action,
per-person consent and naming applied to every message, and further information to chosen
recipients only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from tests.factories import DEFENDER_NAME, T0, verification
from tests.workflow_env import CaseEnv, keep_history, settle
from workflows.inputs import (
    ClearanceInput,
    CloseInput,
    ConsentInput,
    FundChoiceInput,
    FundSubmissionInput,
    InformationInput,
    VerificationInput,
)
from workflows.tracks import TrackedCaseWorkflow as WF

FUND_CASE = {
    "requested_actions": ["rapporteur", "emergency_fund"], "refused_actions": [],
    "eu_grant": None,
    "fund_request": {"purpose": "legal_fees", "amount_eur": 3000},
}


def person(i: int = 0, given_by: str = "defender", relationship: str = "") -> dict[str, Any]:
    return {"defender": i, "given_by": given_by, "relationship": relationship,
            "channel": "secure_message", "given_at": (T0 - timedelta(days=400)).isoformat()}


async def verify(handle: WorkflowHandle[Any, Any], advised: bool = True) -> dict[str, Any]:
    return await handle.execute_update(WF.record_verification, VerificationInput(
        "olga", {**verification(), "public_action_advised": advised}))


async def grant(handle: WorkflowHandle[Any, Any], action: str, naming: str = "initials_only",
                consents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return await handle.execute_update(WF.grant_consent, ConsentInput(
        "olga", action, "", consents=consents or [person()], publicity={"0": naming}))


async def clear(handle: WorkflowHandle[Any, Any], action: str, granted: bool = True) -> Any:
    return await handle.execute_update(WF.record_clearance,
                                       ClearanceInput("lina", action, granted, "ok"))


def appeals_sent(env: CaseEnv) -> dict[str, list[str]]:
    """X-Appeal-Action -> recipients of every appeal the SMTP server received."""
    out: dict[str, list[str]] = {}
    for _, rcpts, m in env.sink.messages:
        if m["X-Appeal-Kind"] == "appeal":
            out.setdefault(m["X-Appeal-Action"], []).extend(rcpts)
    return out


def bodies(env: CaseEnv, kind: str = "appeal") -> list[str]:
    texts = []
    for m in env.sent(kind):
        for part in m.walk():
            if part.get_content_maintype() == "text":
                texts.append(str(m["Subject"]) + "\n" + part.get_payload(decode=True).decode())
    return texts


async def test_fund_request_goes_out_while_the_ohchr_appeal_waits_for_clearance(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(**FUND_CASE)
    await verify(handle)
    await grant(handle, "rapporteur")
    status = await grant(handle, "emergency_fund")
    assert status["tracks"]["rapporteur"]["step"] == "clearance"
    assert status["tracks"]["emergency_fund"]["step"] == "fund_choice"
    assert status["stage_detail"] == "clearance: 1, fund-choice: 1"
    fund = next(p for p in status["pending"] if p["decision"] == "choose_funds")
    assert fund["roles"] == ["case_officer"]
    status = await handle.execute_update(WF.choose_funds, FundChoiceInput(
        "olga", ["solidarity"], "causal link documented"))
    status = await settle(handle, lambda s: s["tracks"]["emergency_fund"]["step"] == "follow_up",
                          "fund application sent")
    assert status["tracks"]["rapporteur"]["step"] == "clearance"  # still waiting: not held back
    assert list(appeals_sent(tracked_env)) == ["emergency_fund"]
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["tracks"]["rapporteur"]["step"] == "follow_up", "appeal sent")
    assert sorted(appeals_sent(tracked_env)) == ["emergency_fund", "rapporteur"]
    await handle.execute_update(WF.close, CloseInput("olga", "resolved", "Grant received"))
    await handle.result()
    await keep_history(handle, "tracks_fund_before_clearance")


async def test_a_fund_that_takes_web_forms_waits_for_staff_to_record_the_submission(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(**FUND_CASE)
    await verify(handle)
    await grant(handle, "emergency_fund")
    status = await handle.execute_update(WF.choose_funds, FundChoiceInput(
        "olga", ["protection_grant"], ""))
    track = status["tracks"]["emergency_fund"]
    assert track["step"] == "dispatch" and track["funds"] == {"protection_grant": "to_submit"}
    assert any(p["decision"] == "record_fund_submission" for p in status["pending"])
    status = await handle.execute_update(WF.record_fund_submission, FundSubmissionInput(
        "olga", "protection_grant", "submitted through the fund's form"))
    assert status["tracks"]["emergency_fund"]["step"] == "follow_up"
    assert appeals_sent(tracked_env) == {}  # nothing mailed: the fund takes web forms


async def test_a_missing_clearance_escalates_for_its_action_only(tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa"],
                                     refused_actions=[], eu_grant=None)
    await verify(handle)  # risk 4 x 4 = critical: clearance waits 12 hours
    await grant(handle, "rapporteur")
    await grant(handle, "mfa")
    await clear(handle, "mfa")
    await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up", "mfa sent")
    await tracked_env.env.sleep(timedelta(hours=12, minutes=1))
    status = await settle(handle, lambda s: s["tracks"]["rapporteur"]["escalation_level"] == 1,
                          "rapporteur escalated")
    assert status["tracks"]["mfa"]["escalation_level"] == 0
    escalations = [e for e in tracked_env.trail() if e.event == "DeadlineEscalated"]
    assert [(e.details["action"], e.details["step"], e.details["level"]) for e in escalations] == [
        ("rapporteur", "clearance", 1)]
    assert len(tracked_env.sent("escalation")) == 1
    await keep_history(handle, "tracks_clearance_escalated")


async def test_refused_withdrawn_and_denied_actions_are_never_sent_while_the_others_go(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa", "eu_delegation"],
                                     refused_actions=[])
    await verify(handle)
    await handle.execute_update(WF.refuse_consent, ConsentInput("olga", "mfa", "no diplomacy"))
    await grant(handle, "rapporteur")
    await grant(handle, "eu_delegation")
    await handle.execute_update(WF.withdraw_consent, ConsentInput("olga", "eu_delegation", "fear"))
    await clear(handle, "rapporteur")
    status = await settle(handle, lambda s: s["tracks"]["rapporteur"]["step"] == "follow_up",
                          "appeal sent")
    assert {a: (t["step"], t["ended"]) for a, t in status["tracks"].items()} == {
        "rapporteur": ("follow_up", ""), "mfa": ("ended", "refused"),
        "eu_delegation": ("ended", "withdrawn")}
    assert list(appeals_sent(tracked_env)) == ["rapporteur"]
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await clear(handle, "eu_delegation")
    assert "eu_delegation is not waiting for clearance" in str(refused.value.cause)


async def test_denied_clearance_ends_only_that_track(tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa"],
                                     refused_actions=[], eu_grant=None)
    await verify(handle)
    await grant(handle, "rapporteur")
    await grant(handle, "mfa")
    status = await clear(handle, "mfa", granted=False)
    assert status["tracks"]["mfa"]["ended"] == "denied"
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["tracks"]["rapporteur"]["step"] == "follow_up", "sent")
    assert list(appeals_sent(tracked_env)) == ["rapporteur"]


async def test_initials_only_means_no_message_names_anyone_in_full_or_proposes_a_statement(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa", "eu_delegation"],
                                     refused_actions=[])
    await verify(handle, advised=True)
    await grant(handle, "rapporteur", naming="full_names")
    await grant(handle, "mfa", naming="initials_only")  # the most restrictive choice wins
    await grant(handle, "eu_delegation", naming="full_names")
    for action in ("rapporteur", "mfa", "eu_delegation"):
        await clear(handle, action)
    await settle(handle, lambda s: all(t["step"] == "follow_up" for t in s["tracks"].values()),
                 "all sent")
    texts = bodies(tracked_env)
    assert len(texts) >= 3
    for text in texts:
        assert DEFENDER_NAME not in text
        assert "public statement" not in text.lower()


async def test_no_message_proposes_public_action_when_do_no_harm_advises_against_it(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa"],
                                     refused_actions=[], eu_grant=None)
    await verify(handle, advised=False)
    await grant(handle, "rapporteur", naming="full_names")
    await grant(handle, "mfa", naming="full_names")
    await clear(handle, "rapporteur")
    await clear(handle, "mfa")
    await settle(handle, lambda s: all(t["step"] == "follow_up" for t in s["tracks"].values()),
                 "all sent")
    for text in bodies(tracked_env):
        assert "public statement" not in text.lower()


async def test_a_disappeared_persons_letter_records_the_relatives_consent(
        tracked_env: CaseEnv) -> None:
    from tests.factories import intake
    defenders = intake()["defenders"]
    defenders[0]["disappearance"] = {"last_seen_date": "2026-10-30",
                                     "last_seen_place": "Nairobi, Moi Avenue"}
    handle = await tracked_env.start(requested_actions=["rapporteur"], refused_actions=[],
                                     eu_grant=None, defenders=defenders,
                                     threat_types=["enforced_disappearance"])
    await verify(handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await grant(handle, "rapporteur")  # given by the defender: impossible while disappeared
    assert "consents[0].given_by" in str(refused.value.cause)
    await grant(handle, "rapporteur",
                consents=[person(0, given_by="relative", relationship="sister")])
    await clear(handle, "rapporteur")
    await settle(handle, lambda s: s["tracks"]["rapporteur"]["step"] == "follow_up", "sent")
    letter = bodies(tracked_env)[0].lower()
    assert "sister" in letter
    assert "relative" in letter or "family" in letter


async def test_further_information_reaches_exactly_the_chosen_recipients(
        tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa"],
                                     refused_actions=[], eu_grant=None)
    await verify(handle)
    await grant(handle, "rapporteur")
    await grant(handle, "mfa")
    await clear(handle, "rapporteur")
    await clear(handle, "mfa")
    status = await settle(handle, lambda s: all(t["step"] == "follow_up"
                                                for t in s["tracks"].values()), "all sent")
    await handle.execute_update(WF.add_further_information, InformationInput(
        "olga", "The hearing was moved to Monday.", send_to=["mfa"]))
    further = tracked_env.sent("further_information")
    assert [m["X-Appeal-Action"] for m in further] == ["mfa"]
    rcpts = [r for _, r, m in tracked_env.sink.messages if m["X-Appeal-Kind"] == "further_information"]
    assert sorted(rcpts[0]) == sorted(status["tracks"]["mfa"]["recipients"])
    await handle.execute_update(WF.withdraw_consent, ConsentInput("olga", "rapporteur", "stop"))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(WF.add_further_information, InformationInput(
            "olga", "More news.", send_to=["rapporteur"]))
    assert "consent" in str(refused.value.cause)
    await handle.execute_update(WF.close, CloseInput("olga", "resolved", "Released"))
    assert await handle.result() == "resolved"
    assert tracked_env.store.verify(tracked_env.ref).ok
    await keep_history(handle, "tracks_further_information")


async def test_an_smtp_outage_shows_on_the_track_while_sending_retries(tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["mfa"], refused_actions=[], eu_grant=None)
    await verify(handle)
    await grant(handle, "mfa")
    tracked_env.sink.data_reply = "451 local error, try again later"
    await clear(handle, "mfa")
    status = await settle(handle, lambda s: s["tracks"]["mfa"]["delivery"]["attempts"] >= 2,
                          "retrying")
    delivery = status["tracks"]["mfa"]["delivery"]
    assert delivery["last_error"] == "TransientMailError" and delivery["retrying_since"]
    assert status["tracks"]["mfa"]["step"] == "dispatch"
    tracked_env.sink.data_reply = None
    status = await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up", "sent")
    assert status["tracks"]["mfa"]["delivery"]["attempts"] == 0
    assert len(tracked_env.sent("appeal")) == 1
    assert "DispatchFailed" not in tracked_env.events()


async def test_with_live_sending_an_unconfirmed_address_is_never_used(tracked_env: CaseEnv) -> None:
    import dataclasses
    acts = tracked_env.activities
    acts.config = dataclasses.replace(acts.config, live_sending=True)
    handle = await tracked_env.start(requested_actions=["mfa"], refused_actions=[], eu_grant=None)
    await verify(handle)
    await grant(handle, "mfa")
    await clear(handle, "mfa")
    status = await settle(handle, lambda s: s["tracks"]["mfa"]["ended"] == "failed", "refused")
    assert status["tracks"]["mfa"]["dispatch"] == "failed"
    assert tracked_env.sent("appeal") == []
    failure = next(e for e in tracked_env.trail() if e.event == "DispatchFailed")
    assert "not confirmed" in failure.details["reason"]
    assert len(tracked_env.sent("escalation")) == 1  # staff are told at once


async def test_a_held_message_goes_once_further_information_completes_the_intake(
        tracked_env: CaseEnv) -> None:
    from tests.factories import intake
    organisation = {**intake()["organisation"], "contact_name": ""}
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa"], refused_actions=[],
                                     eu_grant=None, organisation=organisation)
    await verify(handle)
    for action in ("rapporteur", "mfa"):
        await grant(handle, action)
        await clear(handle, action)
    status = await settle(handle, lambda s: bool(s["tracks"]["rapporteur"]["held"])
                          and s["tracks"]["mfa"]["step"] == "follow_up", "held, mfa sent")
    assert status["held"] == {"rapporteur": ["organisation.contact_name"]}
    assert {"decision": "add_further_information", "roles": ["case_officer"],
            "action": "rapporteur", "missing": ["organisation.contact_name"]} in status["pending"]
    await handle.execute_update(WF.add_further_information, InformationInput(
        "olga", "Contact named", intake_changes={"organisation": {"contact_name": "D. Orvenne"}}))
    await settle(handle, lambda s: s["tracks"]["rapporteur"]["step"] == "follow_up", "sent")
    assert sorted(appeals_sent(tracked_env)) == ["mfa", "rapporteur"]


async def test_the_deadline_table_and_checkin_interval_come_from_the_settings(
        tracked_env: CaseEnv, tmp_path: Any) -> None:
    import dataclasses

    from tests.factories import intake
    from worker.settings import load_settings
    from workflows.inputs import TracksStart
    table = tmp_path / "deadlines.toml"
    table.write_text('[consent]\ncritical = "30m"\nhigh = "1h"\nmedium = "2h"\nlow = "3h"\n')
    settings = load_settings(var_dir=str(tmp_path / "var"), deadlines_file=str(table),
                             checkin_interval="2d")
    acts = tracked_env.activities
    acts.config = dataclasses.replace(acts.config, deadline_overrides=settings.deadline_overrides)
    handle = await tracked_env.client.start_workflow(
        WF.run, TracksStart(tracked_env.ref, intake(requested_actions=["rapporteur", "mfa"],
                                                    refused_actions=[], eu_grant=None), "olga",
                            checkin_interval_seconds=settings.checkin_interval_seconds),
        id=tracked_env.ref, task_queue=tracked_env.task_queue)
    tracked_env.handles.append(handle)
    await settle(handle, lambda s: s["stage"] == "verification", "opened")
    await verify(handle)  # critical risk: consent waits 30 minutes under this table
    await grant(handle, "mfa")
    await clear(handle, "mfa")
    await settle(handle, lambda s: s["tracks"]["mfa"]["step"] == "follow_up", "mfa sent")
    await tracked_env.env.sleep(timedelta(minutes=31))
    status = await settle(handle, lambda s: s["tracks"]["rapporteur"]["escalation_level"] == 1,
                          "consent escalated at 30 minutes")
    assert status["tracks"]["mfa"]["escalation_level"] == 0
    await tracked_env.env.sleep(timedelta(days=2))
    await settle(handle, lambda s: len(tracked_env.sent("reminder-checkin")) == 1,
                 "check-in reminder after two days")


async def test_the_head_extends_one_actions_deadline_and_only_that_clock_moves(
        tracked_env: CaseEnv) -> None:
    from datetime import datetime

    from workflows.inputs import ExtensionInput
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa"],
                                     refused_actions=[], eu_grant=None)
    await verify(handle)
    await grant(handle, "rapporteur")
    status = await grant(handle, "mfa")
    before = {a: t["deadline"] for a, t in status["tracks"].items()}
    later = datetime.fromisoformat(before["mfa"]) + timedelta(days=2)
    status = await handle.execute_update(WF.extend_deadline, ExtensionInput(
        "hana", later, "ministry closed for the holiday", action="mfa"))
    assert datetime.fromisoformat(status["tracks"]["mfa"]["deadline"]) == later
    assert status["tracks"]["rapporteur"]["deadline"] == before["rapporteur"]
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(WF.extend_deadline, ExtensionInput(
            "olga", later + timedelta(days=1), "not mine to extend", action="mfa"))
    assert "head" in str(refused.value.cause)


async def test_inboxes_find_each_decision_by_action(tracked_env: CaseEnv) -> None:
    handle = await tracked_env.start(requested_actions=["rapporteur", "mfa"],
                                     refused_actions=[], eu_grant=None)
    await verify(handle)
    await grant(handle, "mfa")  # mfa waits for clearance; rapporteur still waits for consent
    store, now = tracked_env.store, T0 + timedelta(days=3650)
    liaison = [r for r in store.pending_for("lina", now) if r["reference"] == tracked_env.ref]
    assert [r["waiting"] for r in liaison] == [["record_clearance"]]
    officer = [r for r in store.pending_for("olga", now) if r["reference"] == tracked_env.ref]
    assert [r["waiting"] for r in officer] == [["grant_consent"]]
    assert not [r for r in store.pending_for("omar", now) if r["reference"] == tracked_env.ref]
