"""The content of every outgoing message (activities/messages.py and templates/messages/).

Golden files in tests/golden/ hold every message kind for the five cases of tests/message_cases.py;
regenerate them with APPEALS_UPDATE_GOLDEN=1 and read the diff before committing. The other tests
check what must (and must never) be in each kind, whatever the wording.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from markupsafe import escape

from activities.directories import load_fund_directory
from activities.messages import Composed, Composer, MessageError, initials
from domain.case import Case, new_case
from domain.funds import Fund
from domain.intake import parse_intake, parse_verification
from domain.policies import clearance_required, deadline_table
from domain.readiness import missing_fields
from domain.routing import Mandate
from tests.message_cases import (
    CASES,
    ESCALATION_DEADLINE,
    ESCALATION_NOW,
    REMINDER_DUE,
    SIGNATORY_NAME,
    SIGNATORY_ORGANISATION,
    T0,
    T1,
    T2,
    TODAY,
    MessageCase,
    awaited,
)
from tests.message_cases import composer as configured_composer

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("APPEALS_UPDATE_GOLDEN") == "1"
SUBJECT_RE = re.compile(
    r"^URGENT APPEAL – (?:SR|WG|IE) [^–,]+(?:, (?:SR|WG|IE) [^–,]+)* – [^–]+ – UA-\d{4}-\d{4}$"
)


@pytest.fixture(scope="module")
def composer() -> Composer:
    return configured_composer()


@pytest.fixture(scope="module")
def funds() -> dict[str, Fund]:
    return {f.id: f for f in load_fund_directory()}


def render_all(mc: MessageCase, composer: Composer, funds: dict[str, Fund]) -> dict[str, Composed]:
    """Every message the case can produce, by golden-file name."""
    case = mc.build()
    out: dict[str, Composed] = {}
    for action in mc.granted:
        fund = funds[mc.fund_id] if action == "emergency_fund" and mc.fund_id else None
        out[action] = composer.appeal(case, action, fund=fund)
    for action, information in mc.further_information.items():
        out[f"further_information.{action}"] = composer.further_information(case, action, information)
    out["escalation"] = composer.escalation(
        reference=mc.reference, country=mc.intake["country"], stage="clearance", level=2,
        deadline=ESCALATION_DEADLINE, now=ESCALATION_NOW, awaited=awaited(mc))
    for kind in ("follow_up", "checkin"):
        out[f"reminder.{kind}"] = composer.reminder(
            reference=mc.reference, country=mc.intake["country"], kind=kind,
            actions_sent=mc.granted, due=REMINDER_DUE)
    return out


def parts(message: Composed) -> Iterator[str]:
    yield message.subject
    yield message.text
    if message.html is not None:
        yield message.html


def shown_name(case: Any, index: int, name: str) -> str:
    """How messages name the defender: as their publicity profile allows ("" for no name)."""
    return {"full_names": name, "initials_only": initials(name)}.get(case.publicity_of(index), "")


@pytest.fixture(scope="module")
def rendered(composer: Composer, funds: dict[str, Fund]) -> dict[str, dict[str, Composed]]:
    return {key: render_all(mc, composer, funds) for key, mc in CASES.items()}


def _golden_names() -> list[tuple[str, str]]:
    composer = configured_composer()
    funds = {f.id: f for f in load_fund_directory()}
    return [(key, name) for key, mc in CASES.items() for name in render_all(mc, composer, funds)]


GOLDEN_NAMES = _golden_names()


# --------------------------------------------------------------------------------- golden files
def _check_golden(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path.name} is missing: run with APPEALS_UPDATE_GOLDEN=1 and review it")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                            actual.splitlines(keepends=True),
                                            f"golden/{path.name}", "rendered"))
        pytest.fail(f"{path.name} differs from the rendered message (regenerate with "
                    f"APPEALS_UPDATE_GOLDEN=1 if the change is intended):\n{diff}")


@pytest.mark.parametrize(("key", "name"), GOLDEN_NAMES, ids=[f"{k}.{n}" for k, n in GOLDEN_NAMES])
def test_golden(rendered: dict[str, dict[str, Composed]], key: str, name: str) -> None:
    message = rendered[key][name]
    _check_golden(GOLDEN / f"{key}.{name}.txt", f"Subject: {message.subject}\n\n{message.text}")
    if message.html is not None:
        _check_golden(GOLDEN / f"{key}.{name}.html", message.html)


def test_no_stale_golden_files() -> None:
    expected = {f"{k}.{n}.txt" for k, n in GOLDEN_NAMES} | {f"{k}.{n}.html" for k, n in GOLDEN_NAMES}
    stale = sorted(p.name for p in GOLDEN.glob("*") if p.name not in expected)
    assert not stale, f"golden files no message renders any more: {stale}"


# ---------------------------------------------------------------------------- required content
def test_every_kind_is_rendered_for_the_fixture_cases(rendered: dict[str, dict[str, Composed]]) -> None:
    kinds = {m.kind for messages in rendered.values() for m in messages.values()}
    assert kinds == {"rapporteur", "mfa", "eu_delegation", "emergency_fund", "escalation",
                     "reminder", "further_information"}
    for messages in rendered.values():
        for message in messages.values():
            assert message.text.endswith("\n") and "\r" not in message.text
            assert (message.html is not None) == (message.kind in {"rapporteur", "eu_delegation"})


@pytest.mark.parametrize("key", CASES)
def test_the_rapporteur_letter_has_every_element_ohchr_asks_for(
        rendered: dict[str, dict[str, Composed]], key: str) -> None:
    mc = CASES[key]
    letter = rendered[key]["rapporteur"]
    intake = mc.intake
    assert SUBJECT_RE.match(letter.subject), letter.subject
    assert letter.subject.startswith("URGENT APPEAL – SR Human Rights Defenders")
    text = letter.text
    flat = " ".join(text.split())
    case = mc.build()
    for i, d in enumerate(intake["defenders"]):
        shown = shown_name(case, i, d["name"]) or "withheld at the defender's request"
        for value in (shown, d["role"], str(d["age"]), d["location"]):
            assert value in text
        # The structured facts for the working groups, when the intake has them.
        for block in ("disappearance", "detention"):
            for value in (d.get(block) or {}).values():
                if isinstance(value, str) and not re.match(r"\d{4}-\d\d-\d\d$", value):
                    assert value in flat, (block, value)
    assert intake["organisation"]["name"] in text
    assert intake["incident"]["perpetrators"][:40] in " ".join(text.split())
    for element in ("ALLEGED PERPETRATORS", "WHY THE RISK IS ONGOING OR IMMINENT",
                    "STEPS TAKEN DOMESTICALLY", "CONSENT AND NAMING IN THE PUBLIC REPORT",
                    "CONFIDENTIAL INFORMATION", "kept confidential by OHCHR",
                    "Special Rapporteur on the situation of human rights defenders"):
        assert element in text
    assert intake["domestic_steps"] in flat
    assert intake["incident"]["ongoing_risk"] in flat
    assert intake["organisation"]["contact_email"] in text
    assert intake["organisation"]["contact_name"] in text
    # The submitting organisation is identifiable (OHCHR does not consider anonymous submissions)
    # and signs the letter.
    submitting = flat[flat.index("8. SUBMITTING ORGANISATION"):flat.index("9. REQUEST")]
    assert f"Submitted by: {SIGNATORY_ORGANISATION}, signed by {SIGNATORY_NAME}" in submitting
    assert text.endswith(f"Yours sincerely,\n\n{SIGNATORY_NAME}\n{SIGNATORY_ORGANISATION}\n")
    naming = case.publicity_of(0)
    phrase = {"full_names": "to being named in full in the public report",
              "initials_only": "to being named by initials only in the public report",
              "anonymous": "but not to being named in the public report"}[naming]
    assert phrase in flat
    if mc.consents["rapporteur"].conditions:
        assert mc.consents["rapporteur"].conditions in flat
    assert ("No domestic steps are reported" in flat) == (not intake["domestic_steps"])
    # The confidential information sits in the confidential section, before the organisation's.
    confidential = intake["confidential_information"]
    section = flat.index("7. CONFIDENTIAL INFORMATION")
    assert section < flat.index(confidential) < flat.index("8. SUBMITTING ORGANISATION")
    assert letter.html is not None and str(escape(confidential)) in letter.html


def test_rapporteur_subject_is_exact_and_follows_the_mandates_given(
        composer: Composer, rendered: dict[str, dict[str, Composed]]) -> None:
    assert rendered["journalist"]["rapporteur"].subject == (
        "URGENT APPEAL – SR Human Rights Defenders, SR Freedom of Expression, WG Arbitrary "
        "Detention, SR Privacy, SR Independence of Judges and Lawyers – Kyrgyzstan – UA-2026-0101")
    assert rendered["land_defender"]["rapporteur"].subject == (
        "URGENT APPEAL – SR Human Rights Defenders, SR Extrajudicial Executions, SR Indigenous "
        "Peoples, WG Business and Human Rights, SR Environment – Guatemala – UA-2026-0103")
    assert rendered["woman_defender"]["rapporteur"].subject == (
        "URGENT APPEAL – SR Human Rights Defenders, SR Freedom of Expression, SR Privacy, WG "
        "Discrimination against Women and Girls – Mexico – UA-2026-0102")
    assert rendered["trade_unionist"]["rapporteur"].subject == (
        "URGENT APPEAL – SR Human Rights Defenders, SR Assembly and Association, WG Enforced "
        "Disappearances, SR Extrajudicial Executions – Philippines – UA-2026-0105")
    case = CASES["journalist"].build()
    only = composer.appeal(case, "rapporteur", mandates=[Mandate.HUMAN_RIGHTS_DEFENDERS])
    assert only.subject == "URGENT APPEAL – SR Human Rights Defenders – Kyrgyzstan – UA-2026-0101"
    assert "Working Group on Arbitrary Detention" not in only.text


def test_initials_are_spelled_out_for_the_public_report(rendered: dict[str, dict[str, Composed]]) -> None:
    text = " ".join(rendered["land_defender"]["rapporteur"].text.split())
    assert "by initials only in the public report (I. S. O.; M. C. B.)" in text


def test_the_mfa_brief(rendered: dict[str, dict[str, Composed]]) -> None:
    brief = rendered["woman_defender"]["mfa"]
    assert brief.subject == "Case brief for clearance – Mexico – UA-2026-0102"
    flat = " ".join(brief.text.split())
    assert "Risk level high: probability 3 of 5 x impact 4 of 5 = 12 of 25" in flat
    assert "The grantee does NOT want: EU delegation." in flat
    assert "No public statements by the embassy." in flat  # the grantee's conditions
    assert "PUBLICITY CAN ENDANGER THE DEFENDERS" in flat
    assert "advises against any public action" in flat  # the verification's do-no-harm answer
    assert "- No public action on the case" in flat and "A public statement" not in flat
    assert "Raise the case with the authorities of Mexico (demarche)" in flat
    assert "DECISION REQUESTED FROM THE MINISTRY" in flat
    # Full names, publicity agreed and advised: a statement may be proposed, hearings observed.
    journalist = " ".join(rendered["journalist"]["mfa"].text.split())
    assert "- A public statement on the case." in journalist
    assert "Observe the hearings and the trial" in journalist
    assert "Please tell the family before any visit to the detention centre." in journalist


@pytest.mark.parametrize("key", [k for k, mc in CASES.items() if "mfa" in mc.granted])
def test_the_mfa_brief_never_speaks_of_funds_or_money(
        rendered: dict[str, dict[str, Composed]], key: str) -> None:
    """Fund applications are outside what the ministry's channel covers, consented or not."""
    text = rendered[key]["mfa"].text.replace(SIGNATORY_ORGANISATION, "")
    assert not re.search(r"\bfunds?\b|\bEUR\b|\bgrant\b", text, re.IGNORECASE), key


