"""`appeals case ...`: open cases, record decisions, list and show cases, emergency funds.

Each command parses its input, then asks the desk (desk.cases) in the name of the person signed in:
openings and decisions are signed for them and carry the command's idempotency key (repeated after
an unknown outcome, nothing is recorded twice).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import click

from cli.common import (
    BODY_CONTROL,
    BadInput,
    checked,
    choice,
    clean,
    emit_json,
    env_of,
    json_option,
    load_file,
    load_list,
    one_line,
    parse_when,
    request_id,
    request_option,
    run,
    table,
    text_option,
    when,
)
from domain.vocab import Action, Outcome, PublicNaming

# The domain's parsers and views, the desk and the workflow inputs are imported inside the
# commands that use them: `appeals case show` and `case list` answer without loading them.

ACTIONS = [a.value for a in Action]


# ====================================================================================== output
def pending_text(item: dict[str, Any]) -> str:
    text = str(item.get("decision", ""))
    if item.get("action"):
        text += f" {item['action']}"
    if item.get("fund"):
        text += f" fund {item['fund']}"
    roles = item.get("roles") or []
    if roles:
        text += f" ({'/'.join(roles)})"
    if item.get("not_by"):
        text += f" not by {item['not_by']}"
    if item.get("missing"):
        text += f" missing {', '.join(item['missing'])}"
    return clean(text)


def stage_text(status: dict[str, Any]) -> str:
    """The case's stage (its earliest track's step) and, with tracks, how many are at each step."""
    detail = status.get("stage_detail")
    return f"{status.get('stage')}" + (f" ({detail})" if detail else "")


def brief_status(status: dict[str, Any]) -> str:
    pending = ", ".join(pending_text(p) for p in status.get("pending") or []) or "nothing"
    return clean(f"{status.get('reference')}: stage {status.get('stage')}; pending: {pending}")


def track_notes(track: dict[str, Any]) -> str:
    """Why a track is where it is: held fields, funds, delivery retries, why it ended."""
    from domain.view import shown_track
    notes = []
    if track.get("ended"):
        notes.append(f"ended: {track['ended']}")
    held = shown_track(track)["held"]
    if held:
        notes.append(f"held: missing {', '.join(held)}")
    funds = track.get("funds") or {}
    if funds:
        notes.append("funds: " + ", ".join(f"{f} {state}" for f, state in funds.items()))
    delivery = track.get("delivery") or {}
    if delivery.get("retrying_since"):
        notes.append(f"retrying since {when(parse_when(delivery['retrying_since']))} "
                     f"({delivery.get('attempts', 0)} attempts, last error "
                     f"{delivery.get('last_error') or 'unknown'})")
    if track.get("failures"):
        notes.append(f"{track['failures']} failed")
    return "; ".join(notes)


def print_status(status: dict[str, Any]) -> None:
    from domain.view import shown_track
    risk = status.get("risk_level") or f"{status.get('urgency')} (urgency)"
    click.echo(clean(f"{status.get('reference')}  stage {stage_text(status)}  risk {risk}"))
    if status.get("deadline"):
        click.echo(clean(f"deadline  {when(parse_when(status['deadline']))} UTC  (escalation "
                         f"level {status.get('escalation_level', 0)})"))
    if status.get("verification_deadline"):
        click.echo(clean(f"verification deadline  "
                         f"{when(parse_when(status['verification_deadline']))} UTC"))
    if status.get("public_action_advised") is not None:
        click.echo("public action advised  " + ("yes" if status["public_action_advised"] else "no"))
    if status.get("next_checkin"):
        click.echo(clean(f"next check-in  {when(parse_when(status['next_checkin']))} UTC"))
    if status.get("outcome"):
        click.echo(clean(f"outcome  {status['outcome']}"))
    tracks = status.get("tracks")
    if tracks:
        click.echo("tracks:")
        closed = status.get("stage") == "closed"
        shown = {a: shown_track(t, closed=closed) for a, t in tracks.items()}
        rows = [[f"  {a}", t.get("step"), t.get("consent"), shown[a]["clearance"],
                 shown[a]["dispatch"], when(parse_when(t.get("deadline"))) or "-",
                 t.get("escalation_level", 0), track_notes(t)] for a, t in tracks.items()]
        table(rows, ["  action", "step", "consent", "clearance", "dispatch", "deadline (UTC)",
                     "level", "notes"])
    elif status.get("actions"):  # a case opened before per-action tracks
        click.echo("actions:")
        rows = [[f"  {a}", s.get("consent"), shown_track(s)["clearance"],
                 shown_track(s)["dispatch"]] for a, s in status["actions"].items()]
        table(rows, ["  action", "consent", "clearance", "dispatch"])
    pending = status.get("pending") or []
    click.echo("pending:" + ("" if pending else " nothing"))
    for item in pending:
        click.echo(f"  {pending_text(item)}")


def decided(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(status)
    else:
        click.echo(brief_status(status))


# ======================================================================================= group
@click.group()
def case() -> None:
    """Open cases, record decisions, list and show cases."""


@case.command("open")
@click.argument("file", metavar="FILE")
@request_option
@json_option
@click.pass_context
def case_open(ctx: click.Context, file: str, as_json: bool) -> None:
    """Open a case from an intake FILE (.json, .yaml or .yml); prints its reference.

    The reference is the file's `reference` field, or the next UA-<year>-<number>. The same
    command repeated (after an unknown outcome) answers with the case it opened.
    """
    from domain.intake import parse_intake
    from domain.intake import reference as check_reference
    env = env_of(ctx)
    data = load_file(file, "FILE")
    given = data.pop("reference", None)
    if given is not None:
        checked(lambda: check_reference(given))
    checked(lambda: parse_intake(data, today=datetime.now(UTC).date()))
    person = env.person()
    key = request_id(ctx, person.username, files=("file",))
    opened = run(env.desk.open_case(person, data, request_id=key, reference=given))
    if opened.repeated:
        click.echo(f"{opened.reference} was opened by this request before; nothing new was "
                   "opened.", err=True)
    if as_json:
        emit_json(opened.status)
    else:
        click.echo(opened.reference)


def decision(ctx: click.Context, ref: str, update: str, arg: Any, as_json: bool, *,
             files: Iterable[str] = (), tracks_only: str | None = None) -> None:
    """Send one decision; `tracks_only` names an option that only cases with per-action tracks
    understand (an older case is asked first, and the option refused rather than ignored)."""
    env = env_of(ctx)
    person = env.person()
    key = request_id(ctx, person.username, files=files)

    async def decide() -> dict[str, Any]:
        if tracks_only is not None and not (await env.desk.running_status(ref)).get("tracked"):
            raise BadInput(tracks_only, "this case was opened before per-action tracks and does "
                           "not take it")
        result: dict[str, Any] = await env.desk.decide(person, ref, update, arg, request_id=key)
        return result

    decided(run(decide()), as_json)


def me(ctx: click.Context) -> str:
    """The signed-in person's user name: the actor of every decision they send."""
    name: str = env_of(ctx).person().username
    return name


