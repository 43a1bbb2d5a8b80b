"""Policies: plain functions of plain data, time passed in.

This module imports only the standard library so that workflow code may import it inside the
Temporal sandbox (deadlines are computed from `workflow.now()` there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from domain.vocab import Action, PublicNaming, Urgency

HOUR = 3600
DAY = 24 * HOUR

# Seconds per step and urgency / risk level (docs/design.md section 2.9). "dispatch" is the
# system's own step: if mail cannot go out by then, staff are told.
DEFAULT_DEADLINES: dict[str, dict[str, int]] = {
    "verification": {"critical": 4 * HOUR, "high": 24 * HOUR, "medium": 72 * HOUR, "low": 7 * DAY},
    "consent": {"critical": 12 * HOUR, "high": 48 * HOUR, "medium": 5 * DAY, "low": 10 * DAY},
    "clearance": {"critical": 12 * HOUR, "high": 48 * HOUR, "medium": 5 * DAY, "low": 10 * DAY},
    # Choosing the emergency fund(s) among the suggestions, once the fund request is consented.
    "fund_choice": {"critical": 4 * HOUR, "high": 12 * HOUR, "medium": 48 * HOUR, "low": 5 * DAY},
    "dispatch": {"critical": 1 * HOUR, "high": 4 * HOUR, "medium": 12 * HOUR, "low": 24 * HOUR},
    "follow_up": {"critical": 3 * DAY, "high": 7 * DAY, "medium": 14 * DAY, "low": 30 * DAY},
}

# Who is asked when a deadline is missed: level 1 the team's escalation contacts, level 2 the head,
# level 3 and above the head and the board contact (configured addresses per level).
MAX_ESCALATION_LEVEL = 3

# Actions that always need the ministry's clearance; the other two follow settings.
ALWAYS_CLEARED = frozenset({Action.MFA, Action.EU_DELEGATION})

EU_GRANT_CAP_EUR = 10_000


def deadline_table(overrides: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, dict[str, int]]:
    """The default table with any overrides (seconds) applied; unknown steps or levels are refused."""
    table = {step: dict(levels) for step, levels in DEFAULT_DEADLINES.items()}
    for step, levels in (overrides or {}).items():
        if step not in table:
            raise ValueError(f"deadline override: unknown step {step!r}")
        for level, seconds in levels.items():
            if level not in table[step]:
                raise ValueError(f"deadline override for {step}: unknown level {level!r}")
            if int(seconds) <= 0:
                raise ValueError(f"deadline override for {step}/{level}: must be positive")
            table[step][level] = int(seconds)
    return table


def step_duration(table: Mapping[str, Mapping[str, int]], stage: str, level: str) -> timedelta | None:
    """How long a stage may wait at this urgency or risk level; None for stages without a clock."""
    seconds = table.get(stage, {}).get(level)
    return None if seconds is None else timedelta(seconds=seconds)


def deadline_for(
    table: Mapping[str, Mapping[str, int]], stage: str, level: str, since: datetime
) -> datetime | None:
    """The deadline of a stage entered (or last escalated) at `since`.

    Each escalation starts the same step's clock again, so a second miss escalates one level up.
    """
    duration = step_duration(table, stage, level)
    return None if duration is None else since + duration


def risk_level(probability: int, impact: int) -> Urgency:
    """The risk matrix: probability times impact (each 1-5)."""
    for name, value in (("probability", probability), ("impact", impact)):
        if not 1 <= value <= 5:
            raise ValueError(f"{name} must be between 1 and 5")
    score = probability * impact
    if score >= 15:
        return Urgency.CRITICAL
    if score >= 10:
        return Urgency.HIGH
    if score >= 5:
        return Urgency.MEDIUM
    return Urgency.LOW


def clearance_required(
    actions: Iterable[str], *, rapporteur: bool = True, emergency_fund: bool = False
) -> list[str]:
    """Which of the proposed actions need ministry clearance under the current settings."""
    needs = set(ALWAYS_CLEARED)
    if rapporteur:
        needs.add(Action.RAPPORTEUR)
    if emergency_fund:
        needs.add(Action.EMERGENCY_FUND)
    return sorted(a for a in actions if a in needs)


# From the most open to the most protective: a person's profile is the most protective choice
# recorded for them, whichever action it was recorded with.
NAMING_ORDER = (PublicNaming.FULL_NAMES, PublicNaming.INITIALS_ONLY, PublicNaming.ANONYMOUS)


def most_restrictive(choices: Iterable[str | None]) -> str:
    """The most protective naming among `choices` (anonymous when nothing was chosen)."""
    ranks = [NAMING_ORDER.index(PublicNaming(c)) for c in choices if c in set(PublicNaming)]
    return str(NAMING_ORDER[max(ranks)]) if ranks else str(PublicNaming.ANONYMOUS)
