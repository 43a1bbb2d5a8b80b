"""What waits for a person: the decisions on open cases that are theirs to make.

The rules are written twice, on purpose: as one SQL condition over the case index and the track
index (`condition`), so that a "waiting for me" list is found, ordered, paged and counted by the
database however many cases a person holds; and in Python (`decisions`), which names what each
shown row waits for. tests/test_waiting.py checks that the two agree on generated rows, on SQLite
and on PostgreSQL.

The rules (domain.decisions says who may make each decision):

- a closed case waits for nobody;
- a case at stage "verification" waits for its verification only;
- any other case with per-action tracks waits for what its tracks wait for
  (`appeals_track_index.waiting_for`); a case opened before per-action tracks (no track rows) for
  its stage's decision (`LEGACY`);
- a decision is the person's when their roles include one of its roles, when it is not the
  clearance of a case they verified (four eyes), and, for the decisions of case officers, when
  they hold the case;
- a head is also waited for by every escalated case (escalation level 2 or more): "escalated".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, or_, select, true

from domain.decisions import DECISIONS, HEAD, OFFICER
from store import schema

# The decision a case opened before per-action tracks waits for, by its stage.
LEGACY: dict[str, str] = {"verification": "record_verification", "consent": "grant_consent",
                          "clearance": "record_clearance", "follow_up": "record_response"}
# Not the verifier's to decide (four eyes).
FOUR_EYES = "record_clearance"
# What a head is waited for by on an escalated case, and from which level.
ESCALATED, ESCALATED_FROM = "escalated", 2
_CHUNK = 500  # references per IN (...): below every database's parameter limit


# ----------------------------------------------------------------------------------- Python
def decisions(row: Mapping[str, Any], track_waits: set[str] | None, username: str,
              roles: Collection[str]) -> list[str]:
    """The names of what this case index row waits for from this person (sorted; "escalated"
    last), given what its tracks wait for (`track_waits`; None for a case without tracks)."""
    stage = row["stage"]
    if stage == "closed":
        return []
    if track_waits is None:
        waiting = {LEGACY[stage]} if stage in LEGACY else set()
    elif stage == "verification":
        waiting = {"record_verification"}
    else:
        waiting = track_waits
    mine = sorted(d for d in waiting if d in DECISIONS
                  and set(DECISIONS[d].roles) & set(roles)
                  and (d != FOUR_EYES or row["verifier"] != username)
                  and (OFFICER not in DECISIONS[d].roles or row["assignee"] == username))
    if HEAD in roles and row["escalation_level"] >= ESCALATED_FROM:
        mine.append(ESCALATED)
    return mine


def track_waits(conn: Connection, references: Sequence[str]) -> dict[str, set[str]]:
    """What the tracks of these cases wait for (a case without tracks: absent; a case whose
    tracks wait for nothing: an empty set)."""
    t = schema.track_index
    out: dict[str, set[str]] = {}
    for start in range(0, len(references), _CHUNK):
        chunk = list(references[start:start + _CHUNK])
        for reference, decision in conn.execute(
                select(t.c.reference, t.c.waiting_for).where(t.c.reference.in_(chunk))):
            out.setdefault(reference, set())
            if decision:
                out[reference].add(decision)
    return out


# -------------------------------------------------------------------------------------- SQL
def condition(username: str, roles: Collection[str]) -> ColumnElement[bool] | None:
    """The SQL condition, over `appeals_case_index`, that something waits for this person on a
    case (None when nothing can: no role that decides anything)."""
    idx = schema.case_index
    theirs = {d: _theirs(d, username, roles) for d in DECISIONS}
    parts: list[ColumnElement[bool]] = []
    verification = theirs["record_verification"]
    if verification is not None:
        parts.append(and_(idx.c.stage == "verification", verification))
    # Past the verification, with tracks: what a track waits for. Decisions with the same
    # condition share one EXISTS.
    groups: dict[tuple[bool, bool], list[str]] = {}
    for name, cond in theirs.items():
        if cond is not None:
            groups.setdefault(_kind(name), []).append(name)
    if groups:
        parts.append(and_(idx.c.stage != "verification", or_(*(
            and_(_track_waits_for(names), _condition_of(kind, username))
            for kind, names in sorted(groups.items())))))
    # Without tracks (opened before per-action tracks): the stage's decision.
    legacy = [and_(idx.c.stage == stage, cond) for stage, name in LEGACY.items()
              if stage != "verification" and (cond := theirs[name]) is not None]
    if legacy:
        parts.append(and_(~_has_tracks(), or_(*legacy)))
    if HEAD in roles:
        parts.append(idx.c.escalation_level >= ESCALATED_FROM)
    if not parts:
        return None
    return and_(idx.c.stage != "closed", or_(*parts))


def _kind(name: str) -> tuple[bool, bool]:
    """What a decision's condition depends on: (held by the person, four eyes)."""
    return OFFICER in DECISIONS[name].roles, name == FOUR_EYES


def _theirs(name: str, username: str, roles: Collection[str]) -> ColumnElement[bool] | None:
    """The condition on a case for this decision to be the person's (None: never, by role)."""
    if not set(DECISIONS[name].roles) & set(roles):
        return None
    return _condition_of(_kind(name), username)


def _condition_of(kind: tuple[bool, bool], username: str) -> ColumnElement[bool]:
    idx = schema.case_index
    held, four_eyes = kind
    conds: list[ColumnElement[bool]] = []
    if held:
        conds.append(idx.c.assignee == username)
    if four_eyes:  # a case without a verifier (NULL) is nobody's verification
        conds.append(or_(idx.c.verifier.is_(None), idx.c.verifier != username))
    return and_(*conds) if conds else true()


def _track_waits_for(names: Sequence[str]) -> ColumnElement[bool]:
    idx, t = schema.case_index, schema.track_index
    return exists().where(t.c.reference == idx.c.reference, t.c.waiting_for.in_(sorted(names)))


def _has_tracks() -> ColumnElement[bool]:
    idx, t = schema.case_index, schema.track_index
    return exists().where(t.c.reference == idx.c.reference)

