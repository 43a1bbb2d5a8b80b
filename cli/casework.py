"""Moved to the desk (`desk.cases`, `desk.funds`): what both doors do with cases. These names stay
importable from here until the web interface imports them from the desk."""

from __future__ import annotations

from desk.cases import (
    DEFAULT_CHECKIN_SECONDS,
    checkin_interval_seconds,
    informable_actions,
    signing_client,
    tracks_start,
)
from desk.funds import (
    CHOSEN_STATES,
    chosen_funds,
    find_fund,
    fund_advice,
    fund_application,
    fund_track,
)

__all__ = ["CHOSEN_STATES", "DEFAULT_CHECKIN_SECONDS", "checkin_interval_seconds", "chosen_funds",
           "find_fund", "fund_advice", "fund_application", "fund_track", "informable_actions",
           "signing_client", "tracks_start"]
