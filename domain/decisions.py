"""Who may decide what: one table read by the workflow, the inbox, the web forms and the CLI.

Each decision is a workflow update of the same name (except `grant_or_refuse_consent`, which is
the pair grant_consent / refuse_consent). `step` is the track step (or case stage) at which it is
awaited; `events` are what recording it may write. Standard library only (workflow sandbox).
"""

from __future__ import annotations

from dataclasses import dataclass

OFFICER, LIAISON, HEAD = "case_officer", "ministry_liaison", "head"


@dataclass(frozen=True)
class Decision:
    name: str
    roles: tuple[str, ...]
    label: str
    step: str  # where it is awaited: a track step, a case stage, or "any"
    events: tuple[str, ...]
    per_action: bool = False


DECISIONS: dict[str, Decision] = {d.name: d for d in (
    Decision("record_verification", (OFFICER,), "Record the verification", "verification",
             ("VerificationRecorded", "Closed")),
    Decision("grant_consent", (OFFICER,), "Record consent", "consent", ("ConsentGranted",),
             per_action=True),
    Decision("refuse_consent", (OFFICER,), "Record a refusal", "consent", ("ConsentRefused",),
             per_action=True),
    Decision("withdraw_consent", (OFFICER,), "Withdraw consent", "any", ("ConsentWithdrawn",),
             per_action=True),
    Decision("record_clearance", (LIAISON,), "Clear or deny", "clearance",
             ("ClearanceGranted", "ClearanceDenied"), per_action=True),
    Decision("choose_funds", (OFFICER,), "Choose the emergency fund(s)", "fund_choice",
             ("FundsChosen",)),
    Decision("record_fund_submission", (OFFICER,), "Record an application made through a "
             "fund's form", "dispatch", ("FundApplicationSubmitted",)),
    Decision("extend_deadline", (HEAD,), "Extend a deadline", "any", ("DeadlineExtended",)),
    Decision("record_response", (OFFICER,), "Record a response", "follow_up",
             ("ResponseRecorded",), per_action=True),
    Decision("add_further_information", (OFFICER,), "Add further information", "any",
             ("FurtherInformationAdded", "MessageDispatched")),
    Decision("record_checkin", (OFFICER,), "Record a check-in with the defenders", "any",
             ("DefenderCheckInRecorded",)),
    Decision("close", (OFFICER, HEAD), "Close the case", "any", ("Closed",)),
    Decision("reassess_risk", (OFFICER,), "Re-assess the risk", "any", ("RiskReassessed",)),
    Decision("confirm_public_actions", (OFFICER,), "Confirm that public actions may go on",
             "any", ("PublicActionsResumed",)),
)}


def roles_for(name: str) -> list[str]:
    return list(DECISIONS[name].roles)


# The decisions a case *waits* for, by their name in the workflow's pending list, with the label
# staff read in the email that tells them (workflows.tracks, "waiting notices"). Left out: what
# may always be done (extend a deadline, add information, record a response or a check-in) and a
# message held for missing fields (its own notice goes to the case officer when it is held).
# `close` counts only once no action is left to move: then the case waits for nothing else.
WAITING_NOTICES: dict[str, str] = {
    "record_verification": DECISIONS["record_verification"].label,
    "grant_or_refuse_consent": "Record consent or a refusal",
    "record_clearance": DECISIONS["record_clearance"].label,
    "choose_funds": DECISIONS["choose_funds"].label,
    "record_fund_submission": DECISIONS["record_fund_submission"].label,
    "close": DECISIONS["close"].label,
}


def pending_label(name: str) -> str:
    """The label of a decision by its name in a pending list (which has two combined names)."""
    if name in WAITING_NOTICES:
        return WAITING_NOTICES[name]
    if name == "record_response_or_checkin":
        return "Record a response or a check-in"
    return DECISIONS[name].label