@case.command("verify")
@click.argument("ref", metavar="REF")
@click.argument("file", metavar="FILE")
@request_option
@json_option
@click.pass_context
def case_verify(ctx: click.Context, ref: str, file: str, as_json: bool) -> None:
    """Record the threat verification from FILE (.json, .yaml or .yml)."""
    from domain.intake import parse_verification
    from workflows.inputs import VerificationInput

    data = load_file(file, "FILE")
    checked(lambda: parse_verification(data))
    decision(ctx, ref, "record_verification", VerificationInput(me(ctx), data), as_json,
             files=("file",))


@case.command("consent")
@click.argument("ref", metavar="REF")
@click.argument("action", metavar="ACTION")
@click.option("--grant", "kind", flag_value="grant", help="The grantee consents to ACTION.")
@click.option("--refuse", "kind", flag_value="refuse", help="The grantee refuses ACTION.")
@click.option("--withdraw", "kind", flag_value="withdraw", help="The grantee withdraws consent.")
@click.option("--conditions", help="The grantee's conditions (with --grant).")
@click.option("--reason", help="Why (with --refuse or --withdraw).")
@click.option("--given-by", "given_by", metavar="WHO",
              help="Who consented, for every defender (with --grant): defender, relative or "
                   "lawyer. A disappeared defender, or one held incommunicado, cannot consent "
                   "personally.")
@click.option("--relationship", help="The relative's or lawyer's relationship to the defenders.")
@click.option("--channel", help="How consent was given: one of the consent channels "
              "(in_person, phone, video_call, secure_message, email, letter, through_grantee).")
@click.option("--given-at", "given_at", metavar="ISO-DATETIME",
              help="When consent was given, with a time zone (default: now).")
@click.option("--naming", help="How every defender may be named in public reports (with --grant): "
              + ", ".join(PublicNaming) + ".")
@click.option("--consents", "consents_file", metavar="FILE",
              help="One consent record per defender (.json, .yaml or .yml list of {defender, "
                   "given_by, relationship, channel, given_at}), instead of --given-by and the rest.")
@click.option("--publicity", "publicity", multiple=True, metavar="N=NAMING",
              help="Defender N's naming choice (repeat per person; overrides --naming for N).")
