"""The small family of errors the domain raises.

Every message is written for a case officer and names only stages, actions and fields: never a
defender's name or incident text, because messages travel into logs and Temporal histories.
"""

from __future__ import annotations


class CaseRuleError(Exception):
    """A command that the secretariat's rules do not allow; nothing was recorded."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class InvalidInput(CaseRuleError):
    """A field of an intake or a decision is missing or malformed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StageOrderError(CaseRuleError):
    """A decision arrived at a stage where it does not belong (no stage skipped or repeated)."""


class UnknownAction(CaseRuleError):
    """The action is not one of those proposed for this case."""


class ActionAlreadyDecided(CaseRuleError):
    """Consent or clearance for this action has already been recorded."""


class ConsentMissing(CaseRuleError):
    """No message may go out for an action whose consent is not granted (or was withdrawn)."""


class ClearanceMissing(CaseRuleError):
    """The action needs ministry clearance before it may be sent."""


class FourEyesViolation(CaseRuleError):
    """The person who verified the threat cannot also clear it."""


class GrantAmountExceeded(CaseRuleError):
    """An EU emergency grant request is capped at EUR 10,000."""


class AlreadyDispatched(CaseRuleError):
    """The message for this action has been sent; its consent can no longer be withdrawn."""


class DeadlineNotLater(CaseRuleError):
    """An extension must move the deadline later."""


class EscalationOutOfOrder(CaseRuleError):
    """Escalation levels go up one at a time, for the current stage."""


class CaseClosed(CaseRuleError):
    """Nothing but reads after a case is closed."""


class FundChoiceRefused(CaseRuleError):
    """The emergency fund(s) chosen for a request cannot be used: unknown, excluded for this case,
    a second fund for the same purpose, or not confirmed by staff while live sending is on."""


class UnconfirmedAddress(CaseRuleError):
    """With live sending on, only addresses that staff confirmed (address book `confirmed`) are
    used; the message names roles, mandates and countries, never the addresses."""
