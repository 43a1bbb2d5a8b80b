"""Replay of histories recorded from real runs (tests/histories, written by the end-to-end tests
with APPEALS_RECORD_HISTORIES=1) against the current workflow code: a change that would make
running cases non-deterministic fails here, before it reaches a worker."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.dev_stack import FIXTURE_CODEC_KEY, HISTORIES
from worker.codec import make_data_converter
from worker.keys import KeyRing, decode_key
from workflows.case import CaseWorkflow
from workflows.tracks import (
    LOCAL_RECORDS_PATCH,
    REPRISAL_ALERTS_PATCH,
    WAITING_NOTICES_PATCH,
    TrackedCaseWorkflow,
)

RECORDED = sorted(HISTORIES.glob("*.json"))


def test_there_are_recorded_histories() -> None:
    # Cases opened before per-action tracks (UrgentCase) and after (UrgentCaseTracks); of these,
    # cases started before waiting notices (no "waiting-notices" patch marker) and after.
    assert {p.stem for p in RECORDED} >= {"happy_path", "worker_killed",
                                          "tracks_fund_before_clearance",
                                          "tracks_clearance_escalated",
                                          "tracks_further_information",
                                          "tracks_waiting_notices",
                                          "tracks_waiting_notices_retried",
                                          "tracks_reassessed", "tracks_reprisal",
                                          "tracks_local_records"}


def marked(path: Path, patch: str = WAITING_NOTICES_PATCH) -> bool:
    """Whether the run took a patch: its marker's id travels as a plain JSON payload in the
    marker's details."""
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker.get("markerName") == "core_patch":
            for payload in marker["details"]["patch-data"]["payloads"]:
                if json.loads(base64.b64decode(payload["data"]))["id"] == patch:
                    return True
    return False


def test_histories_from_before_and_after_waiting_notices_are_kept() -> None:
    tracks = [p for p in RECORDED if p.stem.startswith("tracks_")]
    assert {p.stem for p in tracks if marked(p)} == {"tracks_waiting_notices",
                                                    "tracks_waiting_notices_retried",
                                                    "tracks_reassessed", "tracks_reprisal",
                                                    "tracks_local_records"}


def test_histories_from_before_and_after_local_records_are_kept() -> None:
    """Decisions recorded by regular activities (every history before the patch) and by local
    activities (LOCAL_RECORDS_PATCH) both replay."""
    tracks = [p for p in RECORDED if p.stem.startswith("tracks_")]
    assert {p.stem for p in tracks if marked(p, LOCAL_RECORDS_PATCH)} == {"tracks_local_records"}
    assert {p.stem for p in tracks if not marked(p, LOCAL_RECORDS_PATCH)} >= {
        "tracks_reprisal", "tracks_waiting_notices", "tracks_clearance_escalated"}


def test_histories_from_before_and_after_reprisal_alerts_are_kept() -> None:
    tracks = [p for p in RECORDED if p.stem.startswith("tracks_")]
    assert {p.stem for p in tracks if marked(p, REPRISAL_ALERTS_PATCH)} == {
        "tracks_reassessed", "tracks_reprisal", "tracks_local_records"}
    assert {p.stem for p in tracks if not marked(p, REPRISAL_ALERTS_PATCH)} >= {
        "tracks_waiting_notices", "tracks_clearance_escalated"}


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_recorded_history_replays_against_the_current_workflow(path: Path) -> None:
    # A test-only key, committed with the histories (git does not keep its 0600 mode).
    key = decode_key(FIXTURE_CODEC_KEY.read_text().strip(), setting="replay fixture key")
    converter = make_data_converter(KeyRing.single(key))
    replayer = Replayer(workflows=[CaseWorkflow, TrackedCaseWorkflow], data_converter=converter)
    result = await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()),
                                            raise_on_replay_failure=True)
    assert result.replay_failure is None