@request_option
@json_option
@click.pass_context
def case_consent(ctx: click.Context, ref: str, action: str, kind: str | None, conditions: str | None,
                 reason: str | None, given_by: str | None, relationship: str | None,
                 channel: str | None, given_at: str | None, naming: str | None,
                 consents_file: str | None, publicity: tuple[str, ...], as_json: bool) -> None:
    """Record the grantee's consent decision for one ACTION.

    With --grant, say who consented for each defender, how and when: --given-by, --relationship,
    --channel and --given-at for everyone at once, or --consents FILE with one record per defender.
    """
    from workflows.inputs import ConsentInput

    choice(action, ACTIONS, "ACTION")
    if kind is None:
        raise BadInput("--grant/--refuse/--withdraw", "choose one")
    detail = {"--given-by": given_by, "--relationship": relationship, "--channel": channel,
              "--given-at": given_at, "--consents": consents_file,
              "--publicity": publicity or None, "--naming": naming, "--conditions": conditions}
    if kind != "grant":
        for option, value in detail.items():
            if value is not None:
                raise BadInput(option, "goes with --grant")
        update = "refuse_consent" if kind == "refuse" else "withdraw_consent"
        decision(ctx, ref, update, ConsentInput(me(ctx), action, reason or ""), as_json)
        return
    if reason is not None:
        raise BadInput("--reason", "goes with --refuse or --withdraw; use --conditions with --grant")
    if consents_file is not None:
        for option in ("--given-by", "--relationship", "--channel", "--given-at"):
            if detail[option] is not None:
                raise BadInput(option, "give it in the --consents file instead")
    public_naming = choice(naming or PublicNaming.INITIALS_ONLY.value, PublicNaming, "--naming")
    choices = _publicity_options(publicity)
    records = load_list(consents_file, "--consents") if consents_file is not None else None
    when_given = _given_at(given_at)
    env = env_of(ctx)
    person = env.person()
    key = request_id(ctx, person.username, files=("consents_file",))

    async def grant() -> dict[str, Any]:
        status = await env.desk.running_status(ref)
        arg = ConsentInput(person.username, action, conditions or "", public_naming)
        if status.get("tracked"):
            people = len(status.get("represented") or [])
            arg.consents = records if records is not None else _same_for_everyone(
                people, given_by, relationship, channel, when_given)
            arg.publicity = {str(i): public_naming for i in range(people)} | choices
            _check_consent(status, arg)
        elif records is not None or given_by is not None or choices:
            option = ("--consents" if records is not None
                      else "--given-by" if given_by is not None else "--publicity")
            raise BadInput(option, "this case was opened before per-person consent records; "
                           "use --naming for everyone")
        result: dict[str, Any] = await env.desk.decide(person, ref, "grant_consent", arg,
                                                       request_id=key)
        return result

    decided(run(grant()), as_json)