def test_the_eu_delegation_request(rendered: dict[str, dict[str, Composed]]) -> None:
    for key in ("journalist", "land_defender", "lgbti_organisation"):
        message = rendered[key]["eu_delegation"]
        assert message.subject.startswith("CONFIDENTIAL – ")
        assert message.text.startswith("CONFIDENTIAL\n")
        assert message.html is not None and "<strong>CONFIDENTIAL</strong>" in message.html
        assert "EU Guidelines on Human Rights Defenders" in " ".join(message.text.split())
        case = CASES[key].build()
        for i, d in enumerate(CASES[key].intake["defenders"]):
            shown = shown_name(case, i, d["name"])
            assert f"- {shown or 'Name withheld'}, {d['role']}" in message.text
    land = rendered["land_defender"]["eu_delegation"]
    assert land.subject == ("CONFIDENTIAL – Request for EU intervention and emergency grant – "
                            "Guatemala – UA-2026-0103")
    flat = " ".join(land.text.split())
    assert "Amount: EUR 10,000 (the maximum for one grant is EUR 10,000)" in flat
    assert "Purpose: security measures for the community radio" in flat
    assert "also applying to an emergency fund for defenders, for relocation" in flat
    # No grant asked: no grant section.
    lgbti = rendered["lgbti_organisation"]["eu_delegation"]
    assert "emergency grant" not in lgbti.subject and "EUR" not in lgbti.text
    assert "Delegation of the European Union to Uganda" in lgbti.text


