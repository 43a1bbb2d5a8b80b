"""Emergency funds for a case, for both doors: which funds of the directory fit it and why the
others do not, and the application text prepared for a fund that takes web forms.

Nothing here logs; values returned are for the staff member asking (the application text holds
names, as the case page does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from domain.funds import Fund, profile_from_intake, suggest_funds
from domain.vocab import Action

# A fund chosen for a case: to_send (the system mails it) | to_submit (staff, through the fund's
# form) | sent | submitted (domain.view).
CHOSEN_STATES = ("to_send", "to_submit", "sent", "submitted")


def fund_track(case: Any) -> Any:
    """The emergency-fund track of a case with tracks; None for older cases or when not proposed."""
    tracks = getattr(case, "tracks", None)
    return tracks.get(Action.EMERGENCY_FUND) if isinstance(tracks, Mapping) else None


def chosen_funds(case: Any) -> dict[str, str]:
    """Fund id -> its state, for the funds chosen for this case."""
    track = fund_track(case)
    return dict(track.funds) if track is not None else {}


def fund_advice(case: Any, directory: Sequence[Fund], settings: Any, today: date) -> dict[str, Any]:
    """Every fund of the directory for this case, suggested (best first) or excluded, each with
    its reasons: plain data for a table, a page or JSON. Works for cases of both workflow types."""
    actions: Mapping[str, Mapping[str, Any]] = getattr(case, "actions", {}) or {}
    refused = [a for a, s in actions.items() if s.get("consent") in ("refused", "withdrawn")]
    profile = profile_from_intake(case.intake, case.risk_level or case.urgency,
                                  verified=case.verifier is not None, refused=refused)
    chosen = chosen_funds(case)
    advice = suggest_funds(profile, directory, today,
                           already_chosen=[(f, profile.purpose) for f in chosen],
                           max_age_days=int(getattr(settings, "address_max_age_days", 365)),
                           live_sending=bool(getattr(settings, "live_sending", False)))
    by_id = {f.id: f for f in directory}
    track = fund_track(case)
    request = case.intake.get("fund_request") or {}
    return {
        "reference": case.reference,
        "requested": track is not None or Action.EMERGENCY_FUND in actions,
        "step": track.step if track is not None else None,
        "purpose": str(request.get("purpose") or ""),
        "amount_eur": request.get("amount_eur"),
        "chosen": [{"fund_id": f, "name": by_id[f].name if f in by_id else f, "state": state,
                    "channel": by_id[f].channel.value if f in by_id else "",
                    "form_url": by_id[f].form_url if f in by_id else ""}
                   for f, state in chosen.items()],
        "suggested": [{
            "fund_id": s.fund_id, "name": s.name, "reasons": list(s.reasons),
            "warnings": list(s.warnings), "channel": s.channel, "confirmed": s.confirmed,
            "capped_amount_eur": s.capped_amount, "stale": s.stale,
            "last_verified": s.last_verified.isoformat(), "turnaround": s.turnaround,
            "response_hours": s.response_hours,
            "form_url": by_id[s.fund_id].form_url if s.fund_id in by_id else "",
        } for s in advice.suggestions],
        # A chosen fund is listed under `chosen`, not as excluded for being chosen already.
        "excluded": [{"fund_id": e.fund_id, "name": e.name, "reasons": list(e.reasons)}
                     for e in advice.exclusions if e.fund_id not in chosen],
    }


def find_fund(directory: Sequence[Fund], fund_id: str) -> Fund | None:
    return next((f for f in directory if f.id == fund_id), None)


def fund_application(case: Any, fund: Fund, composer: Any = None) -> Any:
    """The application the system prepared for `fund` (activities.messages.Composer): what staff
    paste into a fund's own web form. Raises activities.messages.MessageError when it cannot be
    composed (no fund request, for instance); the message names no person."""
    if composer is None:
        from activities.messages import Composer
        composer = Composer()
    return composer.appeal(case, Action.EMERGENCY_FUND, fund=fund)
