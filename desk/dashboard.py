"""The head's dashboard (issue 14): where the open cases stand, what falls due, what escalated and
which actions wait longest for the ministry's clearance. One page, computed on each load from the
index tables by SQL aggregates (fast with 10,000 cases), references and codes only.

- open cases by stage and risk (the risk level once verified, the urgency before): the case index;
- deadlines due in the next 24 hours and 7 days (and overdue): the index's next deadline, with the
  soonest cases listed;
- escalations this week (the last 7 days): the audit chain's DeadlineEscalated rows (the time the
  event was stored), by case;
- actions waiting for clearance: the track index (`waiting_for = record_clearance`), waiting since
  the consent that sent them there (from the case's events, through the report facts cache),
  longest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from desk.errors import NotAllowed
from store import schema

DASHBOARD_ROLES = frozenset({"head"})
LIST_LIMIT = 15
STAGES = ("verification", "consent", "clearance", "dispatch", "follow_up")
RISKS = ("critical", "high", "medium", "low")


@dataclass
class Dashboard:
    now: datetime
    by_stage_risk: dict[str, dict[str, int]] = field(default_factory=dict)
    open_total: int = 0
    overdue: int = 0
    due_24h: int = 0
    due_7d: int = 0
    due_soon: list[dict[str, Any]] = field(default_factory=list)
    escalations: int = 0
    escalated_cases: list[dict[str, Any]] = field(default_factory=list)
    waiting_clearance: list[dict[str, Any]] = field(default_factory=list)


def require_head(store: Any, username: str) -> None:
    if not store.user_roles(username) & DASHBOARD_ROLES:
        raise NotAllowed("Only a head may see the dashboard.")


def build_dashboard(store: Any, now: datetime, *, with_waiting_since: bool = True) -> Dashboard:
    idx, tr, ch = schema.case_index, schema.track_index, schema.chain
    d = Dashboard(now)
    risk = func.coalesce(idx.c.risk_level, idx.c.urgency)
    open_ = idx.c.stage != "closed"
    week = now - timedelta(days=7)
    with store.engine.connect() as conn:
        for stage, level, n in conn.execute(
                select(idx.c.stage, risk, func.count()).where(open_).group_by(idx.c.stage, risk)):
            d.by_stage_risk.setdefault(stage, {})[level] = int(n)
            d.open_total += int(n)

        def count(*where: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(idx).where(open_, *where))
                       .scalar() or 0)

        d.overdue = count(idx.c.next_deadline < now)
        d.due_24h = count(idx.c.next_deadline >= now, idx.c.next_deadline < now + timedelta(hours=24))
        d.due_7d = count(idx.c.next_deadline >= now, idx.c.next_deadline < now + timedelta(days=7))
        d.due_soon = [
            {"reference": r.reference, "stage": r.stage, "risk": r.risk,
             "deadline": schema.utc(r.next_deadline),
             "overdue": schema.utc(r.next_deadline) < now,  # type: ignore[operator]
             "assignee": r.assignee}
            for r in conn.execute(
                select(idx.c.reference, idx.c.stage, risk.label("risk"), idx.c.next_deadline,
                       idx.c.assignee)
                .where(open_, idx.c.next_deadline.is_not(None),
                       idx.c.next_deadline < now + timedelta(days=7))
                .order_by(idx.c.next_deadline, idx.c.reference).limit(LIST_LIMIT))]
        escalated = conn.execute(
            select(ch.c.case_id, func.count(), func.max(ch.c.recorded_at))
            .where(ch.c.event_name == "DeadlineEscalated", ch.c.recorded_at >= week)
            .group_by(ch.c.case_id)).all()
        d.escalations = sum(int(n) for _, n, _ in escalated)
        ids = {case_id: (int(n), schema.utc(last)) for case_id, n, last in escalated}
        if ids:
            top = sorted(ids.items(), key=lambda kv: kv[1][1] or now, reverse=True)[:LIST_LIMIT]
            refs = dict(conn.execute(select(idx.c.case_id, idx.c.reference)
                                     .where(idx.c.case_id.in_([k for k, _ in top]))).all())
            levels = dict(conn.execute(select(idx.c.case_id, idx.c.escalation_level)
                                       .where(idx.c.case_id.in_([k for k, _ in top]))).all())
            d.escalated_cases = [{"reference": refs.get(k, "?"), "escalations": n, "last": last,
                                  "level": levels.get(k, 0)} for k, (n, last) in top]
        waiting = conn.execute(
            select(tr.c.reference, tr.c.action, tr.c.deadline, tr.c.escalation_level)
            .where(tr.c.waiting_for == "record_clearance")).all()
    since: dict[tuple[str, str], datetime] = {}
    if waiting and with_waiting_since:
        from desk.reports import FactsCache
        facts = FactsCache(store).all({r.reference for r in waiting})
        for reference, f in facts.items():
            for channel, decision, at in f["decisions"]:
                if decision == "consented":
                    since[(reference, channel)] = datetime.fromisoformat(at)
    rows = [{"reference": r.reference, "action": r.action, "deadline": schema.utc(r.deadline),
             "escalation_level": r.escalation_level,
             "since": since.get((r.reference, r.action))} for r in waiting]
    rows.sort(key=lambda r: (r["since"] is None, r["since"] or now, r["reference"]))
    for r in rows:
        r["waiting"] = (now - r["since"]) if r["since"] else None
    d.waiting_clearance = rows[:LIST_LIMIT]
    return d


def dashboard_for(store: Any, username: str, now: datetime) -> Dashboard:
    require_head(store, username)
    return build_dashboard(store, now)
