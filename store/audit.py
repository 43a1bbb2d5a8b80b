"""The audit cross-check: the store's chain, and Temporal's history against the store's events.

Every decision a person makes is a workflow update; its event in the store carries the command id
`<reference>/update/<update id>`. `cross_check` reads every run of the case's workflow (following
continue-as-new) and checks that each update that succeeded has its event in the store, of a kind
that decision may record, and that every store event of an update has a successful update behind
it. `verify_case` adds the chain verification (store.chain) and gives one report, as plain data,
for `appeals audit --verify` and the web's audit page; the chain verification checks each link's
signature with the store's public keys. When Temporal holds no history of a case (its retention
expired), the case is verified against the latest signed checkpoint instead (`against_checkpoint`):
a closed case then passes, with the report saying that its decisions were not cross-checked.

Temporal's RPC errors other than NOT_FOUND (no history: retention expired, or never started) are
left to the caller (the desk turns an unreachable server into its own error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from domain.decisions import DECISIONS

if TYPE_CHECKING:
    from pathlib import Path

    from temporalio.client import Client

    from store.app import CaseStore, TrailEntry

# What each decision (workflow update) may record as its first event in the store.
DECISION_EVENTS: dict[str, frozenset[str]] = {
    name: frozenset(d.events) for name, d in DECISIONS.items()}
MAX_RUNS = 10_000


async def successful_updates(client: Client, reference: str) -> tuple[list[tuple[str, str]], int]:
    """(update id, update name) of every successful update, over all runs; and the run count
    (0 when Temporal holds no history for the case)."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.service import RPCError, RPCStatusCode

    try:
        latest = await client.get_workflow_handle(reference).fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return [], 0
        raise
    first_run = latest.events[0].workflow_execution_started_event_attributes.first_execution_run_id
    histories = [latest]
    if first_run and first_run != latest.run_id:
        histories, run_id, seen = [], first_run, set[str]()
        while run_id and run_id not in seen and len(seen) < MAX_RUNS:
            seen.add(run_id)
            history = await client.get_workflow_handle(reference, run_id=run_id).fetch_history()
            histories.append(history)
            last = history.events[-1]
            run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                      if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
                      else "")
    succeeded: list[tuple[str, str]] = []
    for history in histories:
        names: dict[str, str] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                request = event.workflow_execution_update_accepted_event_attributes.accepted_request
                names[request.meta.update_id] = request.input.name
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
                attrs = event.workflow_execution_update_completed_event_attributes
                if attrs.outcome.HasField("success"):
                    uid = attrs.meta.update_id
                    succeeded.append((uid, names.get(uid, "")))
    return succeeded, len(histories)


def compare(reference: str, succeeded: list[tuple[str, str]], runs: int,
            trail: list[TrailEntry]) -> dict[str, Any]:
    """Every successful decision in Temporal's history has its event in the store, and back."""
    if runs == 0:
        return {"ok": False, "decisions": 0, "runs": 0,
                "text": f"{reference}: Temporal holds no history for this case (retention may "
                        "have expired); its decisions could not be cross-checked"}
    marker = f"{reference}/update/"
    recorded: dict[str, Any] = {}
    for entry in trail:
        if entry.command_id.startswith(marker):
            recorded.setdefault(entry.command_id[len(marker):], entry)
    problem = None
    decided: dict[str, str] = {}
    for uid, name in succeeded:
        if uid in decided:
            continue  # the same update repeated in a later run: it records nothing new
        decided[uid] = name
        found = recorded.get(uid)
        if found is None:
            problem = (f"decision {name or '?'} (update {uid}) succeeded in Temporal but has no "
                       "event in the store")
            break
        if found.event not in DECISION_EVENTS.get(name, frozenset()):
            problem = (f"decision {name or '?'} (update {uid}) is recorded in the store as "
                       f"{found.event} (version {found.version})")
            break
    if problem is None:
        for uid, entry in recorded.items():
            if uid not in decided:
                problem = (f"store event {entry.event} (version {entry.version}, update {uid}) "
                           "has no successful decision in Temporal's history")
                break
    if problem is not None:
        return {"ok": False, "decisions": len(decided), "runs": runs,
                "text": f"{reference}: Temporal history and event store disagree: {problem}"}
    return {"ok": True, "decisions": len(decided), "runs": runs,
            "text": f"{reference}: Temporal history and event store agree ({len(decided)} "
                    f"decisions, {runs} run{'s' if runs != 1 else ''})"}


async def cross_check(store: CaseStore, client: Client, reference: str) -> dict[str, Any]:
    """Temporal's successful updates against the store's events of the case."""
    import asyncio

    trail = await asyncio.to_thread(store.trail, reference)
    succeeded, runs = await successful_updates(client, reference)
    return compare(reference, succeeded, runs, trail)


def against_checkpoint(store: CaseStore, reference: str, trail: list[TrailEntry],
                       checkpoint_dir: Path | None) -> dict[str, Any] | None:
    """When Temporal holds no history of the case (retention): the store's chain of the case
    verified against the latest checkpoint (store.checkpoints) instead of the cross-check; `ok`
    only for a closed case whose store verifies. None without a checkpoint directory or public
    key (the plain "no history" answer stands)."""
    from domain.case import case_id
    from store.checkpoints import verify_store

    if checkpoint_dir is None or store.chain_keys is None:
        return None
    closed = any(entry.event == "Closed" for entry in trail)
    report = verify_store(store.engine, store.recorder, store.chain_keys, checkpoint_dir,
                          case_id=str(case_id(reference)))
    lost = (f"{reference}: Temporal holds no history for this "
            f"{'closed' if closed else 'open'} case (retention may have expired)")
    if not report.ok:
        return {"ok": False, "decisions": 0, "runs": 0,
                "text": f"{lost}; against {report.checkpoint or 'no checkpoint'} the store "
                        f"fails: {report.failures[0]}"}
    if report.checkpoint is None:
        return {"ok": False, "decisions": 0, "runs": 0,
                "text": f"{lost}; there is no checkpoint to verify the store against"}
    if not closed:
        return {"ok": False, "decisions": 0, "runs": 0,
                "text": f"{lost}; its decisions could not be cross-checked"}
    return {"ok": True, "decisions": 0, "runs": 0, "checkpoint": report.checkpoint,
            "text": f"{lost}; its decisions were not cross-checked, and the store was verified "
                    f"against {report.checkpoint} instead"}


async def verify_case(store: CaseStore, client: Client, reference: str,
                      checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """The case's audit chain (with the links' signatures) and the cross-check, as one report:
    `ok`, `chain` and `history` (each with `ok` and a one-line `text`). When Temporal holds no
    history of a closed case, `history` is the store verified against the latest checkpoint in
    `checkpoint_dir` (`against_checkpoint`). Raises store.app.CaseNotFound for an unknown case."""
    import asyncio

    trail = await asyncio.to_thread(store.trail, reference)  # CaseNotFound first
    report = await asyncio.to_thread(store.verify, reference)
    chain = {"ok": bool(report.ok), "events": report.events,
             "broken_version": report.broken_version, "reason": report.reason,
             "text": report.describe()}
    succeeded, runs = await successful_updates(client, reference)
    history = None
    if runs == 0:  # retention expired (or never started): the checkpoint speaks for the store
        history = await asyncio.to_thread(against_checkpoint, store, reference, trail,
                                          checkpoint_dir)
    if history is None:
        history = compare(reference, succeeded, runs, trail)
    return {"reference": reference, "ok": chain["ok"] and history["ok"], "chain": chain,
            "history": history}
