"""The case page without dead ends (web over HTTP, real dev server, worker and SMTP sink).

A message held for missing intake fields is released from the page with a form of exactly those
fields; a refused action reads "not sent: consent refused", never "pending"; closing needs an
outcome, a summary and a confirmation; the verification's scores start unselected; the liaison
sees the letters a clearance lets go, and further information is previewed before it is sent.
The pure parts (what a track shows, the intake changes a form makes) are tested on their own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from starlette.datastructures import FormData as MultiDict

from domain.view import shown_track
from tests.dev_stack import Stack
from tests.factories import DEFENDER_NAME, T0, intake, verification
from tests.test_web import (
    REQUEST_ID,
    Web,
    csrf_of,
    events,
    open_case,
    post_form,
    section,
    verification_form,
    web,  # noqa: F401 - the fixture
)
from tests.workflow_env import settle
from web.forms import FormError, FormErrors, held_fields, intake_changes_from_form
from workflows.inputs import ClearanceInput, ConsentInput, VerificationInput
from workflows.tracks import TrackedCaseWorkflow as WF

INCOMPLETE = {
    "requested_actions": ["rapporteur", "mfa", "eu_delegation"], "refused_actions": [],
    "incident": {**intake()["incident"], "ongoing_risk": ""},
    "defenders": [{**intake()["defenders"][0], "location": ""}],
}


def row(html: str, element_id: str, end: str = "</tr>") -> str:
    """One element of the page by its id, up to its end tag (a table row by default)."""
    start = html.find(f'id="{element_id}"')
    assert start >= 0, f"no element {element_id} on the page"
    return html[start:html.find(end, start)]


def person() -> dict[str, Any]:
    return {"defender": 0, "given_by": "defender", "relationship": "", "channel": "phone",
            "given_at": (T0 - timedelta(days=400)).isoformat()}


async def to_dispatch(stack: Stack, ref: str, granted: list[str], refused: list[str] | None = None,
                      cleared: list[str] | None = None) -> Any:
    """Verified, consent for `granted` (refused for `refused`), cleared by the liaison."""
    handle = stack.client.get_workflow_handle(ref)
    await handle.execute_update(WF.record_verification, VerificationInput("olga", verification()))
    for a in granted:
        await handle.execute_update(WF.grant_consent, ConsentInput(
            "olga", a, "", consents=[person()], publicity={"0": "initials_only"}))
    for a in refused or []:
        await handle.execute_update(WF.refuse_consent, ConsentInput("olga", a, "not now"))
    for a in cleared or []:
        await handle.execute_update(WF.record_clearance, ClearanceInput("lina", a, True, "ok"))
    return handle


# --------------------------------------------------------------------------------- pure parts
def test_a_refused_or_withdrawn_action_is_not_pending_and_never_held() -> None:
    refused = shown_track({"consent": "refused", "clearance": "pending", "dispatch": "pending",
                           "step": "ended", "held": []})
    assert refused["dispatch"] == "not sent: consent refused"
    assert refused["clearance"] == "not needed: consent refused"
    withdrawn = shown_track({"consent": "withdrawn", "clearance": "granted", "dispatch": "held",
                             "step": "ended", "held": ["incident.ongoing_risk"]})
    assert withdrawn["dispatch"] == "not sent: consent withdrawn" and withdrawn["held"] == []
    held = {"consent": "granted", "clearance": "granted", "dispatch": "held", "step": "dispatch",
            "held": ["incident.ongoing_risk"]}
    assert shown_track(held)["held"] == ["incident.ongoing_risk"]
    assert shown_track(held, closed=True)["held"] == []
    assert shown_track({**held, "step": "ended", "ended": "closed"})["held"] == []
    # Withdrawn after sending: it went out, and says so.
    assert shown_track({"consent": "withdrawn", "clearance": "granted", "dispatch": "sent",
                        "step": "follow_up"})["dispatch"] == "sent"


def test_the_command_line_status_says_not_sent_too(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.cases import print_status

    print_status({"reference": "UA-2026-0001", "stage": "closed", "tracks": {
        "mfa": {"step": "ended", "consent": "refused", "clearance": "pending",
                "dispatch": "pending", "ended": "refused"},
        "rapporteur": {"step": "ended", "consent": "granted", "clearance": "granted",
                       "dispatch": "held", "held": ["incident.ongoing_risk"], "ended": "closed"}}})
    out = capsys.readouterr().out
    mfa = next(line for line in out.splitlines() if line.strip().startswith("mfa"))
    assert "not sent: consent refused" in mfa and "pending" not in mfa
    assert "held: missing" not in out  # closed: nothing is held any more


def test_the_verification_has_no_default_scores() -> None:
    from domain.errors import InvalidInput
    from domain.intake import parse_verification

    for name in ("probability", "impact"):
        data = {k: v for k, v in verification().items() if k != name}
        with pytest.raises(InvalidInput) as caught:
            parse_verification(data)
        assert caught.value.field == name and "required" in caught.value.reason


def test_held_fields_become_intake_changes_and_every_blank_is_named() -> None:
    case_intake = intake(**INCOMPLETE)
    status = {"pending": [
        {"decision": "add_further_information", "action": "mfa",
         "missing": ["incident.ongoing_risk"]},
        {"decision": "add_further_information", "action": "rapporteur",
         "missing": ["defenders[0].location", "incident.ongoing_risk"]},
        {"decision": "close"}]}
    fields = held_fields(status, case_intake)
    assert [f["path"] for f in fields] == ["incident.ongoing_risk", "defenders[0].location"]
    assert fields[0]["actions"] == ["mfa", "rapporteur"]
    assert fields[1]["label"] == f"Defender 1 ({DEFENDER_NAME}): where they are now"
    with pytest.raises(FormErrors) as caught:
        intake_changes_from_form(MultiDict({"incident.ongoing_risk": " "}), fields, case_intake)
    assert set(caught.value.errors) == {"incident.ongoing_risk", "defenders[0].location"}
    changes = intake_changes_from_form(MultiDict({"incident.ongoing_risk": "Trial on Monday",
                                                  "defenders[0].location": "Mombasa"}),
                                       fields, case_intake)
    assert changes["incident"] == {"ongoing_risk": "Trial on Monday"}
    assert changes["defenders"][0]["location"] == "Mombasa"
    assert changes["defenders"][0]["name"] == DEFENDER_NAME  # the rest of the person is kept
    # A missing fund request is asked for as its amount and its purpose; the amount is a number.
    fund = held_fields({"pending": [{"decision": "add_further_information",
                                     "action": "emergency_fund", "missing": ["fund_request"]}]},
                       case_intake)
    assert [f["kind"] for f in fund] == ["number", "purpose"]
    with pytest.raises(FormError) as bad:
        intake_changes_from_form(MultiDict({"fund_request.amount_eur": "lots",
                                            "fund_request.purpose": "legal_fees"}), fund, case_intake)
    assert bad.value.field == "fund_request.amount_eur" and "whole number" in bad.value.message


# ------------------------------------------------------------------------------ over HTTP
async def test_a_held_message_is_released_from_the_case_page(web: Web) -> None:  # noqa: F811
    web.stack.start_worker()
    ref = await open_case(web, **INCOMPLETE)
    handle = await to_dispatch(web.stack, ref, ["rapporteur", "mfa"], ["eu_delegation"],
                               ["rapporteur", "mfa"])
    await settle(handle, lambda s: s["tracks"]["mfa"]["held"] and s["tracks"]["rapporteur"]["held"],
                 "both held")
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        held = section(page, "held")
        assert "The risk now: what may happen next" in held
        assert f"Defender 1 ({DEFENDER_NAME}): where they are now" in held
        assert 'href="#held"' in row(page, "action-mfa")
        assert "fund suggestions" not in page
        # The refused action: not sent, and neither its clearance nor its delivery is "pending".
        eu = row(page, "action-eu_delegation")
        assert "not sent: consent refused" in eu and "pending" not in eu and "held" not in eu
        # One field left empty: named in plain words, nothing recorded, the other value kept.
        before = events(web, ref)
        response = await post_form(olga, url, f"{url}/complete",
                                   {"incident.ongoing_risk": "Hearing on Monday"}, "form-held")
        assert response.status_code == 422
        assert "where they are now: is required" in response.text
        assert "Hearing on Monday" in response.text
        assert events(web, ref) == before
        # Both given: recorded as further information, and both held messages go out.
        response = await post_form(olga, url, f"{url}/complete",
                                   {"incident.ongoing_risk": "Hearing on Monday",
                                    "defenders[0].location": "Mombasa"}, "form-held")
        assert response.status_code == 303, response.text
        page = (await olga.get(url)).text
    status = await settle(handle, lambda s: s["tracks"]["mfa"]["dispatch"] == "sent"
                          and s["tracks"]["rapporteur"]["dispatch"] == "sent", "both sent")
    assert not status["held"]
    sent = {m["X-Appeal-Action"] for _, _, m in web.stack.sink.messages
            if m["X-Appeal-Kind"] == "appeal"}
    assert sent == {"mfa", "rapporteur"}
    assert "FurtherInformationAdded" in events(web, ref)
    assert 'id="form-held"' not in page  # nothing is held any more
    case = web.stack.store.get(ref)
    assert case.intake["defenders"][0]["location"] == "Mombasa"


async def test_closing_needs_an_outcome_a_summary_and_a_confirmation(web: Web) -> None:  # noqa: F811
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        # No preset scores and no preset outcome.
        form = section(page, "form-verification")
        assert "selected" not in form.split('name="probability"')[1].split("</select>")[0]
        assert "selected" not in form.split('name="impact"')[1].split("</select>")[0]
        data = {k: v for k, v in verification_form().items() if k != "probability"}
        response = await post_form(olga, url, f"{url}/decide/verification", data, "form-verification")
        assert response.status_code == 422 and "probability: choose a number from 1 to 5" in response.text
        response = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                                   "form-verification")
        assert response.status_code == 303
        page = (await olga.get(url)).text
        close = section(page, "form-close")
        assert "selected" not in close.split('name="outcome"')[1].split("</select>")[0]
        before = events(web, ref)
        response = await post_form(olga, url, f"{url}/decide/close", {"outcome": ""}, "form-close")
        assert response.status_code == 422
        for words in ("choose the outcome", "summary: write what happened",
                      "confirmation: tick the box"):
            assert words in response.text
        response = await post_form(olga, url, f"{url}/decide/close",
                                   {"outcome": "resolved", "summary": "Released."}, "form-close")
        assert response.status_code == 422 and "confirmation: tick the box" in response.text
        assert "summary: write" not in response.text
        assert events(web, ref) == before
        response = await post_form(olga, url, f"{url}/decide/close",
                                   {"outcome": "resolved", "summary": "Released.", "confirm": "yes"},
                                   "form-close")
        assert response.status_code == 303, response.text
    assert events(web, ref)[-1] == "Closed"


async def test_the_liaison_sees_the_letter_and_further_information_is_previewed(web: Web) -> None:  # noqa: F811
    web.stack.start_worker()
    ref = await open_case(web, requested_actions=["mfa"], refused_actions=[], eu_grant=None)
    handle = await to_dispatch(web.stack, ref, ["mfa"])
    url = f"/cases/{ref}"
    async with web.signed_in("lina") as lina:
        page = (await lina.get(url)).text
        preview = row(page, "form-clearance-mfa-preview", "</div>")
        assert "What clearing it sends now" in preview
        assert 'class="subject"' in preview and ref in preview
        assert "mfa desk" in preview and "@" in preview
        assert "letter-text" in preview
        response = await post_form(lina, url, f"{url}/decide/clearance",
                                   {"action": "mfa", "granted": "yes", "reason": "ok"},
                                   "form-clearance-mfa")
        assert response.status_code == 303
    status = await settle(handle, lambda s: s["tracks"]["mfa"]["dispatch"] == "sent", "mfa sent")
    [appeal] = [m for _, _, m in web.stack.sink.messages if m["X-Appeal-Kind"] == "appeal"]
    assert str(appeal["Subject"]) in preview.replace("&#39;", "'").replace("&amp;", "&")
    async with web.signed_in("olga") as olga:
        page = (await olga.get(url)).text
        information = section(page, "form-information")
        assert "Preview what will be sent" in information
        count = len(web.stack.sink.messages)
        response = await post_form(olga, url, f"{url}/preview/information",
                                   {"information": "She was released on bail.", "by_action": "yes",
                                    "send_to": "mfa"}, "form-information")
        assert response.status_code == 200
        shown = row(response.text, "information-preview", "</div>")
        assert "She was released on bail." in shown
        assert status["tracks"]["mfa"]["recipients"][0] in shown
        assert "Send it as shown" in response.text
        assert len(web.stack.sink.messages) == count  # a preview sends nothing
        response = await post_form(olga, url, f"{url}/decide/information",
                                   {"information": "She was released on bail.", "by_action": "yes",
                                    "send_to": "mfa"}, "form-information")
        assert response.status_code == 303
    further = [m for _, _, m in web.stack.sink.messages if m["X-Appeal-Kind"] == "further_information"]
    assert len(further) == 1 and str(further[0]["Subject"]) in shown.replace("&#39;", "'")


async def test_refused_forms_come_back_through_a_redirect_for_their_owner_only(web: Web) -> None:  # noqa: F811
    """Post/redirect/get, errors included: a refused decision answers with a redirect to the case
    page, which shows the form as typed with the error (and its status code) as often as it is
    reloaded, to its owner only; once a form of the page goes through, the old link shows the page
    as it is now. The new-case form does the same."""
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    typed = "Threatened by phone after the hearing"
    async with web.signed_in("olga") as olga, web.signed_in("hana") as hana:
        data = {k: v for k, v in verification_form().items() if k != "probability"}
        data["vulnerabilities"] = typed
        shown = await post_form(olga, url, f"{url}/decide/verification", data, "form-verification")
        [redirect] = shown.history
        location = redirect.headers["location"]
        assert redirect.status_code == 303 and location.startswith(f"{url}?form=")
        assert location.endswith("#form-verification") and DEFENDER_NAME not in location
        link = location.split("#")[0]
        for _ in range(2):  # shown again on reload, with the status of the refusal
            again = await olga.get(link)
            assert again.status_code == 422
            assert "probability: choose a number from 1 to 5" in again.text and typed in again.text
        other = await hana.get(link)  # someone else's link shows the page as it is
        assert other.status_code == 200 and typed not in other.text
        assert "choose a number" not in other.text
        assert events(web, ref)[-1] == "Opened"
        done = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                               "form-verification")
        assert done.status_code == 303 and done.headers["location"] == url
        after = await olga.get(link)  # Back to the refused page: the case as it is now
        assert after.status_code == 200 and typed not in after.text
        assert "was not recorded" not in after.text

        # The new-case form: refused by a redirect too, with every field kept.
        page = await olga.get("/cases/new")
        match = REQUEST_ID.search(page.text)
        assert match is not None
        shown = await olga.post("/cases/new", data={
            "csrf_token": csrf_of(page.text), "request_id": match.group(1),
            "organisation.name": "Observatoire Vrennick", "country": "Kenya"})
        [redirect] = shown.history
        assert redirect.headers["location"].startswith("/cases/new?form=")
        assert redirect.headers["location"].endswith("#error-summary")
        assert shown.status_code == 422 and "Observatoire Vrennick" in shown.text
        assert 'id="error-summary"' in shown.text


async def test_an_officer_reassesses_the_risk_and_confirms_public_actions_after_a_reprisal(
        web: Web) -> None:  # noqa: F811
    web.stack.start_worker()
    ref = await open_case(web)
    url = f"/cases/{ref}"
    async with web.signed_in("olga") as olga:
        response = await post_form(olga, url, f"{url}/decide/verification", verification_form(),
                                   "form-verification")
        assert response.status_code == 303
        page = (await olga.get(url)).text
        assert 'id="form-reassess"' in page and 'id="form-confirm_public"' not in page
        # Re-assessed without a reason: refused, both the reason and nothing else named.
        response = await post_form(olga, url, f"{url}/decide/reassess",
                                   {"probability": "2", "impact": "2"}, "form-reassess")
        assert response.status_code == 422 and "reason: say why the risk is re-assessed" in response.text
        response = await post_form(olga, url, f"{url}/decide/reassess", {
            "probability": "2", "impact": "2", "risk_reason": "Charges dropped"}, "form-reassess")
        assert response.status_code == 303
        assert events(web, ref)[-1] == "RiskReassessed"
        # A check-in reporting a reprisal: the page then asks for the go-ahead.
        response = await post_form(olga, url, f"{url}/decide/checkin", {
            "summary": "Her office was searched", "reprisals": "yes"}, "form-checkin")
        assert response.status_code == 303
        assert events(web, ref)[-2:] == ["DefenderCheckInRecorded", "ReprisalReported"]
        page = (await olga.get(url)).text
        assert 'id="form-confirm_public"' in page and "held after a reprisal" in page
        response = await post_form(olga, url, f"{url}/decide/confirm_public", {},
                                   "form-confirm_public")
        assert response.status_code == 422
        assert "reason: say why" in response.text and "confirmation: tick the box" in response.text
        response = await post_form(olga, url, f"{url}/decide/confirm_public", {
            "reason": "The defender asks us to go on", "confirm": "yes"}, "form-confirm_public")
        assert response.status_code == 303
        assert "PublicActionsResumed" in events(web, ref)
        assert 'id="form-confirm_public"' not in (await olga.get(url)).text