def _publicity_options(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        person, sep, naming = value.partition("=")
        if not sep or not person.strip().isdigit():
            raise BadInput("--publicity", "write N=NAMING, e.g. 0=full_names (N counts defenders "
                           "from 0, in intake order)")
        out[str(int(person))] = choice(naming.strip(), PublicNaming, "--publicity")
    return out


def _given_at(value: str | None) -> str:
    if value is None:
        return datetime.now(UTC).isoformat(timespec="seconds")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput("--given-at", "must be an ISO date and time, e.g. 2026-11-03T09:30:00+03:00"
                       ) from None
    if at.tzinfo is None:
        raise BadInput("--given-at", "needs a time zone, e.g. 2026-11-03T09:30:00+03:00 or ...Z")
    return at.isoformat()


def _same_for_everyone(people: int, given_by: str | None, relationship: str | None,
                       channel: str | None, at: str) -> list[dict[str, Any]]:
    """One record per defender from the simple options (a case of several people whose consent
    came differently needs --consents FILE)."""
    from domain.rules import CONSENT_CHANNELS, GIVERS

    if given_by is None:
        raise BadInput("--given-by", "who consented? " + ", ".join(GIVERS)
                       + " (or give one record per defender with --consents FILE)")
    choice(given_by, GIVERS, "--given-by")
    if channel is None:
        raise BadInput("--channel", "how was consent given? " + ", ".join(CONSENT_CHANNELS))
    choice(channel, CONSENT_CHANNELS, "--channel")
    if given_by != "defender" and not (relationship or "").strip():
        raise BadInput("--relationship", f"is required when a {given_by} consents "
                       "(e.g. sister, their lawyer)")
    return [{"defender": i, "given_by": given_by, "relationship": relationship or "",
             "channel": channel, "given_at": at} for i in range(people)]


def _check_consent(status: dict[str, Any], arg: Any) -> None:
    """The workflow's own rule for consent records, applied before sending (exit 2 on bad input)."""
    from domain import rules
    from domain.view import CaseView

    view = CaseView.from_json(status)
    checked(lambda: rules.consent_records(view, arg.consents, arg.publicity, datetime.now(UTC)))


@case.command("clear")
@click.argument("ref", metavar="REF")
@click.argument("action", metavar="ACTION")
@click.option("--grant", "granted", flag_value=True, default=None, help="Clear ACTION.")
@click.option("--deny", "granted", flag_value=False, help="Deny clearance for ACTION.")
@click.option("--reason", default="", help="The ministry's reasoning.")
@request_option
@json_option
@click.pass_context
def case_clear(ctx: click.Context, ref: str, action: str, granted: bool | None, reason: str,
               as_json: bool) -> None:
    """Record the ministry's clearance decision for one ACTION."""
    from workflows.inputs import ClearanceInput

    choice(action, ACTIONS, "ACTION")
    if granted is None:
        raise BadInput("--grant/--deny", "choose one")
    decision(ctx, ref, "record_clearance", ClearanceInput(me(ctx), action, granted, reason),
             as_json)


@case.command("extend")
@click.argument("ref", metavar="REF")
@click.option("--until", "until", metavar="ISO-DATETIME",
              help="The new deadline, with a time zone (e.g. 2026-12-01T17:00:00+01:00).")
@click.option("--reason", help="Why the deadline moves (recorded).")
@click.option("--action", default="", metavar="ACTION",
              help="The action whose deadline moves (cases with per-action tracks); without it, "
                   "the verification deadline.")
@request_option
@json_option
@click.pass_context
def case_extend(ctx: click.Context, ref: str, until: str | None, reason: str | None, action: str,
                as_json: bool) -> None:
    """Move a deadline later (head of secretariat): an action's, or the verification's."""
    from workflows.inputs import ExtensionInput

    if not until:
        raise BadInput("--until", "is required")
    try:
        new_deadline = datetime.fromisoformat(until)
    except ValueError:
        raise BadInput("--until", "must be an ISO date and time, e.g. 2026-12-01T17:00:00+01:00") from None
    if new_deadline.tzinfo is None:
        raise BadInput("--until", "needs a time zone, e.g. 2026-12-01T17:00:00+01:00 or ...Z")
    text = text_option(reason, "--reason")
    if action:
        choice(action, ACTIONS, "--action")
    env = env_of(ctx)
    person = env.person()
    key = request_id(ctx, person.username)
    arg = ExtensionInput(person.username, new_deadline, text, action)

    async def extend() -> dict[str, Any]:
        status = await env.desk.running_status(ref)
        if not status.get("tracked"):
            if action:
                raise BadInput("--action", "this case was opened before per-action tracks: it "
                               "has one deadline; leave --action out")
        elif not action and not status.get("verification_deadline"):
            running = [a for a, t in (status.get("tracks") or {}).items() if t.get("deadline")]
            raise BadInput("--action", "the case is past its verification: name the action whose "
                           "deadline moves (" + (", ".join(running) or "none has a deadline")
                           + ")")
        result: dict[str, Any] = await env.desk.decide(person, ref, "extend_deadline", arg,
                                                       request_id=key)
        return result

    decided(run(extend()), as_json)


@case.command("respond")
@click.argument("ref", metavar="REF")
@click.argument("action", metavar="ACTION")
@click.option("--summary", help="What the recipient answered.")
@click.option("--recipient", default="", metavar="ADDRESS-OR-FUND",
              help="Which recipient of ACTION answered: one of its addresses, or a fund id.")
@request_option
@json_option
@click.pass_context
def case_respond(ctx: click.Context, ref: str, action: str, summary: str | None, recipient: str,
                 as_json: bool) -> None:
    """Record a recipient's response to the message sent for ACTION."""
    from workflows.inputs import ResponseInput

    choice(action, ACTIONS, "ACTION")
    text = text_option(summary, "--summary")
    decision(ctx, ref, "record_response", ResponseInput(me(ctx), action, text, recipient.strip()),
             as_json, tracks_only="--recipient" if recipient.strip() else None)


def risk_options(fn: Any) -> Any:
    """--probability, --impact and --risk-reason: a re-assessment of the risk (all three)."""
    fn = click.option("--risk-reason", "risk_reason", help="Why the risk is re-assessed.")(fn)
    fn = click.option("--impact", type=int, help="New impact, 1-5 (with --probability).")(fn)
    fn = click.option("--probability", type=int,
                      help="New probability, 1-5: re-assesses the risk (with --impact and "
                           "--risk-reason).")(fn)
    return fn


def reassessment_of(probability: int | None, impact: int | None,
                    risk_reason: str | None) -> dict[str, Any] | None:
    """The re-assessment the three options give, None when none is given; all three or none."""
    if probability is None and impact is None and not (risk_reason or "").strip():
        return None
    for value, name in ((probability, "--probability"), (impact, "--impact")):
        if value is None:
            raise BadInput(name, "is required to re-assess the risk (a whole number from 1 to 5)")
        if not 1 <= value <= 5:
            raise BadInput(name, "must be between 1 and 5")
    if not (risk_reason or "").strip():
        raise BadInput("--risk-reason", "is required: say why the risk is re-assessed")
    return {"probability": probability, "impact": impact, "reason": (risk_reason or "").strip()}


@case.command("inform")
@click.argument("ref", metavar="REF")
@click.option("--text", "information", help="The further information.")
@click.option("--send", is_flag=True, help="Also mail it to the earlier recipients of every "
              "action sent so far.")
@click.option("--send-to", "send_to", multiple=True, metavar="ACTION",
              help="Mail it to the earlier recipients of ACTION only (repeat for more actions).")
@click.option("--changes", metavar="FILE",
              help="Intake fields to complete or correct (.json, .yaml or .yml).")
@risk_options
@request_option
@json_option
@click.pass_context
def case_inform(ctx: click.Context, ref: str, information: str | None, send: bool,
                send_to: tuple[str, ...], changes: str | None, probability: int | None,
                impact: int | None, risk_reason: str | None, as_json: bool) -> None:
    """Add further information to a case (and send it on with --send or --send-to; re-assess
    the risk with it with --probability, --impact and --risk-reason)."""
    from desk.cases import informable_actions
    from domain.case import SUPPLEMENTABLE
    from domain.intake import check_known_fields
    from workflows.inputs import InformationInput

    text = text_option(information, "--text")
    again = reassessment_of(probability, impact, risk_reason)
    intake_changes = None
    if changes is not None:
        intake_changes = load_file(changes, "--changes")
        fixed = sorted(set(intake_changes) - SUPPLEMENTABLE)
        if fixed:
            raise BadInput("--changes", f"{one_line(fixed[0])[:40]} cannot be changed after intake "
                           f"(allowed: {', '.join(sorted(SUPPLEMENTABLE))})")
        changed = intake_changes
        checked(lambda: check_known_fields(changed))
    if send and send_to:
        raise BadInput("--send", "give either --send (every action sent so far) or --send-to")
    for action in send_to:
        choice(action, ACTIONS, "--send-to")
    env = env_of(ctx)
    person = env.person()
    key = request_id(ctx, person.username, files=("changes",))
    arg = InformationInput(person.username, text, send, intake_changes,
                           list(dict.fromkeys(send_to)) if send_to else None,
                           reassessment=again)

    async def inform() -> dict[str, Any]:
        if send_to:
            status = await env.desk.running_status(ref)
            if not status.get("tracked"):
                raise BadInput("--send-to", "this case was opened before per-action tracks: use "
                               "--send for every earlier recipient")
            informable = informable_actions(status)
            for action in arg.send_to or []:
                if action not in informable:
                    raise BadInput("--send-to", f"{action} has no earlier recipient who may be "
                                   "informed (" + (", ".join(sorted(informable)) or "none has") + ")")
        result: dict[str, Any] = await env.desk.decide(person, ref, "add_further_information",
                                                       arg, request_id=key)
        return result

    decided(run(inform()), as_json)


@case.command("checkin")
@click.argument("ref", metavar="REF")
@click.option("--summary", help="What the defender reported.")
@click.option("--reprisals", is_flag=True, help="The defender reports reprisals: the risk rises "
              "one level, the heads are alerted and messages to channels that may act in public "
              "wait for `appeals case confirm-public`.")
@risk_options
@request_option
@json_option
@click.pass_context
def case_checkin(ctx: click.Context, ref: str, summary: str | None, reprisals: bool,
                 probability: int | None, impact: int | None, risk_reason: str | None,
                 as_json: bool) -> None:
    """Record a check-in with the defenders (and re-assess the risk with it)."""
    from workflows.inputs import CheckinInput

    text = text_option(summary, "--summary")
    again = reassessment_of(probability, impact, risk_reason)
    decision(ctx, ref, "record_checkin", CheckinInput(me(ctx), text, reprisals,
                                                      reassessment=again), as_json)


@case.command("reassess")
@click.argument("ref", metavar="REF")
@risk_options
@request_option
@json_option
@click.pass_context
def case_reassess(ctx: click.Context, ref: str, probability: int | None, impact: int | None,
                  risk_reason: str | None, as_json: bool) -> None:
    """Re-assess the risk: probability x impact again, with the reason; the deadlines of what
    the case waits for follow the new level."""
    from workflows.inputs import ReassessInput

    again = reassessment_of(probability, impact, risk_reason)
    if again is None:
        raise BadInput("--probability", "is required (with --impact and --risk-reason)")
    decision(ctx, ref, "reassess_risk", ReassessInput(me(ctx), again["probability"],
                                                      again["impact"], again["reason"]), as_json)


@case.command("confirm-public")
@click.argument("ref", metavar="REF")
@click.option("--reason", help="Why public actions may go on after the reprisal (required).")
@request_option
@json_option
@click.pass_context
def case_confirm_public(ctx: click.Context, ref: str, reason: str | None, as_json: bool) -> None:
    """After a reprisal: confirm that messages to channels that may act in public may go on."""
    from workflows.inputs import ConfirmPublicInput

    text = text_option(reason, "--reason")
    decision(ctx, ref, "confirm_public_actions", ConfirmPublicInput(me(ctx), text), as_json)


@case.command("close")
@click.argument("ref", metavar="REF")
@click.option("--outcome", help="One of " + ", ".join(Outcome) + ".")
@click.option("--summary", default="", help="How the case ended (required).")
@request_option
@json_option
@click.pass_context
def case_close(ctx: click.Context, ref: str, outcome: str | None, summary: str, as_json: bool) -> None:
    """Close a case with an outcome."""
    from workflows.inputs import CloseInput

    if not outcome:
        raise BadInput("--outcome", "is required")
    choice(outcome, Outcome, "--outcome")
    if not summary.strip():
        raise BadInput("--summary", "is required: say in a sentence how the case ended")
    decision(ctx, ref, "close", CloseInput(me(ctx), outcome, summary), as_json)


# ============================================================================ emergency funds
def _known_funds(ctx: click.Context, funds: Iterable[str], field: str) -> list[Any]:
    from desk.errors import InvalidRequest

    desk = env_of(ctx).desk
    found = []
    for fund_id in funds:
        try:
            found.append(desk.find_fund(fund_id))
        except InvalidRequest as exc:
            raise BadInput(field, exc.reason) from None
    return found


@case.command("funds")
@click.argument("ref", metavar="REF")
@json_option
@click.pass_context
def case_funds(ctx: click.Context, ref: str, as_json: bool) -> None:
    """The emergency funds for a case: those suggested (best first) with why each fits, and those
    excluded with why not. Choose with `appeals case choose-funds`."""
    env = env_of(ctx)
    env.person()
    advice = env.desk.fund_advice(ref)
    if as_json:
        emit_json(advice)
        return
    request = (f"EUR {advice['amount_eur']:,} for {advice['purpose'] or 'no stated purpose'}"
               if isinstance(advice["amount_eur"], int) else "no fund request in the intake")
    step = f"; track step {advice['step']}" if advice["step"] else ""
    asked = "" if advice["requested"] else " (emergency_fund is not a proposed action)"
    click.echo(clean(f"{ref}: {request}{step}{asked}"))
    if advice["chosen"]:
        click.echo("chosen:")
        table([[f"  {c['fund_id']}", c["state"], c["channel"], c["form_url"]]
               for c in advice["chosen"]], ["  fund", "state", "channel", "form"])
    click.echo("suggested, best first:" + ("" if advice["suggested"] else " none"))
    if advice["suggested"]:
        table([[f"  {s['fund_id']}", s["channel"], "; ".join(s["reasons"])]
               for s in advice["suggested"]], ["  fund", "channel", "why it fits"])
        checks = [[f"  {s['fund_id']}", w] for s in advice["suggested"] for w in s["warnings"]]
        if checks:
            click.echo("check before applying:")
            table(checks, ["  fund", "check"])
    click.echo("excluded:" + ("" if advice["excluded"] else " none"))
    if advice["excluded"]:
        table([[f"  {e['fund_id']}", "; ".join(e["reasons"])] for e in advice["excluded"]],
              ["  fund", "why not"])


@case.command("choose-funds")
@click.argument("ref", metavar="REF")
@click.argument("funds", metavar="FUND...", nargs=-1, required=True)
@click.option("--reason", default="", help="Why these funds (recorded).")
@request_option
@json_option
@click.pass_context
def case_choose_funds(ctx: click.Context, ref: str, funds: tuple[str, ...], reason: str,
                      as_json: bool) -> None:
    """Choose the emergency fund(s) to apply to, among those `appeals case funds` suggests.

    A fund that takes e-mail gets the application from the system; for a fund that takes web
    forms, print the text with `appeals case fund-application` and record the submission with
    `appeals case fund-submitted`."""
    from workflows.inputs import FundChoiceInput

    _known_funds(ctx, funds, "FUND")
    decision(ctx, ref, "choose_funds", FundChoiceInput(me(ctx), list(funds), reason), as_json)


@case.command("fund-submitted")
@click.argument("ref", metavar="REF")
@click.argument("fund", metavar="FUND")
@click.option("--note", default="", help="A note on the submission (e.g. the fund's receipt number).")
@request_option
@json_option
@click.pass_context
def case_fund_submitted(ctx: click.Context, ref: str, fund: str, note: str, as_json: bool) -> None:
    """Record that staff submitted the application through FUND's own web form."""
    from workflows.inputs import FundSubmissionInput

    _known_funds(ctx, [fund], "FUND")
    decision(ctx, ref, "record_fund_submission", FundSubmissionInput(me(ctx), fund, note), as_json)


@case.command("fund-application")
@click.argument("ref", metavar="REF")
@click.argument("fund", metavar="FUND")
@json_option
@click.pass_context
def case_fund_application(ctx: click.Context, ref: str, fund: str, as_json: bool) -> None:
    """Print the application prepared for FUND, a fund chosen for the case: the text to paste
    into the fund's web form."""
    from desk.errors import Rejected

    env = env_of(ctx)
    env.person()
    _known_funds(ctx, [fund], "FUND")
    try:
        found = env.desk.fund_application(ref, fund)
    except Rejected as exc:
        if "choose it first" in exc.message:
            raise Rejected(f"Fund {fund} is not chosen for {ref}; choose it first with "
                           "`appeals case choose-funds`.") from None
        raise
    where = (f"the fund's web form at {found['form_url']}" if found["form_url"]
             else f"{found['address']} (the system sends it)")
    if as_json:
        emit_json(found)
        return
    click.echo(clean(f"Fund: {found['name']} ({found['fund_id']}, {found['state']})"))
    click.echo(clean(f"Apply through: {where}"))
    click.echo(clean(f"Subject: {found['subject']}"))
    click.echo("")
    click.echo(BODY_CONTROL.sub("?", found["text"].replace("\r\n", "\n")).rstrip("\n"))


# ====================================================================================== reads
@case.command("list")
@click.option("--stage", help="Only cases at this stage.")
@click.option("--risk", help="Only cases at this risk level (urgency before verification).")
@click.option("--overdue", is_flag=True, help="Only cases past their deadline.")
@click.option("--mine", is_flag=True, help="Only cases waiting for a decision of mine.")
@click.option("--held", is_flag=True, help="Only cases I hold (claimed by or assigned to me).")
@click.option("--search", metavar="TEXT",
              help="Only cases whose reference contains TEXT, or in the country with code TEXT.")
@click.option("--country", metavar="CODE", help="Only cases in this country (ISO code, e.g. KE).")
@click.option("--threat", metavar="TYPE", help="Only cases with this threat type.")
@click.option("--state", type=click.Choice(["open", "closed", "all"]), default="all",
              show_default=True, help="Open cases, closed cases or both.")
@click.option("--sort", type=click.Choice(["deadline", "opened", "reference"]),
              default="deadline", show_default=True,
              help="Soonest deadline first, newest opening first, or by reference.")
@json_option
@click.pass_context
def case_list(ctx: click.Context, stage: str | None, risk: str | None, overdue: bool, mine: bool,
              held: bool, search: str | None, country: str | None, threat: str | None,
              state: str, sort: str, as_json: bool) -> None:
    """List cases from the case index (the same filters as the web inbox's queue)."""
    from desk.queue import CaseQuery
    from domain.vocab import Stage, ThreatType, Urgency

    env = env_of(ctx)
    if stage is not None:
        choice(stage, Stage, "--stage")
    if risk is not None:
        choice(risk, Urgency, "--risk")
    if threat is not None:
        choice(threat, ThreatType, "--threat")
    if mine and held:
        raise BadInput("--held", "give --mine or --held, not both")
    person = env.person()
    query = CaseQuery(q=search, country=country, stage=stage, risk=risk, threat=threat,
                      overdue=overdue, mine="waiting" if mine else "held" if held else None,
                      state=state, sort=sort)
    rows = env.desk.cases(query, person, details=True)
    keys = ("reference", "stage", "stage_detail", "urgency", "risk_level", "country",
            "threat_types", "next_deadline", "overdue", "escalation_level", "assignee", "outcome",
            "opened_at", "updated_at")
    rows = [{k: r.get(k) for k in keys} for r in rows]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no cases")
        return
    table([[r["reference"], r["stage"], r["risk_level"] or r["urgency"], r["country"],
            when(r["next_deadline"]), "OVERDUE" if r["overdue"] else "", r["escalation_level"],
            r["assignee"]] for r in rows],
          ["reference", "stage", "risk", "country", "next deadline (UTC)", "", "level",
           "holder"])


def _recorded_directly(ctx: click.Context, as_json: bool,
                       call: Callable[[Any, Any, str], Awaitable[dict[str, Any]]],
                       said: Callable[[dict[str, Any]], str]) -> None:
    """A change the desk records on the case without a workflow step (claim, reassign,
    comment), as the signed-in person with this command's idempotency key; its summary as JSON,
    or one line."""
    env = env_of(ctx)
    person = env.person()
    summary = run(call(env.desk, person, request_id(ctx, person.username)))
    if as_json:
        emit_json(summary)
    else:
        click.echo(said(summary))


@case.command("comment")
@click.argument("ref", metavar="REF")
@click.option("--text", help="The comment (staff only; never sent anywhere).")
@request_option
@json_option
@click.pass_context
def case_comment(ctx: click.Context, ref: str, text: str | None, as_json: bool) -> None:
    """Add an internal comment to case REF (shown in its activity and trail; never sent)."""
    body = text_option(text, "--text")
    _recorded_directly(ctx, as_json, lambda desk, person, key: desk.comment(
        person, ref, body, request_id=key), lambda _: f"{ref}: comment added")


@case.command("claim")
@click.argument("ref", metavar="REF")
@request_option
@json_option
@click.pass_context
def case_claim(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Take case REF: you (a case officer) hold it from now on (recorded on the case)."""
    _recorded_directly(ctx, as_json, lambda desk, person, key: desk.claim(
        person, ref, request_id=key), lambda summary: f"{ref}: held by {summary['assignee']}")


@case.command("assign")
@click.argument("ref", metavar="REF")
@click.argument("user", metavar="USER")
@request_option
@json_option
@click.pass_context
def case_assign(ctx: click.Context, ref: str, user: str, as_json: bool) -> None:
    """Hand case REF to USER, an active case officer (a head, or the officer holding it)."""
    _recorded_directly(ctx, as_json, lambda desk, person, key: desk.reassign(
        person, ref, user, request_id=key), lambda summary: f"{ref}: held by {summary['assignee']}")


@case.command("show")
@click.argument("ref", metavar="REF")
@json_option
@click.pass_context
def case_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Where a case stands: stage, deadline, actions, pending decisions."""
    env = env_of(ctx)
    env.person()
    status = run(env.desk.status(ref))
    if as_json:
        emit_json(status)
    else:
        print_status(status)


@case.command("erase")
@click.argument("ref", metavar="REF")
@click.option("--reason-code", type=str, default=None,
              help="Why: retention-expired or erasure-request (asked with the first request).")
@click.option("--reason", type=str, default=None,
              help="A short reason, at most 200 characters and NO NAMES (first request).")
@json_option
@click.pass_context
def case_erase(ctx: click.Context, ref: str, reason_code: str | None, reason: str | None,
               as_json: bool) -> None:
    """Erase closed case REF's personal data (two heads; see docs/operations.md).

    The first head's command records the request (with --reason-code and --reason); the same
    command by a DIFFERENT head confirms it: the case's key is destroyed, so its events can no
    longer be read, and its Temporal history is deleted. The trail keeps who, when and why.
    Refused while the case is open or APPEALS_ERASURE_RETENTION_DAYS after its closing have not
    passed, and once it is erased.
    """
    from domain.erasure import MAX_TEXT, REASONS
    from domain.intake import reference as check_reference

    checked(lambda: check_reference(ref))
    if reason_code is not None:
        choice(reason_code, REASONS, "--reason-code")
    if reason is not None and (not reason.strip() or len(" ".join(reason.split())) > MAX_TEXT):
        raise BadInput("--reason", f"one short line of at most {MAX_TEXT} characters, no names")
    env = env_of(ctx)
    person = env.person()
    result = run(env.desk.erase(person, ref, reason_code=reason_code or "",
                                reason=reason or ""))
    if as_json:
        emit_json(result)
    elif result["state"] == "requested":
        click.echo(clean(f"{ref}: erasure requested by {result['requested_by']} "
                         f"({result['reason_code']}); another head must confirm it with "
                         f"`appeals case erase {ref}`"))
    else:
        click.echo(clean(f"{ref}: erased (asked by {result['requested_by']}, confirmed by "
                         f"{result['confirmed_by']}): its key is destroyed and its Temporal "
                         f"history deleted"))