def test_the_fund_application_is_capped_and_answers_the_funds_items(
        rendered: dict[str, dict[str, Composed]], funds: dict[str, Fund]) -> None:
    application = rendered["land_defender"]["emergency_fund"]
    fund = funds["protection_grant"]
    assert fund.cap_eur == 7_500
    assert application.subject == (f"Emergency grant application – {fund.name} – Guatemala – "
                                   "UA-2026-0103")
    flat = " ".join(application.text.split())
    assert "Amount requested: EUR 7,500" in flat
    assert "The grantee needs EUR 12,000 in all; this application is for EUR 7,500" in flat
    assert not fund.address or fund.address in flat
    assert "Costs already incurred: no" in flat and "In exile: no" in flat
    for item in ("Link between the danger and the human rights work", "Whether the defenders are "
                 "in exile", f"Reference: {SIGNATORY_ORGANISATION}"):
        assert item in flat
    assert "I. S. O. (community leader and land-rights defender) and M. C. B. (community radio " \
           "presenter) are targeted" in flat
    lgbti = " ".join(rendered["lgbti_organisation"]["emergency_fund"].text.split())
    assert "Record of activism: 48 months of documented activism" in lgbti
    assert "Security plan: to be provided by the applicant organisation directly" in lgbti
    assert "Amount requested: EUR 5,000" in lgbti and "fund's cap" not in lgbti
    women = " ".join(rendered["woman_defender"]["emergency_fund"].text.split())
    assert "Women- or trans-led: yes" in women and "digital security" in women


def test_a_fund_application_needs_its_fund(composer: Composer) -> None:
    with pytest.raises(MessageError, match="needs the fund"):
        composer.appeal(CASES["land_defender"].build(), "emergency_fund")


