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
)}


def roles_for(name: str) -> list[str]:
    return list(DECISIONS[name].roles)
