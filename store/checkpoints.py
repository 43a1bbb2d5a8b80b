"""Signed checkpoints of every chain's head, kept outside the database, and the store verification
against them.

A checkpoint is a JSON document listing every chain (each case, and the users log) with its head
version, the hash of its head link and the version of its first signed link (`signed_from`, null
for a chain whose links are all from before signing), a Merkle root over those entries, its
sequence number and the SHA-256 of the previous checkpoint's file; it is signed with the chain
signing key (store.signing). Checkpoints are files `checkpoint-<sequence>.json` in a directory the
database's writer does not control (`APPEALS_CHECKPOINT_DIR`), each created once and never
overwritten (a private temporary file hard-linked into place: `os.link` refuses an existing name).

Someone who can write the database but holds neither the signing key nor the directory can delete
a case's newest events with their links, or a whole case, without breaking any signature: the
latest checkpoint still names the head it sealed, so `verify_store` reports it. What happened
after the latest checkpoint is the exposure window (`APPEALS_CHECKPOINT_INTERVAL`).

Legacy unsigned links (written before signing) are sealed by the first checkpoint: afterwards a
chain may hold unsigned links only below the version its first checkpoint saw, and a chain that is
in no checkpoint must be signed from version 1. A writer (`write_checkpoint`) refuses to seal a
store that went back on the previous checkpoint (a head lower or different, a chain gone, a
signature removed), so the next checkpoint cannot launder an attack.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import AggregateRecorder
from sqlalchemy import Engine, func, inspect, select

from domain.users import USERS_LOG_ID
from store import schema
from store.chain import USERS_LOG_NAME, ChainReport, ChainVerifier
from store.signing import ChainKeys, ChainSigner

_log = logging.getLogger(__name__)
FORMAT = "appeals-checkpoint/1"
_NAME = re.compile(r"^checkpoint-(\d{10})\.json$")


class CheckpointError(Exception):
    """A checkpoint cannot be written or read (the message names the file or the chain)."""


class CheckpointRefused(CheckpointError):
    """The store went back on the previous checkpoint: nothing is sealed over it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("checkpoint refused: the store differs from the previous checkpoint: "
                         + "; ".join(problems[:5])
                         + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
        self.problems = problems


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def merkle_root(entries: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 Merkle root over the entries (leaves 0x00||entry, nodes 0x01||left||right, an odd
    node carried up); the root of no entries is the hash of the empty string."""
    level = [hashlib.sha256(b"\x00" + canonical(dict(e))).digest() for e in entries]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def _signed_part(doc: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k not in ("key_id", "signature")}
    return FORMAT.encode() + b"\n" + canonical(body)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    doc: dict[str, Any]
    file_hash: str

    @property
    def sequence(self) -> int:
        return int(self.doc["sequence"])

    @property
    def chains(self) -> dict[str, dict[str, Any]]:
        return {e["chain"]: e for e in self.doc["chains"]}

    @property
    def name(self) -> str:
        return self.path.name


# ---------------------------------------------------------------------------- the directory
def checkpoint_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        data = path.read_bytes()
        doc = json.loads(data)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not a checkpoint of format {FORMAT}")
    try:
        int(doc["sequence"])
        for entry in doc["chains"]:
            str(entry["chain"]), int(entry["version"]), str(entry["hash"])
            if entry["signed_from"] is not None:
                int(entry["signed_from"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path.name}: a checkpoint with missing or malformed fields"
                              ) from None
    return Checkpoint(path, doc, hashlib.sha256(data).hexdigest())


def check_checkpoints(directory: Path, keys: ChainKeys) -> tuple[Checkpoint | None, list[str]]:
    """Every checkpoint's signature, Merkle root, sequence and link to the previous one; the
    latest checkpoint and the problems found."""
    problems: list[str] = []
    previous: Checkpoint | None = None
    for path in checkpoint_files(directory):
        try:
            cp = read_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        why = keys.verify(str(cp.doc.get("key_id", "")), str(cp.doc.get("signature", "")),
                          _signed_part(cp.doc))
        if why is not None:
            problems.append(f"{cp.name}: the checkpoint's signature: {why}")
        if merkle_root(cp.doc["chains"]) != cp.doc.get("merkle_root"):
            problems.append(f"{cp.name}: its Merkle root does not match its chains")
        if _NAME.match(path.name).group(1) != f"{cp.sequence:010d}":  # type: ignore[union-attr]
            problems.append(f"{cp.name}: its sequence number is {cp.sequence}")
        if previous is not None:
            if cp.sequence != previous.sequence + 1:
                problems.append(f"{cp.name}: follows {previous.name} (a checkpoint is missing)")
            if cp.doc.get("previous") != previous.file_hash:
                problems.append(f"{cp.name}: does not name {previous.name} as its previous "
                                "checkpoint (a checkpoint was changed)")
        previous = cp
    return previous, problems


def _write_new(directory: Path, sequence: int, data: bytes) -> Path | None:
    """Create `checkpoint-<sequence>.json` holding `data`, never over an existing file: None when
    the name is taken (another writer was first)."""
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = directory / f"checkpoint-{sequence:010d}.json"
    tmp = directory / f".checkpoint-{sequence:010d}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def sealed_chain(directory: Path, chain: str) -> bool:
    """Whether the latest checkpoint lists this chain (True when the latest cannot be read: the
    caller then assumes the worst)."""
    files = checkpoint_files(directory)
    if not files:
        return False
    try:
        return chain in read_checkpoint(files[-1]).chains
    except CheckpointError:
        return True


# ---------------------------------------------------------------------------- the store's heads
def _references(engine: Engine) -> dict[str, str]:
    idx = schema.case_index
    with engine.connect() as conn:
        refs = {cid: ref for ref, cid in conn.execute(select(idx.c.reference, idx.c.case_id))}
    refs[str(USERS_LOG_ID)] = USERS_LOG_NAME
    return refs


def chain_entries(engine: Engine) -> tuple[list[dict[str, Any]], dict[tuple[str, int], str]]:
    """Each chain's head (version, link hash, first signed version), in chain id order; and every
    link hash by (chain, version)."""
    c, sg = schema.chain, schema.chain_signatures
    with engine.connect() as conn:
        hashes = {(cid, v): h for cid, v, h in conn.execute(
            select(c.c.case_id, c.c.version, c.c.hash))}
        signed_from: dict[str, int] = {}
        if inspect(conn).has_table(sg.name):  # not in a database from before signing
            signed_from = {cid: int(v) for cid, v in conn.execute(
                select(sg.c.case_id, func.min(sg.c.version)).group_by(sg.c.case_id))}
    heads: dict[str, int] = {}
    for cid, version in hashes:
        heads[cid] = max(version, heads.get(cid, 0))
    refs = _references(engine)
    entries = [{"chain": cid, "ref": refs.get(cid, ""), "version": v, "hash": hashes[(cid, v)],
                "signed_from": signed_from.get(cid)} for cid, v in sorted(heads.items())]
    return entries, hashes


def regressions(previous: Checkpoint, entries: list[dict[str, Any]],
                hashes: Mapping[tuple[str, int], str]) -> list[str]:
    """How the store went back on `previous` (empty: it only grew, keeping its signatures)."""
    now = {e["chain"]: e for e in entries}
    problems = []
    for cid, old in previous.chains.items():
        name = old.get("ref") or cid
        new = now.get(cid)
        if new is None:
            problems.append(f"{name}: removed (sealed at version {old['version']})")
        elif new["version"] < old["version"]:
            problems.append(f"{name} version {new['version'] + 1}: events deleted (sealed at "
                            f"version {old['version']})")
        elif hashes.get((cid, old["version"])) != old["hash"]:
            problems.append(f"{name} version {old['version']}: the link differs from the sealed one")
        elif old["signed_from"] is not None and new["signed_from"] != old["signed_from"]:
            problems.append(f"{name} version {old['signed_from']}: a signature was removed")
        elif (old["signed_from"] is None and new["version"] > old["version"]
              and new["signed_from"] != old["version"] + 1):
            problems.append(f"{name} version {old['version'] + 1}: unsigned after the checkpoint")
    for cid, new in now.items():
        if cid not in previous.chains and new["signed_from"] != 1:
            problems.append(f"{new['ref'] or cid} version 1: a chain without signed links that "
                            "no checkpoint has seen")
    return problems


def write_checkpoint(engine: Engine, recorder: AggregateRecorder, signer: ChainSigner,
                     keys: ChainKeys, directory: Path, *, now: datetime | None = None) -> Path:
    """Seal the heads of every chain in a new signed checkpoint file. The first checkpoint is
    written only over a store whose every chain verifies; later ones only when nothing went back
    on the previous checkpoint (CheckpointRefused, naming the chains and versions)."""
    for _ in range(10):
        latest, problems = check_checkpoints(directory, keys)
        if problems:
            raise CheckpointRefused(problems)
        entries, hashes = chain_entries(engine)
        if latest is None:
            verifier = ChainVerifier(engine, recorder, keys)
            broken = [verifier.verify(e["chain"], e["ref"] or None) for e in entries]
            bad = [r.describe() for r in broken if not r.ok]
            if bad:
                raise CheckpointRefused(bad)
        else:
            bad = regressions(latest, entries, hashes)
            if bad:
                raise CheckpointRefused(bad)
        doc: dict[str, Any] = {
            "format": FORMAT,
            "sequence": 1 if latest is None else latest.sequence + 1,
            "previous": None if latest is None else latest.file_hash,
            "created_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
            "chains": entries,
            "merkle_root": merkle_root(entries),
        }
        doc["key_id"], doc["signature"] = signer.sign(_signed_part(doc))
        path = _write_new(directory, doc["sequence"], json.dumps(doc, indent=1).encode() + b"\n")
        if path is not None:
            return path
    raise CheckpointError("checkpoint: another writer kept taking the next sequence number")


# ---------------------------------------------------------------------------- verification
@dataclass
class StoreReport:
    """The store verified against the latest checkpoint: one line per chain, and the failures
    (each naming the case and version)."""

    checkpoint: str | None
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    chains: int = 0
    events: int = 0
    unsigned_only_by_checkpoint: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, line: str) -> None:
        self.failures.append(line)
        self.lines.append(line)


def verify_store(engine: Engine, recorder: AggregateRecorder, keys: ChainKeys, directory: Path,
                 *, case_id: str | None = None) -> StoreReport:
    """Every chain's links and signatures (or one chain's), and against the latest checkpoint:
    each chain it lists still exists and reaches its sealed head with the same link hash, and
    unsigned links only where that checkpoint allows them. Needs no cipher key."""
    latest, problems = check_checkpoints(directory, keys)
    report = StoreReport(latest.name if latest is not None else None)
    for problem in problems:
        report.fail(f"checkpoints: {problem}")
    sealed = latest.chains if latest is not None else {}
    refs = _references(engine)
    with engine.connect() as conn:
        stored = {cid for (cid,) in conn.execute(select(schema.chain.c.case_id).distinct())}
    chains = sorted(stored | set(sealed))
    if case_id is not None:
        chains = [case_id] if case_id in stored or case_id in sealed else []
        if not chains:
            report.fail(f"{case_id}: no such chain in the store or in the latest checkpoint")
    verifier = ChainVerifier(engine, recorder, keys)
    for cid in chains:
        entry = sealed.get(cid)
        name = str(refs.get(cid) or (entry or {}).get("ref") or cid)
        chain, hashes = verifier.verify_links(cid, name)
        report.chains += 1
        report.events += chain.events
        if not chain.ok:
            report.fail(chain.describe())
            continue
        against = _against_checkpoint(chain, hashes, entry, latest)
        if against is not None:
            report.fail(f"{name}: {against}")
            continue
        line = chain.describe()
        if chain.unsigned:
            if latest is None:
                line += " (no checkpoint yet: the unsigned links are not protected)"
            else:
                report.unsigned_only_by_checkpoint += 1
        report.lines.append(line)
    if latest is None:
        report.lines.append("no checkpoint yet: deleted newest events and removed cases cannot be "
                            "detected until the first checkpoint is written")
    else:
        report.lines.append(f"checked against {latest.name} (sequence {latest.sequence}, "
                            f"{latest.doc['created_at']})")
    return report


def _against_checkpoint(chain: ChainReport, hashes: Mapping[int, str],
                        entry: Mapping[str, Any] | None, latest: Checkpoint | None) -> str | None:
    if latest is None:
        return None
    if entry is None:
        if chain.unsigned:
            return (f"audit chain broken at version 1: unsigned links in a chain that no "
                    f"checkpoint has seen (signatures removed?); latest is {latest.name}")
        return None
    sealed_version = int(entry["version"])
    if chain.events == 0 and not hashes:
        what = "the users log" if entry.get("ref") == USERS_LOG_NAME else "the case"
        return f"{what} was removed: {latest.name} sealed it at version {sealed_version}"
    if chain.events < sealed_version:
        return (f"audit chain broken at version {chain.events + 1}: events deleted, "
                f"{latest.name} sealed version {sealed_version} and the chain now ends at "
                f"version {chain.events}")
    if hashes.get(sealed_version) != entry["hash"]:
        return (f"audit chain broken at version {sealed_version}: the link differs from the one "
                f"{latest.name} sealed")
    allowed = (sealed_version if entry["signed_from"] is None else int(entry["signed_from"]) - 1)
    if chain.unsigned > allowed:
        return (f"audit chain broken at version {allowed + 1}: the link is unsigned but "
                f"{latest.name} allows unsigned links only up to version {allowed}")
    return None


class Checkpointer:
    """Writes checkpoints for a store (the worker: every interval, and after a case closes).
    A refusal or an unwritable directory is logged (chains and versions only, no personal data)
    and never fails the caller: the next verification reports what went wrong."""

    def __init__(self, engine: Engine, recorder: AggregateRecorder, signer: ChainSigner,
                 keys: ChainKeys, directory: Path) -> None:
        self.engine, self.recorder = engine, recorder
        self.signer, self.keys, self.directory = signer, keys, directory

    def write(self, why: str) -> Path | None:
        try:
            path = write_checkpoint(self.engine, self.recorder, self.signer, self.keys,
                                    self.directory)
        except CheckpointError as exc:
            _log.error("checkpoint (%s) not written: %s", why, exc)
            return None
        except OSError as exc:
            _log.error("checkpoint (%s) not written: directory %s: %s", why, self.directory,
                       type(exc).__name__)
            return None
        except Exception as exc:  # noqa: BLE001 - never fail the close that triggered it
            _log.error("checkpoint (%s) not written: %s", why, type(exc).__name__)
            return None
        _log.info("checkpoint %s written (%s)", path.name, why)
        return path

    def after_close(self, reference: str) -> None:
        self.write("a case closed")