def test_further_information_quotes_the_reference(rendered: dict[str, dict[str, Composed]]) -> None:
    update = rendered["journalist"]["further_information.rapporteur"]
    assert update.subject == "URGENT APPEAL – Further information – UA-2026-0101"
    assert "extended Tavrin Olloque's pre-trial detention" in " ".join(update.text.split())
    assert rendered["trade_unionist"]["further_information.mfa"].subject == (
        "Further information – UA-2026-0105")
    assert "Further to our case brief UA-2026-0105" in rendered["trade_unionist"][
        "further_information.mfa"].text


# ------------------------------------------------------------------------- what must never leak
@pytest.mark.parametrize("key", CASES)
def test_the_verification_notes_and_source_appear_in_no_message(
        rendered: dict[str, dict[str, Composed]], key: str) -> None:
    secrets = CASES[key].verification_texts()
    markers = ("VERISRC-", "DNH-", "NOTE-", "Quobrick")
    for name, message in rendered[key].items():
        for part in parts(message):
            flat = " ".join(part.split())
            for secret in secrets:
                assert secret not in flat, (key, name)
            for marker in markers:
                assert marker not in part, (key, name, marker)


@pytest.mark.parametrize("key", CASES)
def test_confidential_information_is_only_in_the_letter_to_ohchr(
        rendered: dict[str, dict[str, Composed]], key: str) -> None:
    for name, message in rendered[key].items():
        for part in parts(message):
            if name == "rapporteur":
                assert f"CONF-{key}" in part or part == message.subject
            else:
                assert "CONF-" not in part, (key, name)


@pytest.mark.parametrize("key", CASES)
def test_staff_mail_carries_no_name_and_no_incident_text(
        rendered: dict[str, dict[str, Composed]], key: str) -> None:
    intake = CASES[key].intake
    personal = [d["name"] for d in intake["defenders"]]
    personal += [intake["organisation"]["name"], intake["organisation"]["contact_name"],
                 intake["organisation"]["contact_email"], intake["incident"]["place"],
                 intake["incident"]["description"][:30], intake["incident"]["perpetrators"][:30],
                 "olga"]
    for name in ("escalation", "reminder.follow_up", "reminder.checkin"):
        message = rendered[key][name]
        for part in parts(message):
            for value in personal:
                assert value not in part, (key, name)
    escalation = rendered[key]["escalation"]
    reference = CASES[key].reference
    assert escalation.subject == f"Escalation level 2 – case {reference} – clearance deadline missed"
    flat = " ".join(escalation.text.split())
    assert "(5 hours 30 minutes late)" in flat
    if "mfa" in CASES[key].granted:
        assert ("record the ministry's clearance decision for the Ministry of Foreign Affairs, by a "
                "ministry liaison other than the person who verified the threat (four eyes)") in flat


def test_reminders_say_what_is_due(rendered: dict[str, dict[str, Composed]]) -> None:
    follow = rendered["journalist"]["reminder.follow_up"]
    checkin = rendered["journalist"]["reminder.checkin"]
    assert follow.subject == "Follow-up due – case UA-2026-0101"
    assert checkin.subject == "Check in with the defenders – case UA-2026-0101"
    assert "60 days" in follow.text and "reprisals" in checkin.text
    assert "2026-11-08 18:00 UTC" in follow.text


# ------------------------------------------------------------------------------------ consent
def test_no_message_for_an_action_without_consent(composer: Composer) -> None:
    case = CASES["trade_unionist"].build()  # the family refused the EU delegation
    with pytest.raises(MessageError, match="consent"):
        composer.appeal(case, "eu_delegation")
    with pytest.raises(MessageError, match="not an action of this case"):
        composer.appeal(case, "emergency_fund", fund=None)
    with pytest.raises(MessageError, match="consent"):
        composer.further_information(case, "eu_delegation", "news")


def test_refused_channels_are_named_as_unwanted_to_diplomats_only(
        rendered: dict[str, dict[str, Composed]]) -> None:
    brief = " ".join(rendered["trade_unionist"]["mfa"].text.split())
    assert "Besides the ministry, the grantee has consented to: UN Special Procedures" in brief
    assert "The grantee does NOT want: EU delegation." in brief


# ---------------------------------------------------------------------------------- injection
def _case_with(name: str, description: str) -> Case:
    """A case whose defender name would be refused at intake: built around parse_intake."""
    mc = CASES["journalist"]
    intake = parse_intake(mc.intake, today=TODAY)
    intake["defenders"][0]["name"] = name
    intake["incident"]["description"] = description
    case = new_case("UA-2026-0199", intake, clearance_required(intake["requested_actions"]),
                    deadline_table(), T0, "olga", "open")
    case.record_verification(verification=parse_verification(mc.verification), at=T1,
                             actor="olga", command_id="v")
    for i, action in enumerate(intake["requested_actions"]):
        case.grant_consent(action=action, conditions="", at=T2, actor="olga", command_id=f"c{i}",
                           public_naming="full_names")
    return case


