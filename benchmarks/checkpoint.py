"""Verification of the whole store against a signed checkpoint with the public key only:
`python -m benchmarks.checkpoint [--checkpoint-events N]` (also a part of `make bench`).

A SQLite event store with N events (cases of 20 events each, every link signed with a fresh
Ed25519 key; the cases' further events saved in one transaction per case, which signs each link
all the same) and one checkpoint; then `store.checkpoints.verify_store` is timed as an auditor runs
it (`appeals audit store`): a verifier over the raw rows (no cipher key) and the public key only.
Every link's SHA-256 and Ed25519 signature is checked, and every chain against the checkpoint.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from benchmarks.data import open_args
from store.app import CaseStore, sqlite_url, verifier_without_key
from store.checkpoints import verify_store, write_checkpoint
from store.signing import ChainKeys, ChainSigner

EVENTS_PER_CASE = 20


@dataclass
class Measured:
    events: int
    chains: int
    setup_seconds: float
    checkpoint_ms: float  # the first: every chain verified before it is sealed
    next_checkpoint_ms: float  # a later one: heads compared with the previous checkpoint
    verify_ms: list[float]


def measure(home: Path, events: int, repeat: int = 3) -> Measured:
    signer = ChainSigner.generate()
    path = home / "checkpoint.sqlite"
    store = CaseStore(sqlite_url(str(path)), base64.b64encode(os.urandom(32)).decode(),
                      signer=signer)
    directory = home / "checkpoints"
    t0 = time.perf_counter()
    try:
        cases = -(-events // EVENTS_PER_CASE)
        for n in range(cases):
            ref = f"BP-CP-{n:05d}"
            opening = open_args(ref, actions=["rapporteur"])
            store.open_case(**opening)
            case = store.get(ref)
            more = min(EVENTS_PER_CASE, events - n * EVENTS_PER_CASE) - 1
            for i in range(more):
                case.add_further_information(information=f"Update {i}.", actor="olga",
                                             command_id=f"{ref}/info/{i}",
                                             at=opening["at"] + timedelta(minutes=i + 1))
            if more:
                store._save(case, ref, "olga", f"{ref}/batch")
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        write_checkpoint(store.engine, store.recorder, signer, signer.verifier(), directory)
        checkpoint_ms = (time.perf_counter() - t1) * 1000
        t2 = time.perf_counter()
        write_checkpoint(store.engine, store.recorder, signer, signer.verifier(), directory)
        next_checkpoint_ms = (time.perf_counter() - t2) * 1000
    finally:
        store.close()
    keys = ChainKeys.of([signer.public])  # the auditor's public key, nothing else
    verifier = verifier_without_key(sqlite_url(str(path)), keys)
    times = []
    try:
        for _ in range(repeat):
            t = time.perf_counter()
            report = verify_store(verifier.engine, verifier.recorder, keys, directory)
            times.append((time.perf_counter() - t) * 1000)
            if not report.ok or report.events != events:
                raise RuntimeError(f"store verification failed: {report.failures[:3]}")
    finally:
        verifier.engine.dispose()
    return Measured(events, report.chains, setup, checkpoint_ms, next_checkpoint_ms, times)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import main as run_main
    return run_main(["--only", "checkpoint", *(argv or [])])


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1:]))
