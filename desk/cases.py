"""What both doors (the `appeals` command line and the web interface) do with cases, written once.

A `Desk` acts for a signed-in `Person`: it opens cases (numbering their references), sends the
person's decisions to the case workflow signed for them (desk.signing), reads where a case stands,
its trail, its audit verification (store.audit) and the emergency funds that fit it. Every request
that changes something carries an idempotency key (desk.requests):

- a decision's key is its Temporal update id: repeated after an unknown outcome, Temporal answers
  with the first outcome and nothing is recorded twice;
- a case opening's key is bound to its reference in the store before the workflow is started; a
  repeated request finds the reference and starts the workflow only if it is not there yet.

Failures are the named errors of desk.errors; the doors turn them into exit codes or pages. No click
and no web framework here, and nothing logged: messages carry references, codes and staff usernames.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from desk.errors import (
    CaseNotFound,
    DeskError,
    InvalidRequest,
    NotAllowed,
    NotFound,
    Rejected,
    Unreachable,
)
from desk.funds import CHOSEN_STATES, chosen_funds, find_fund, fund_advice, fund_application
from desk.queue import CaseQuery, countdown
from domain.decisions import DECISIONS, HEAD, LIAISON, OFFICER
from domain.errors import CaseRuleError, InvalidInput
from workflows.inputs import TracksStart

if TYPE_CHECKING:
    from temporalio.client import Client

    from domain.funds import Fund
    from store.app import CaseStore, TrailEntry
    from store.index import IndexReader

T = TypeVar("T")

COMMENTERS = (OFFICER, LIAISON, HEAD)  # who may add an internal comment to a case

RPC_SECONDS = 60.0  # how long a decision or query waits for a worker to answer
OPEN_SECONDS = 30.0  # how long an opening waits for the workflow to report the case opened
REFERENCE_PREFIX = "UA"
MEMO_KEY = "appeals_request"  # the opening request's key, on the workflow (to recognise it)
MAX_REFERENCE_TRIES = 1000
REPEAT_WAIT_ROUNDS = 50  # 0.2 s each: how long a repeated opening follows its first attempt
_REF_NUMBER = re.compile(r"^UA-(\d{4})-(\d{4,6})$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
# The case workflows' status query (workflows.case and workflows.tracks: `status`), by name.
STATUS_QUERY = "status"
# RPC statuses that mean the answer did not come back (the request may or may not have arrived).
_LOST = frozenset({"UNAVAILABLE", "UNKNOWN", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED",
                   "RESOURCE_EXHAUSTED", "INTERNAL"})

DEFAULT_CHECKIN_SECONDS: int = TracksStart("", {}, "").checkin_interval_seconds
# The person a request is being signed for (user name, roles): what desk.signing reads.
_ACTING: ContextVar[tuple[str, list[str]] | None] = ContextVar("appeals_acting", default=None)


@dataclass(frozen=True)
class Person:
    """The signed-in person a door acts for (its session proved who they are)."""

    username: str


@dataclass(frozen=True)
class Opened:
    reference: str
    status: dict[str, Any]
    repeated: bool  # this request had opened (or begun to open) the case before


# ------------------------------------------------------------------------- starting a case
def checkin_interval_seconds(settings: Any) -> int:
    """The settings' check-in interval (APPEALS_CHECKIN_INTERVAL, e.g. `14d`), else the workflow's
    default."""
    value = getattr(settings, "checkin_interval_seconds", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return DEFAULT_CHECKIN_SECONDS


def tracks_start(reference: str, intake: dict[str, Any], actor: str, settings: Any) -> TracksStart:
    """The start input of a new case (workflow type UrgentCaseTracks)."""
    return TracksStart(reference, intake, actor,
                       checkin_interval_seconds=checkin_interval_seconds(settings))


def informable_actions(status: Mapping[str, Any]) -> list[str]:
    """The actions whose earlier recipients may receive further information: a message went to
    them by e-mail and consent is still in force (an application submitted through a fund's web
    form has nobody to mail)."""
    return [a for a, t in (status.get("tracks") or {}).items()
            if t.get("dispatch") == "sent" and t.get("consent") == "granted" and t.get("recipients")]


def signing_client(client: Client, key: bytes,
                   identity: Callable[[Any], tuple[str, list[str]] | None]) -> Client:
    """The same connection, with every case opening and decision signed (desk.signing) for the
    person `identity` names for an input; an input it names nobody for goes unsigned, and the
    worker refuses it."""
    from temporalio.client import Client as TemporalClient

    from desk.signing import DecisionSigner

    config = client.config()
    config["interceptors"] = [*config["interceptors"], DecisionSigner(key, identity)]
    return TemporalClient(**config)


def _acting_identity(arg: Any) -> tuple[str, list[str]] | None:
    """Who signs this input: the person the desk is acting for, and only for their own name."""
    acting = _ACTING.get()
    if acting is None or getattr(arg, "actor", None) != acting[0]:
        return None
    return acting[0], list(acting[1])


def next_reference(taken: set[str], year: int) -> str:
    """The next UA-<year>-<number> after the highest of `taken` in that year."""
    numbers = [int(m.group(2)) for ref in taken
               if (m := _REF_NUMBER.match(ref)) and int(m.group(1)) == year]
    return f"{REFERENCE_PREFIX}-{year}-{max(numbers, default=0) + 1:04d}"


def decision_name(update: str | Callable[..., Any]) -> str:
    """The update name of a workflow update method (or the name itself)."""
    if isinstance(update, str):
        return update
    definition = getattr(update, "__temporal_update_definition", None)
    name = getattr(definition, "name", None)
    return str(name or getattr(update, "__name__", "decision"))


# ------------------------------------------------------------- why a race loser was refused
# Decision -> the events that would have decided it already, and what they recorded.
_RECORDED: dict[str, tuple[tuple[str, ...], str]] = {
    "grant_consent": (("ConsentGranted", "ConsentRefused", "ConsentWithdrawn"),
                      "Consent for {action}"),
    "refuse_consent": (("ConsentGranted", "ConsentRefused", "ConsentWithdrawn"),
                       "Consent for {action}"),
    "record_clearance": (("ClearanceGranted", "ClearanceDenied"), "Clearance for {action}"),
    "record_verification": (("VerificationRecorded",), "The verification"),
    "choose_funds": (("FundsChosen",), "The emergency fund choice"),
    "record_fund_submission": (("FundApplicationSubmitted",), "The application to {fund}"),
}
_OUTCOME = {"ConsentGranted": "granted", "ConsentRefused": "refused",
            "ConsentWithdrawn": "withdrawn", "ClearanceGranted": "granted",
            "ClearanceDenied": "denied"}


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def already_recorded(decision: str, arg: Any, message: str,
                     trail: Sequence[TrailEntry]) -> str | None:
    """For a decision the workflow refused because it was decided already (another person won
    the race): what was recorded, by whom and when; None when the trail does not say."""
    if message.startswith("This case is closed") or decision == "close":
        closed = [e for e in trail if e.event == "Closed"]
        if closed:
            last = closed[-1]
            return (f"This case was closed by {last.actor} at {_when(last.at)}; it can be read "
                    "but not changed.")
        return None
    if decision not in _RECORDED or not re.search(r"already|not waiting", message):
        return None
    events, what = _RECORDED[decision]
    action, fund = getattr(arg, "action", None), getattr(arg, "fund", None)
    for entry in reversed(trail):
        if entry.event not in events:
            continue
        if action and entry.details.get("action") not in (None, action):
            continue
        if fund and entry.details.get("fund") not in (None, fund):
            continue
        outcome = _OUTCOME.get(entry.event)
        text = what.format(action=action or "", fund=fund or "")
        return (f"{text} was already recorded by {entry.actor} at {_when(entry.at)}"
                + (f" ({outcome})" if outcome else "") + "; nothing new was recorded.")
    return None


# ================================================================================== the desk
class Desk:
    """The case operations of both doors, for the person each call names.

    `client`: a Temporal client from worker.main.connect (unsigned: the desk signs what it sends),
    or a coroutine function returning one (connected on first use). `store`: the event store, or a
    function returning it (opened on first use); `index`: the case index's reader (store.index)
    when the door has its own, else the store's: listing cases and showing a running case then
    never open the event store."""

    def __init__(self, settings: Any, store: CaseStore | Callable[[], CaseStore],
                 client: Client | Callable[[], Awaitable[Client]], *,
                 index: IndexReader | None = None,
                 funds: list[Fund] | None = None,
                 clock: Callable[[], datetime] | None = None,
                 answer_seconds: float = RPC_SECONDS, open_seconds: float = OPEN_SECONDS) -> None:
        self.settings = settings
        self._store_source = store
        self._store: CaseStore | None = None
        self._index = index
        self._source = client
        self._client: Client | None = None
        self._signing: Client | None = None
        self._funds = funds
        self.clock = clock or (lambda: datetime.now(UTC))
        self.answer_seconds = answer_seconds
        self.open_seconds = open_seconds

    # ------------------------------------------------------------------------ connections
    @property
    def store(self) -> CaseStore:
        if self._store is None:
            source = self._store_source
            self._store = source() if callable(source) else source
        return self._store

    @property
    def index(self) -> IndexReader:
        """The case index's reads (and nothing that needs events)."""
        return self._index if self._index is not None else self.store.index

    async def client(self) -> Client:
        """The plain client (reads)."""
        if self._client is None:
            from temporalio.client import Client as TemporalClient

            source = self._source
            self._client = source if isinstance(source, TemporalClient) else await source()
        return self._client

    async def signing(self) -> Client:
        """The client that signs openings and decisions for the person being acted for."""
        if self._signing is None:
            from worker.keys import KeyMaterialError
            try:
                key = self.settings.decision_signing_key()
            except KeyMaterialError as exc:
                raise InvalidRequest("settings", " ".join(str(exc).split())) from None
            self._signing = signing_client(await self.client(), key, _acting_identity)
        return self._signing

    def temporal_down(self, *, may_have_taken_effect: bool = False) -> Unreachable:
        return Unreachable(f"Temporal server not reachable at {self.settings.temporal_address} "
                           "— is `make run` running?", may_have_taken_effect=may_have_taken_effect)

    def no_worker(self, seconds: float, *, may_have_taken_effect: bool = False) -> Unreachable:
        return Unreachable(f"no worker answered on task queue {self.settings.task_queue} within "
                           f"{seconds:.0f} s — is `make run` running?",
                           may_have_taken_effect=may_have_taken_effect)

    async def answered(self, what: Awaitable[T], seconds: float | None = None, *,
                       may_have_taken_effect: bool = False) -> T:
        """Wait for an answer; none in time means no worker answered (or Temporal is down)."""
        from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

        seconds = self.answer_seconds if seconds is None else seconds
        try:
            return await asyncio.wait_for(what, seconds)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise self.no_worker(seconds, may_have_taken_effect=may_have_taken_effect) from None
        except Exception as exc:
            status = rpc_status(exc)
            if status in ("DEADLINE_EXCEEDED", "CANCELLED"):
                raise self.no_worker(seconds, may_have_taken_effect=may_have_taken_effect) from None
            if status in _LOST:
                raise self.temporal_down(may_have_taken_effect=may_have_taken_effect) from None
            raise

    # ----------------------------------------------------------------------------- people
    async def roles(self, person: Person) -> list[str]:
        roles = sorted(await asyncio.to_thread(self.store.user_roles, person.username))
        if not roles:
            raise NotAllowed(f"User {person.username} is not an active user of the registry; "
                             "nothing was recorded.")
        return roles

    # -------------------------------------------------------------------------- open a case
    async def open_case(self, person: Person, intake: dict[str, Any], *, request_id: str,
                        reference: str | None = None) -> Opened:
        """Open a case (workflow UrgentCaseTracks) from a raw intake, under `reference` or the
        next UA-<year>-<number>; wait until the worker has opened it. Repeated with the same
        `request_id`, it answers with the same case and opens nothing new."""
        _check_request_id(request_id)
        if reference is not None:
            from domain.intake import reference as check_reference
            _checked(lambda: check_reference(reference))
        from domain.intake import parse_intake
        _checked(lambda: parse_intake(intake, today=self.clock().date()))
        roles = await self.roles(person)
        if OFFICER not in roles:
            raise NotAllowed("Only a case officer may open a case; nothing was recorded.")
        client = await self.signing()
        held: set[str] = set()  # references another request's workflow holds in Temporal
        waited = 0  # rounds spent waiting for a concurrent attempt of this request to move on
        for _ in range(MAX_REFERENCE_TRIES):
            ref, repeated = await asyncio.to_thread(self._reserve, person, request_id, reference,
                                                    held)
            if await self._start(client, ref, intake, person, roles, request_id):
                break
            # Another door's case holds this reference in Temporal: this request never started it.
            if reference is not None:
                raise InvalidRequest("reference", f"a case {ref} already exists")
            if repeated:
                # Bound by an attempt of this same request (a double click) that will find the
                # reference taken too and bind the next one: wait for it, then follow it.
                waited += 1
                if waited > REPEAT_WAIT_ROUNDS:
                    raise InvalidRequest("reference", f"a case {ref} already exists")
                await asyncio.sleep(0.2)
                continue
            held.add(ref)
            await asyncio.to_thread(self.store.release_reference, request_id)
        else:
            raise Rejected("No free case reference was found; give one in the intake's "
                           "`reference` field.")
        status = await self._wait_opened(ref)
        return Opened(ref, status, repeated)

    def _reserve(self, person: Person, request_id: str, given: str | None,
                 held: set[str]) -> tuple[str, bool]:
        """The reference this request opens (bound in the store), and whether it was bound
        before (a repeated request)."""
        from store.app import CaseAlreadyExists

        bound = self.store.reserved_reference(request_id)
        if bound is not None:
            return bound, True
        now = self.clock()
        if given is not None:
            try:
                return self.store.reserve_reference(request_id, given, person.username, now), False
            except CaseAlreadyExists:
                raise InvalidRequest("reference", f"a case {given} already exists") from None
        taken = {row["reference"] for row in self.index.list_cases()}
        taken |= self.store.reserved_references() | held
        for _ in range(MAX_REFERENCE_TRIES):
            candidate = next_reference(taken, now.year)
            try:
                ref = self.store.reserve_reference(request_id, candidate, person.username, now)
                return ref, ref != candidate
            except CaseAlreadyExists:
                taken.add(candidate)
        raise Rejected("No free case reference was found; give one in the intake's `reference` "
                       "field.")

    async def _start(self, client: Client, ref: str, intake: dict[str, Any], person: Person,
                     roles: list[str], request_id: str) -> bool:
        """Start the case's workflow; True when it runs for this request (started now or by an
        earlier attempt of it), False when another request's workflow holds the reference."""
        from temporalio.common import WorkflowIDReusePolicy
        from temporalio.exceptions import WorkflowAlreadyStartedError

        from workflows.tracks import TrackedCaseWorkflow

        token = _ACTING.set((person.username, roles))
        try:
            await client.start_workflow(
                TrackedCaseWorkflow.run, tracks_start(ref, intake, person.username, self.settings),
                id=ref, task_queue=self.settings.task_queue, memo={MEMO_KEY: request_id},
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
            return True
        except WorkflowAlreadyStartedError:
            return await self._started_by(ref, request_id)
        except Exception as exc:
            if rpc_status(exc) in _LOST:
                raise self.temporal_down(may_have_taken_effect=True) from None
            raise
        finally:
            _ACTING.reset(token)

    async def _started_by(self, ref: str, request_id: str) -> bool:
        client = await self.client()
        try:
            description = await client.get_workflow_handle(ref).describe()
        except Exception as exc:
            if rpc_status(exc) in _LOST:
                raise self.temporal_down(may_have_taken_effect=True) from None
            raise
        return bool(await self._memo(description) == request_id)

    async def _memo(self, description: Any) -> Any:
        """The opening request's key on a workflow; None when there is none or it is not ours to
        read (a payload under another key: another deployment sharing the namespace)."""
        payload = description.raw_description.workflow_execution_info.memo.fields.get(MEMO_KEY)
        if payload is None:
            return None
        converter = (await self.client()).data_converter
        try:
            codec = converter.payload_codec
            if codec is not None:
                strict = getattr(codec, "decode_strict", None)  # worker.codec: refuses silently
                payload = (await strict([payload]) if strict is not None
                           else await codec.decode([payload]))[0]
            return converter.payload_converter.from_payloads([payload])[0]
        except Exception:  # noqa: BLE001 - unreadable: not this request's
            return None

    async def _wait_opened(self, ref: str) -> dict[str, Any]:
        from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

        from workflows.tracks import TrackedCaseWorkflow as WF

        client = await self.client()
        handle = client.get_workflow_handle(ref)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.open_seconds
        not_opened = Unreachable(
            f"case {ref} was started, but no worker on task queue {self.settings.task_queue} "
            f"has opened it within {self.open_seconds:.0f} s — is `make run` running?",
            may_have_taken_effect=True)
        while loop.time() < end:
            try:
                status: dict[str, Any] = await self.answered(
                    handle.query(WF.status), max(1.0, end - loop.time()),
                    may_have_taken_effect=True)
            except Unreachable as exc:
                if "no worker" in exc.message:
                    raise not_opened from None
                raise
            if status.get("stage") != "intake":
                return status
            description = await self.answered(handle.describe(), may_have_taken_effect=True)
            if description.status != WorkflowExecutionStatus.RUNNING:
                try:
                    await handle.result()
                except WorkflowFailureError as exc:
                    raise Rejected(_one_line(getattr(exc.cause, "message", "")
                                             or "the case could not be opened")) from None
            await asyncio.sleep(0.2)
        raise not_opened

    # ---------------------------------------------------------------------------- decide
    async def decide(self, person: Person, reference: str, decision: str | Callable[..., Any],
                     arg: Any, *, request_id: str) -> dict[str, Any]:
        """Send one decision (a workflow update, by name) in the person's name, signed for them,
        with `request_id` as its update id; the case's status after it. A repeated request id
        answers with the first outcome and records nothing new."""
        _check_request_id(request_id)
        name = decision_name(decision)
        if getattr(arg, "actor", None) != person.username:
            raise NotAllowed(f"A decision is recorded in the name of the person signed in "
                             f"({person.username}) only; nothing was recorded.")
        if name == "close" and not str(getattr(arg, "summary", "") or "").strip():
            # Closing ends the follow-up for good: never without saying how the case ended.
            raise InvalidRequest("summary", "is required: say in a sentence how the case ended")
        roles = await self.roles(person)
        spec = DECISIONS.get(name)
        if spec is not None and not set(roles) & set(spec.roles):
            needed = " or ".join(r.replace("_", " ") for r in spec.roles)
            raise NotAllowed(f"Only a {needed} may {spec.label[0].lower()}{spec.label[1:]}; "
                             "nothing was recorded.")
        from temporalio.client import WorkflowUpdateFailedError
        from temporalio.exceptions import ApplicationError

        client = await self.signing()
        handle = client.get_workflow_handle(reference)
        token = _ACTING.set((person.username, roles))
        try:
            result: dict[str, Any] = await self.answered(
                handle.execute_update(name, arg, id=request_id), may_have_taken_effect=True)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            if "expected but not found" in message:  # an update the older workflow type lacks
                raise Rejected("This case was opened before per-action tracks; it does not take "
                               f"{name}.") from None
            raise Rejected(await self._explained(reference, name, arg, message)) from None
        except Exception as exc:
            await self._not_running(reference, exc, may_have_taken_effect=True)
            raise
        finally:
            _ACTING.reset(token)
        return result

    async def _explained(self, reference: str, decision: str, arg: Any, message: str) -> str:
        """The workflow's sentence; for a race lost to someone else, what they recorded."""
        try:
            trail = await asyncio.to_thread(self.store.trail, reference)
        except Exception:  # noqa: BLE001 - the workflow's own sentence is still the answer
            return _one_line(message)
        return already_recorded(decision, arg, message, trail) or _one_line(message)

    async def _not_running(self, reference: str, exc: BaseException, *,
                           may_have_taken_effect: bool = False) -> None:
        """Map a failed call to a case workflow: a closed or unknown case, or Temporal down."""
        status = rpc_status(exc)
        if status == "NOT_FOUND":
            if await asyncio.to_thread(self._stored, reference):
                trail = await asyncio.to_thread(self.store.trail, reference)
                closed = already_recorded("close", None, "This case is closed", trail)
                raise Rejected(closed or "This case is closed; it can be read but not "
                               "changed.") from None
            raise CaseNotFound(reference) from None
        if status in _LOST:
            raise self.temporal_down(may_have_taken_effect=may_have_taken_effect) from None

    def _stored(self, reference: str) -> bool:
        return any(row["reference"] == reference for row in self.index.list_cases())

    # ------------------------------------------------------------------------------ reads
    async def running_status(self, reference: str) -> dict[str, Any]:
        """The status query of a running case (for a door that builds a decision from it)."""
        from workflows.tracks import TrackedCaseWorkflow as WF

        client = await self.client()
        try:
            status: dict[str, Any] = await self.answered(
                client.get_workflow_handle(reference).query(WF.status))
        except Exception as exc:
            await self._not_running(reference, exc)
            raise
        return status

    async def status(self, reference: str) -> dict[str, Any]:
        """Where a case stands: the workflow's status while it runs, else the store's last state
        (closed, or its history gone), with nothing pending."""
        from temporalio.client import WorkflowExecutionStatus

        client = await self.client()
        handle = client.get_workflow_handle(reference)
        try:
            description = await handle.describe()
        except Exception as exc:
            status = rpc_status(exc)
            if status in _LOST:
                raise self.temporal_down() from None
            if status != "NOT_FOUND":
                raise
            description = None
        if description is not None and description.status == WorkflowExecutionStatus.RUNNING:
            # By name: importing the workflow module for its query costs more than the query.
            result: dict[str, Any] = await self.answered(handle.query(STATUS_QUERY))
            return result
        case = await asyncio.to_thread(self.stored_case, reference)
        summary: dict[str, Any] = case.summary()
        summary.pop("verifier", None)
        summary["pending"] = []
        return summary

    def stored_case(self, reference: str) -> Any:
        from store.app import CaseErased, CaseUnreadable
        from store.app import CaseNotFound as StoredCaseNotFound
        try:
            return self.store.get(reference)
        except (StoredCaseNotFound, InvalidInput):
            raise CaseNotFound(reference) from None
        except (CaseErased, CaseUnreadable) as exc:
            raise Rejected(_one_line(str(exc))) from None

    def trail(self, reference: str) -> list[TrailEntry]:
        from store.app import CaseNotFound as StoredCaseNotFound
        from store.app import CaseUnreadable
        try:
            return self.store.trail(reference)
        except (StoredCaseNotFound, InvalidInput):
            raise CaseNotFound(reference) from None
        except CaseUnreadable as exc:
            raise Rejected(_one_line(str(exc))) from None

    def case_page(self, query: CaseQuery, person: Person, page: int,
                  size: int) -> tuple[list[dict[str, Any]], int]:
        """One page (from 1) of `size` rows of the case list, with details, and how many cases
        the whole list holds: paged and counted by the database, "waiting for me" too (the
        store's waiting condition; those rows also have `waiting`)."""
        query = query.checked()
        now = self.clock()
        filters = _filters(query, now)
        if query.mine == "waiting":
            rows, total = self.store.pending_page(person.username, now, sort=query.sort,
                                                  details=True, limit=size,
                                                  offset=(page - 1) * size, **filters)
            for row in rows:
                row["countdown"] = countdown(row["next_deadline"], now)
            return rows, total
        filters["assignee"] = person.username if query.mine == "held" else None
        total = self.index.count_cases(**filters)
        rows = self.index.list_cases(**filters, sort=query.sort, details=True, limit=size,
                                     offset=(page - 1) * size)
        for row in rows:
            row["overdue"] = bool(row["next_deadline"] and row["next_deadline"] < now)
            row["countdown"] = countdown(row["next_deadline"], now)
        return rows, total

    def cases(self, query: CaseQuery | None = None, person: Person | None = None, *,
              details: bool = False) -> list[dict[str, Any]]:
        """The case list (desk.queue): the store's case index filtered and sorted as `query`
        says (checked first). `mine` needs the `person`: "held" lists the cases they hold,
        "waiting" the cases waiting for a decision of theirs (each row then has `waiting`).
        `details`: rows also carry `threat_types`, `stage_detail` and `countdown`."""
        query = (query or CaseQuery()).checked()
        if query.mine and person is None:
            raise InvalidRequest("mine", "nobody is signed in")
        now = self.clock()
        filters = _filters(query, now)
        if person is not None and query.mine == "waiting":
            rows = self.store.pending_for(person.username, now, sort=query.sort, details=details,
                                          **filters)
        else:
            rows = self.index.list_cases(
                **filters, sort=query.sort, details=details,
                assignee=person.username if person and query.mine == "held" else None)
        for row in rows:
            row["overdue"] = bool(row["next_deadline"] and row["next_deadline"] < now)
            if details:
                row["countdown"] = countdown(row["next_deadline"], now)
        return rows

    def officers(self) -> list[str]:
        """The active case officers (who may hold a case), by username."""
        return [u["username"] for u in self.store.list_users()
                if u["active"] and OFFICER in u["roles"]]

    # ------------------------------------------------------------------- who holds a case
    async def claim(self, person: Person, reference: str, *, request_id: str) -> dict[str, Any]:
        """The person (an active case officer) takes the case: event CaseClaimed, recorded on the
        case directly (no workflow step changes). Closed cases and cases opened before
        per-action tracks are refused. The case's summary after it."""
        _check_request_id(request_id)
        prior = await asyncio.to_thread(self.store.prior_result, request_id)
        if prior is not None:
            return prior
        roles = await self.roles(person)
        if OFFICER not in roles:
            raise NotAllowed("Only a case officer may hold a case; nothing was recorded.")
        return await asyncio.to_thread(self._direct, person, reference, "claim", {}, request_id)

    async def reassign(self, person: Person, reference: str, holder: str, *,
                       request_id: str) -> dict[str, Any]:
        """A head, or the case officer holding the case, hands it to another active case
        officer: event CaseReassigned. The case's summary after it."""
        _check_request_id(request_id)
        prior = await asyncio.to_thread(self.store.prior_result, request_id)
        if prior is not None:
            return prior
        roles = await self.roles(person)
        holder = (holder or "").strip()
        if not holder:
            raise InvalidRequest("case officer", "name the case officer who is to hold the case")
        case = await asyncio.to_thread(self.stored_case, reference)
        if HEAD not in roles and getattr(case, "assignee", None) != person.username:
            raise NotAllowed("Only a head or the case officer holding the case may hand it to "
                             "another; nothing was recorded.")
        if OFFICER not in await asyncio.to_thread(self.store.user_roles, holder):
            raise InvalidRequest("case officer", f"{_one_line(holder)[:60]} is not an active "
                                 "case officer")
        return await asyncio.to_thread(self._direct, person, reference, "reassign",
                                       {"holder": holder}, request_id)

    async def comment(self, person: Person, reference: str, text: str, *,
                      request_id: str) -> dict[str, Any]:
        """An internal comment on the case (event CommentAdded) by a case officer, a ministry
        liaison or a head: sent to nobody, shown in the case's activity; closed cases take
        comments too. The case's summary after it."""
        _check_request_id(request_id)
        prior = await asyncio.to_thread(self.store.prior_result, request_id)
        if prior is not None:
            return prior
        roles = await self.roles(person)
        if not set(roles) & set(COMMENTERS):
            raise NotAllowed("Only a case officer, a ministry liaison or a head may comment on a "
                             "case; nothing was recorded.")
        return await asyncio.to_thread(self._direct, person, reference, "comment",
                                       {"text": text}, request_id)

    def _direct(self, person: Person, reference: str, command: str, args: dict[str, Any],
                request_id: str) -> dict[str, Any]:
        """Record a command on the case directly (no workflow step: claim, reassign, comment)."""
        from domain.tracked import TrackedCase
        from store.app import ConcurrentWriteError

        case = self.stored_case(reference)
        if not isinstance(case, TrackedCase):
            raise Rejected("This case was opened before per-action tracks; it cannot be claimed, "
                           "reassigned or commented on.")
        try:
            result: dict[str, Any] = self.store.execute(
                reference, command, {**args, "at": self.clock()}, person.username, request_id)
        except InvalidInput as exc:
            raise InvalidRequest(exc.field, exc.reason) from None
        except CaseRuleError as exc:
            raise Rejected(exc.message) from None
        except ConcurrentWriteError as exc:
            raise Rejected(str(exc)) from None
        return result

    async def verify(self, reference: str) -> dict[str, Any]:
        """The audit chain and the cross-check of Temporal's history against the store
        (store.audit): `ok`, `chain`, `history`."""
        from store.app import CaseNotFound as StoredCaseNotFound
        from store.audit import verify_case

        erased = await asyncio.to_thread(self._erased_report, reference)
        if erased is not None:
            return erased
        client = await self.client()
        try:
            return await verify_case(self.store, client, reference,
                                     checkpoint_dir=self.settings.checkpoint_dir)
        except (StoredCaseNotFound, InvalidInput):
            raise CaseNotFound(reference) from None
        except Exception as exc:
            if rpc_status(exc) in _LOST:
                raise self.temporal_down() from None
            raise

    # --------------------------------------------------------------------------- erasure
    async def erase(self, person: Person, reference: str, *, reason_code: str = "",
                    reason: str = "") -> dict[str, Any]:
        """Erase a closed case's personal data, by two heads (store.app.CaseStore.erase): the
        first head's call records the request (reason code and a short text without names), a
        different head's call confirms it: the case's key is destroyed and its Temporal history
        deleted. Returns the erasure record with `state` ("requested" or "erased") and, once
        erased, `temporal_runs_deleted`."""
        from store.app import CaseNotFound as StoredCaseNotFound
        from store.app import ErasureRefused

        roles = await self.roles(person)
        if HEAD not in roles:
            raise NotAllowed("Only a head may ask for or confirm the erasure of a case; nothing "
                             "was done.")
        retention = getattr(self.settings, "erasure_retention_days", None)
        retention = retention if isinstance(retention, int) else 365
        try:
            outcome = await asyncio.to_thread(
                lambda: self.store.erase(reference, actor=person.username, at=self.clock(),
                                         retention_days=retention, reason_code=reason_code,
                                         reason=reason))
        except (StoredCaseNotFound, InvalidInput):
            raise CaseNotFound(reference) from None
        except ErasureRefused as exc:
            raise Rejected(_one_line(str(exc))) from None
        result: dict[str, Any] = {**outcome.record, "state": outcome.state}
        if outcome.state != "erased":
            return result
        try:
            result["temporal_runs_deleted"] = await self._delete_history(reference)
        except Exception as exc:
            if rpc_status(exc) in _LOST or isinstance(exc, Unreachable):
                raise Unreachable(
                    f"{reference} is erased (its key is destroyed) but Temporal did not answer, "
                    f"so its history was not deleted: delete it with `temporal workflow delete "
                    f"--workflow-id {reference}` once the server is back") from None
            raise
        return result

    async def _delete_history(self, reference: str) -> int:
        """Delete every run of the case's workflow (its id is the reference) from Temporal;
        Temporal removes them in the background. How many runs were asked to be deleted."""
        from temporalio.api.common.v1 import WorkflowExecution
        from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

        client = await self.client()
        runs = {wf.run_id async for wf in client.list_workflows(f"WorkflowId = '{reference}'")}
        runs.add("")  # the latest run, should the visibility store lag behind
        deleted = 0
        for run_id in sorted(runs, reverse=True):
            try:
                await client.workflow_service.delete_workflow_execution(
                    DeleteWorkflowExecutionRequest(
                        namespace=client.namespace,
                        workflow_execution=WorkflowExecution(workflow_id=reference,
                                                             run_id=run_id)))
                deleted += 1 if run_id else 0
            except Exception as exc:
                if rpc_status(exc) != "NOT_FOUND":
                    raise
        return deleted

    def _erased_report(self, reference: str) -> dict[str, Any] | None:
        """For an erased case: its chain (over the ciphertext, which stays) and, instead of the
        cross-check with Temporal, the erasure that deleted its history. None otherwise."""
        from domain.case import case_id

        try:
            cid = str(case_id(reference))
        except InvalidInput:
            raise CaseNotFound(reference) from None
        if self.store.keys.state(cid) != "destroyed":
            return None
        record = self.store.erasure(reference)
        report = self.store.verify(reference)
        chain = {"ok": bool(report.ok), "events": report.events,
                 "broken_version": report.broken_version, "reason": report.reason,
                 "text": report.describe()}
        who = (f" (asked by {record.requested_by}, confirmed by {record.confirmed_by} on "
               f"{_when(record.confirmed_at)})" if record is not None
               and record.confirmed_at is not None else "")
        history = {"ok": True, "erased": True,
                   "text": f"{reference}: erased{who}; its Temporal history was deleted with it, "
                           "so there is nothing to cross-check"}
        return {"reference": reference, "ok": chain["ok"], "chain": chain, "history": history}

    # ------------------------------------------------------------------- emergency funds
    def funds(self) -> list[Fund]:
        if self._funds is None:
            from activities.directories import DirectoryFileError, load_fund_directory
            try:
                self._funds = load_fund_directory()
            except DirectoryFileError as exc:
                raise DeskError(f"fund directory: {_one_line(str(exc))}") from None
        return self._funds

    def find_fund(self, fund_id: str) -> Fund:
        directory = self.funds()
        fund = find_fund(directory, fund_id)
        if fund is None:
            raise InvalidRequest("fund", f"{_one_line(fund_id)[:40]} is not in the fund "
                                 f"directory ({', '.join(f.id for f in directory)})")
        return fund

    def fund_advice(self, reference: str, today: date | None = None) -> dict[str, Any]:
        """Every fund of the directory for the case, suggested (best first, with why) or
        excluded (with why not); see desk.funds.fund_advice."""
        case = self.stored_case(reference)
        return fund_advice(case, self.funds(), self.settings, today or self.clock().date())

    def fund_application(self, reference: str, fund_id: str) -> dict[str, Any]:
        """The application prepared for a fund chosen for the case: what staff paste into the
        fund's web form (subject and text; it holds names, as the case page does)."""
        from activities.messages import MessageError

        fund = self.find_fund(fund_id)
        case = self.stored_case(reference)
        if getattr(case, "tracks", None) is None:
            raise Rejected("This case was opened before per-action tracks; its fund application "
                           "is chosen and sent by the system.")
        state = chosen_funds(case).get(fund_id)
        if state not in CHOSEN_STATES:
            raise Rejected(f"Fund {fund_id} is not chosen for {reference}; choose it first.")
        try:
            composed = fund_application(case, fund)
        except MessageError as exc:
            raise Rejected(_one_line(str(exc))) from None
        return {"reference": reference, "fund_id": fund.id, "name": fund.name, "state": state,
                "channel": fund.channel.value, "form_url": fund.form_url,
                "address": fund.address, "subject": composed.subject, "text": composed.text}


# ==================================================================================== helpers
def rpc_status(exc: BaseException) -> str:
    """The gRPC status name of a Temporal RPC error ("" for anything else)."""
    from temporalio.service import RPCError
    return exc.status.name if isinstance(exc, RPCError) else ""


def _filters(query: CaseQuery, now: datetime) -> dict[str, Any]:
    """The store's list filters for a checked query (without `mine`)."""
    return dict(stage=query.stage, risk=query.risk, overdue_at=now if query.overdue else None,
                country=query.country, search=query.q, threat=query.threat,
                state=None if query.state == "all" else query.state)


def _check_request_id(request_id: str) -> None:
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise InvalidRequest("request_id", "every request needs an idempotency key (letters, "
                             "digits and . _ : -, at most 200)")


def _checked(parse: Callable[[], Any]) -> None:
    """Run a domain check; its rule errors are an invalid request naming the field."""
    try:
        parse()
    except InvalidInput as exc:
        raise InvalidRequest(exc.field, exc.reason) from None
    except CaseRuleError as exc:
        field, sep, reason = exc.message.partition(": ")
        if sep and " " not in field:
            raise InvalidRequest(field, reason) from None
        raise InvalidRequest("intake", exc.message) from None


def _one_line(text: str) -> str:
    return " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", str(text)).split())


__all__ = ["CHOSEN_STATES", "Desk", "NotFound", "Opened", "Person", "already_recorded",
           "checkin_interval_seconds", "informable_actions", "next_reference", "signing_client",
           "tracks_start"]