def test_a_name_with_a_line_break_cannot_break_the_subject_or_forge_a_header(
        composer: Composer) -> None:
    evil = "Ana Evil\r\nBcc: evil@example.org"
    case = _case_with(evil, "Nothing unusual.")
    messages = [composer.appeal(case, a) for a in ("rapporteur", "mfa", "eu_delegation")]
    messages.append(composer.further_information(case, "mfa", "News."))
    for message in messages:
        assert "\r" not in message.subject and "\n" not in message.subject
        for part in parts(message):
            assert "\r" not in part
            assert not re.search(r"^Bcc:", part, re.MULTILINE)
    assert "Ana Evil Bcc: evil@example.org" in messages[0].text
    # Free text keeps its line breaks (as LF only): it is body text, never a header.
    update = composer.further_information(case, "mfa", "First line.\r\nSecond line.")
    assert "\r" not in update.text and "First line.\nSecond line." in update.text


def test_html_in_the_incident_is_escaped_in_html_and_readable_in_text(composer: Composer) -> None:
    case = _case_with("Ana Plain", "They shouted <script>alert('x')</script> & left.")
    for action in ("rapporteur", "eu_delegation"):
        message = composer.appeal(case, action)
        assert message.html is not None
        assert "<script>" not in message.html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; left." in message.html
        assert "<script>alert('x')</script> & left." in message.text


def test_a_template_with_a_missing_value_fails_loudly_without_case_data(tmp_path: Path) -> None:
    folder = tmp_path / "messages"
    folder.mkdir()
    (folder / "reminder.subject.txt").write_text("Reminder {{ reference }}\n")
    (folder / "reminder.txt").write_text("Due {{ due }} for {{ missing_value }}\n")
    composer = Composer(tmp_path)
    with pytest.raises(MessageError, match=r"messages/reminder\.txt.*'missing_value'"):
        composer.reminder(reference="UA-2026-0101", country="KG", kind="checkin", actions_sent=[],
                          due=ESCALATION_NOW)
    # An attribute of case data, and a lookup keyed by case data: the name never shows.
    case = CASES["journalist"].build()
    (folder / "further_information.subject.txt").write_text("Further {{ reference }}\n")
    (folder / "further_information.txt").write_text("{{ defenders[0].nickname }}\n")
    with pytest.raises(MessageError, match="'nickname'") as first:
        Composer(tmp_path).further_information(case, "mfa", "news")
    (folder / "further_information.txt").write_text("{{ {'a': 1}[defenders[0].name] }}\n")
    with pytest.raises(MessageError) as second:
        Composer(tmp_path).further_information(case, "mfa", "news")
    for error in (first.value, second.value):
        assert "Tavrin" not in str(error) and error.__cause__ is None
    (folder / "escalation.subject.txt").write_text("x\n")
    with pytest.raises(MessageError, match=r"messages/escalation\.txt: not found"):
        Composer(tmp_path).escalation(reference="UA-2026-0101", country="KG", stage="consent",
                                      level=1, deadline=T0, now=T1, awaited=[])


def test_an_escalation_before_or_without_awaited_decisions_still_reads(composer: Composer) -> None:
    message = composer.escalation(reference="UA-2026-0101", country="PH", stage="follow_up", level=1,
                                  deadline=T1, now=T1, awaited=[{"decision": "record_response",
                                                                 "roles": ["case_officer"]}])
    assert "late)" not in message.text
    assert "- record the recipients' responses, by a case officer." in message.text
    assert message.subject == "Escalation level 1 – case UA-2026-0101 – follow-up deadline missed"


def test_an_eu_grant_over_the_cap_is_refused_even_when_the_intake_was_bypassed(
        composer: Composer) -> None:
    case = CASES["journalist"].build()
    case.intake["eu_grant"] = {"amount_eur": 10_001, "purpose": "legal fees"}
    with pytest.raises(MessageError, match="cannot exceed EUR 10,000"):
        composer.appeal(case, "eu_delegation")


def test_the_held_notice_names_the_missing_fields_and_nothing_else() -> None:
    held = Composer().held(reference="UA-2026-0101", country="KG", action="rapporteur",
                           missing=["domestic_steps", "defenders[0].location"])
    assert held.kind == "held" and held.html is None
    assert "UA-2026-0101" in held.subject and "\n" not in held.subject
    assert "- domestic_steps" in held.text and "- defenders[0].location" in held.text
    assert "Kyrgyzstan" in held.text and "UN Special Procedures" in held.text



def test_the_waiting_notice_says_what_waits_by_when_and_where_to_act_and_nothing_else() -> None:
    from datetime import UTC, datetime

    from domain.decisions import DECISIONS, WAITING_NOTICES
    composer = Composer()
    due = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    notice = composer.waiting(reference="UA-2026-0101", decision="record_clearance",
                              roles=["ministry_liaison"], action="rapporteur", four_eyes=True,
                              deadline=due)
    assert notice.kind == "waiting" and notice.html is None and "\n" not in notice.subject
    assert notice.subject == ("Decision waiting – Clear or deny – UN Special Procedures (urgent "
                              "appeal through OHCHR) – case UA-2026-0101")
    assert f"Decision:  {DECISIONS['record_clearance'].label}" in notice.text
    assert "Deadline:  2026-11-03 08:00 UTC" in notice.text
    assert "/cases/UA-2026-0101" in notice.text
    assert "appeals case clear UA-2026-0101 rapporteur --grant (or --deny)" in notice.text
    assert "other than the person who verified the threat" in notice.text
    # Every decision staff are told of renders, with its own command; a reference with a line
    # break cannot add a line; anything else is refused.
    for decision in WAITING_NOTICES:
        text = composer.waiting(reference="UA-2026-0101\nBcc: x", decision=decision,
                                roles=["case_officer"], action="emergency_fund",
                                fund="protection_grant").text
        assert "\nBcc" not in text and "appeals case " in text and "Deadline:  none set" in text
    with pytest.raises(MessageError):
        composer.waiting(reference="UA-2026-0101", decision="extend_deadline", roles=["head"])


# ------------------------------------------------------------- per-person naming and publicity
def _journalist_case(*, naming: str, advised: bool, conditions: str = "",
                     **intake_changes: Any) -> Case:
    """The journalist's case through the real aggregate, every consent with the same naming."""
    mc = CASES["journalist"]
    intake = parse_intake({**mc.intake, **intake_changes}, today=TODAY)
    case = new_case("UA-2026-0198", intake, clearance_required(intake["requested_actions"]),
                    deadline_table(), T0, "olga", "open")
    case.record_verification(verification=parse_verification(
        {**mc.verification, "public_action_advised": advised}), at=T1, actor="olga",
        command_id="v")
    for i, action in enumerate(intake["requested_actions"]):
        case.grant_consent(action=action, conditions=conditions, at=T2, actor="olga",
                           command_id=f"c{i}", public_naming=naming)
    return case


def _every_message(composer: Composer, case: Any, information: str = "News.") -> list[Composed]:
    """Every outside message of the case: each consented appeal and further information."""
    funds = {f.id: f for f in load_fund_directory()}
    out = []
    for action, state in case.actions.items():
        if state["consent"] != "granted":
            continue
        fund = funds["protection_grant"] if action == "emergency_fund" else None
        out.append(composer.appeal(case, action, fund=fund))
        out.append(composer.further_information(case, action, information))
    return out


def test_initials_only_means_no_message_names_anyone_in_full_or_proposes_a_statement(
        composer: Composer) -> None:
    case = _journalist_case(naming="initials_only", advised=True)
    messages = _every_message(composer, case, information=(
        "Tavrin Olloque was moved to another cell. Olloque's lawyer saw him on Monday."))
    assert {m.kind for m in messages} == {"rapporteur", "mfa", "eu_delegation",
                                          "further_information"}
    for message in messages:
        for part in parts(message):
            # Neither the full name nor any part of it, in the subject, the text or the HTML, and
            # even where the account and the further information mention him.
            assert "Tavrin" not in part and "Olloque" not in part, message.kind
            assert "public statement" not in part.lower(), message.kind
    letter = " ".join(messages[0].text.split())
    assert "concerning the human rights defender T. O.," in letter
    assert "searched the home of T. O. at dawn" in letter
    assert "being named by initials only in the public report (T. O.)" in letter
    update = next(m for m in messages if m.kind == "further_information")
    assert "T. O. was moved to another cell. T. O.'s lawyer saw him" in " ".join(update.text.split())


def test_anonymous_means_no_name_and_no_initials(composer: Composer) -> None:
    case = _journalist_case(naming="anonymous", advised=True)
    for message in _every_message(composer, case, information="Tavrin Olloque was moved."):
        for part in parts(message):
            assert "Tavrin" not in part and "Olloque" not in part and "T. O." not in part
            assert "public statement" not in part.lower()
    letter = " ".join(composer.appeal(case, "rapporteur").text.split())
    assert "concerning a human rights defender whose name is withheld at their request" in letter
    assert "Name: withheld at the defender's request" in letter
    assert "searched the home of the defender at dawn" in letter
    update = composer.further_information(case, "mfa", "Tavrin Olloque was moved.")
    assert "The defender was moved." in update.text  # a sentence still starts with a capital


def test_no_message_proposes_public_action_when_it_is_not_advised(composer: Composer) -> None:
    advised = _journalist_case(naming="full_names", advised=True)
    assert "- A public statement on the case." in composer.appeal(advised, "mfa").text
    case = _journalist_case(naming="full_names", advised=False)
    messages = _every_message(composer, case)
    for message in messages:
        for part in parts(message):
            assert "public statement" not in part.lower(), message.kind
            assert "Tavrin Olloque" in part or part == message.subject  # full names agreed
    brief = " ".join(composer.appeal(case, "mfa").text.split())
    assert "The secretariat's risk assessment advises against any public action" in brief
    assert "- No public action on the case" in brief
    # The letter to OHCHR states the naming consent as given, and asks for no publicity.
    letter = " ".join(composer.appeal(case, "rapporteur").text.split())
    assert "consents to this submission and to being named in full in the public report" in letter
    assert "consult us before any press release or other publicity about the case" in letter


def test_conditions_of_any_consent_that_speak_of_publicity_hold_back_every_channel(
        composer: Composer) -> None:
    case = _journalist_case(naming="full_names", advised=True)
    case.actions["rapporteur"]["conditions"] = "No press before the hearing."
    brief = " ".join(composer.appeal(case, "mfa").text.split())
    assert "Conditions the grantee set for another channel limit publicity" in brief
    assert "No press before the hearing" not in brief  # not quoted to another channel
    assert "A public statement" not in brief


def test_a_disappeared_persons_letter_records_the_relatives_consent(
        rendered: dict[str, dict[str, Composed]]) -> None:
    letter = rendered["trade_unionist"]["rapporteur"]
    flat = " ".join(letter.text.split())
    assert ("The defender has been disappeared and cannot consent personally. A relative (wife) "
            "consented on the defender's behalf to this submission and to being named in full in "
            "the public report.") in flat
    assert letter.html is not None and "A relative (wife) consented" in letter.html
    assert "consents" not in flat and "consents" not in letter.html
    brief = " ".join(rendered["trade_unionist"]["mfa"].text.split())
    assert "A relative (wife) consented on behalf of the defender." in brief
    # How and when consent was given stays with the secretariat.
    for message in rendered["trade_unionist"].values():
        for part in parts(message):
            assert "union office" not in part and "2026-11-05T11" not in part


def test_without_recorded_givers_a_disappeared_person_is_never_said_to_consent(
        composer: Composer) -> None:
    """An older case recorded consent for the whole group: it came through the organisation."""
    case = CASES["trade_unionist"].build_case()
    assert case.consent_givers("rapporteur") == []
    flat = " ".join(composer.appeal(case, "rapporteur").text.split())
    assert ("The defender has been disappeared and cannot consent personally. Consent on the "
            "defender's behalf to this submission and to being named in full in the public report "
            "was obtained through Federation of Kalinaw Estate Workers.") in flat
    assert "consents to" not in flat


def test_a_case_without_domestic_steps_or_known_perpetrators_renders_the_templates_sentences(
        composer: Composer) -> None:
    mc = CASES["journalist"]
    incident = {**mc.intake["incident"], "perpetrators": "", "perpetrator_kind": "unknown"}
    case = _journalist_case(naming="full_names", advised=True, domestic_steps="",
                            incident=incident)
    assert missing_fields("rapporteur", case.intake) == []  # OHCHR practice: neither is required
    letter = composer.appeal(case, "rapporteur")
    flat = " ".join(letter.text.split())
    assert ("5. STEPS TAKEN DOMESTICALLY No domestic steps are reported (domestic remedies need not "
            "be exhausted for an urgent appeal).") in flat
    assert "Type: Unknown Nothing further is known about the perpetrators." in flat
    assert letter.html is not None
    assert "domestic remedies need not be exhausted for an urgent appeal" in letter.html
    assert "Nothing further is known about the perpetrators." in letter.html


# ------------------------------------------------------------------- the composer's Protocol
class FakeCase:
    """A case as the composer sees it (activities.messages.MessageCase), with one defender per
    publicity profile: what neither fixture aggregate can show in one case."""

    def __init__(self, profiles: list[str], givers: list[dict[str, Any]] | None = None,
                 advised: bool = True, **defender_blocks: dict[str, Any]) -> None:
        mc = CASES["land_defender"]
        self.reference = "UA-2026-0197"
        self.intake = parse_intake(mc.intake, today=TODAY)
        names = ["Ixmukané Sactic Oxlajuj", "Mateo Coyoy Batzibal", "Rosa Sactic Imul"]
        self.intake["defenders"] = [
            {**self.intake["defenders"][0], "name": name, "role": f"role {i}",
             "disappearance": None, "detention": None}
            for i, name in enumerate(names[:len(profiles)])]
        for key, block in defender_blocks.items():
            index, field = key.split("_", 1)
            self.intake["defenders"][int(index[1:])][field] = block
        self.intake["incident"]["description"] = (
            "Guards threatened Ixmukané Sactic Oxlajuj and Mateo Coyoy Batzibal; Sactic was "
            "followed home. Rosa Sactic Imul saw it.")
        self.risk_level: str | None = "critical"
        self.actions = {a: {"consent": "granted", "conditions": ""}
                        for a in self.intake["requested_actions"]}
        self._profiles = profiles
        self._givers = givers or []
        self._advised = advised

    def publicity_of(self, index: int) -> str:
        return self._profiles[index]

    def public_action_advised(self) -> bool:
        return self._advised

    def consent_givers(self, action: str) -> list[dict[str, Any]]:
        return [dict(g) for g in self._givers]


def test_each_defender_is_named_as_their_own_profile_allows(composer: Composer) -> None:
    case = FakeCase(["full_names", "initials_only", "anonymous"])
    messages = _every_message(composer, case, information="Mateo Coyoy Batzibal is safe.")
    for message in messages:
        for part in parts(message):
            for withheld in ("Mateo", "Coyoy", "Batzibal", "Rosa", "Imul", "R. S. I."):
                assert withheld not in part, (message.kind, withheld)
            assert "public statement" not in part.lower()
    letter = composer.appeal(case, "rapporteur")
    flat = " ".join(letter.text.split())
    # A name part shared with the defender named in full is hers to keep.
    assert "Guards threatened Ixmukané Sactic Oxlajuj and M. C. B.; Sactic was followed" in flat
    assert "followed home. One of the defenders saw it." in flat
    assert ("concerning the human rights defenders Ixmukané Sactic Oxlajuj, M. C. B. and one "
            "other defender whose name is withheld,") in flat
    for statement in (
            "Ixmukané Sactic Oxlajuj consents to this submission and to being named in full in "
            "the public report.",
            "M. C. B. consents to this submission and to being named by initials only in the "
            "public report (M. C. B.).",
            "Defender 3 (name withheld) consents to this submission but not to being named in the "
            "public report, neither in full nor by initials."):
        assert statement in flat
    brief = " ".join(composer.appeal(case, "mfa").text.split())
    assert ("M. C. B. agrees to be named by initials only in public reports; Defender 3 (name "
            "withheld) does not agree to be named in public at all") in brief
    fund = next(m for m in messages if m.kind == "emergency_fund")
    assert ("Ixmukané Sactic Oxlajuj (role 0), M. C. B. (role 1) and one other defender whose name "
            "is withheld (role 2) are targeted") in " ".join(fund.text.split())


def test_consent_given_by_relatives_and_lawyers_is_said_so_for_each_person(
        composer: Composer) -> None:
    givers = [
        {"defender": 0, "given_by": "defender", "relationship": "", "channel": "phone",
         "given_at": "2026-11-05T10:00:00+00:00"},
        {"defender": 1, "given_by": "relative", "relationship": "mother", "channel": "phone",
         "given_at": "2026-11-05T10:00:00+00:00"},
        {"defender": 1, "given_by": "lawyer", "relationship": "defence counsel",
         "channel": "secure_message", "given_at": "2026-11-05T10:00:00+00:00"},
    ]
    case = FakeCase(["full_names", "full_names"], givers=givers,
                    d1_detention={"arrest_date": "2026-10-20", "place_of_detention": "unknown",
                                  "incommunicado": True})
    flat = " ".join(composer.appeal(case, "rapporteur").text.split())
    assert "Ixmukané Sactic Oxlajuj consents to this submission" in flat
    assert ("Mateo Coyoy Batzibal is held incommunicado and cannot consent personally. A relative "
            "(mother) and a lawyer (defence counsel) consented on their behalf to this submission "
            "and to being named in full in the public report.") in flat
    assert "Mateo Coyoy Batzibal consents" not in flat
    assert "- Held incommunicado: yes" in flat
    brief = " ".join(composer.appeal(case, "mfa").text.split())
    assert ("A relative (mother) and a lawyer (defence counsel) consented on behalf of Mateo Coyoy "
            "Batzibal.") in brief
    assert "secure_message" not in flat and "phone" not in flat


def test_a_disappeared_person_never_consents_personally_even_if_recorded_so(
        composer: Composer) -> None:
    givers = [{"defender": 0, "given_by": "defender", "relationship": "", "channel": "phone",
               "given_at": "2026-11-05T10:00:00+00:00"}]
    case = FakeCase(["initials_only"], givers=givers, d0_disappearance={})
    flat = " ".join(composer.appeal(case, "rapporteur").text.split())
    assert "consents" not in flat
    assert "Consent on the defender's behalf to this submission and to being named by initials " \
           "only in the public report (I. S. O.) was obtained through" in flat
    assert "Disappeared: yes (no further details known yet)" in flat


def test_the_composer_reads_an_unknown_profile_as_anonymous(composer: Composer) -> None:
    case = FakeCase(["nicknames"])
    for message in _every_message(composer, case):
        for part in parts(message):
            assert "Sactic" not in part and "I. S. O." not in part


def test_the_signature_defaults_to_the_older_setting() -> None:
    case = CASES["journalist"].build()
    assert Composer().appeal(case, "mfa").text.endswith("\nThe secretariat\n")
    old = Composer(signature="The Tallowmere secretariat").appeal(case, "rapporteur")
    assert old.text.endswith("\nThe Tallowmere secretariat\n")
    assert "Submitted by: the secretariat" in " ".join(old.text.split())
    named = Composer(signatory_organisation="Tallowmere Trust").appeal(case, "rapporteur")
    assert named.text.endswith("\nTallowmere Trust\n") and named.html is not None
    assert "<p>Tallowmere Trust</p>" in named.html


if TYPE_CHECKING:
    from activities.messages import MessageCase as MessageCaseProtocol
    from domain.tracked import TrackedCase

    def _both_aggregates_are_message_cases(old: Case, tracked: TrackedCase,
                                           fake: FakeCase) -> list[MessageCaseProtocol]:
        """Checked by mypy: what the composer reads, every case provides."""
        return [old, tracked, fake]
