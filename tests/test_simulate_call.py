from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from calls.models import Call, CallStatus
from tests.factories import CallFactory


def simulate(*args: str, capsys) -> str:
    call_command("simulate_call", *args)
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_it_plays_a_whole_call_visible_in_the_api(api, workflow, capsys):
    call_id = simulate("--org", "acme", capsys=capsys)
    call = api.get(f"/api/v1/calls/{call_id}").json()
    assert call["status"] == "completed"
    assert call["end_reason"] == "user_hangup"
    assert call["agent_history"] == ["greeter-agent", "meal-agent", "feedback-agent"]
    assert call["current_agent"] is None
    metrics = call["metrics"]
    assert (metrics["stt_latency_ms"], metrics["llm_latency_ms"], metrics["tts_latency_ms"]) == (
        round((118 + 124 + 119) / 3),
        round((265 + 301 + 274) / 3),
        round((82 + 88 + 85) / 3),
    )
    assert metrics["total_tokens"] == 1500
    assert metrics["agent_handoffs"] == 2
    assert metrics["latency"]["e2e"]["count"] == 3
    cost = call["cost"]
    assert [line["component"] for line in cost["breakdown"][:5]] == [
        "stt",
        "llm_prompt",
        "llm_cached",
        "llm_completion",
        "tts",
    ]
    assert cost["complete"] is True
    assert float(cost["total_usd"]) >= 0.01  # 41.5 s of nova-3 and 214 Sonic characters
    transcript = api.get(f"/api/v1/calls/{call_id}/transcript").json()
    assert transcript[0]["content"] == "Call started"
    tool_lines = [line for line in transcript if "tool_call" in line]
    assert tool_lines[0]["tool_call"]["name"] == "save_meal"
    assert len(transcript) == 10


def test_it_drives_an_existing_call(workflow, capsys):
    existing = CallFactory(organization=workflow.organization, workflow=workflow)
    assert simulate("--org", "acme", "--call", str(existing.pk), capsys=capsys) == str(existing.pk)
    existing.refresh_from_db()
    assert existing.status == CallStatus.COMPLETED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "nobody"], "No organization"),
        (["--org", "acme", "--workflow", "missing"], "load_demo"),
        (["--org", "acme", "--call", "not-a-uuid"], "No call"),
    ],
)
def test_it_explains_what_is_missing(workflow, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("simulate_call", *args)
    assert Call.objects.count() == 0


def test_an_ended_call_cannot_be_simulated_again(workflow):
    ended = CallFactory(organization=workflow.organization, workflow=workflow, completed=True)
    with pytest.raises(CommandError, match="not connecting"):
        call_command("simulate_call", "--org", "acme", "--call", str(ended.pk))


def test_it_plays_a_whole_outbound_phone_call(api, workflow, capsys):
    call_id = simulate("--org", "acme", "--phone", "+14155550123", capsys=capsys)

    call = api.get(f"/api/v1/calls/{call_id}").json()
    assert (call["channel"], call["direction"]) == ("phone", "outbound")
    assert call["phone_number"] == "+14155550123"
    assert (call["status"], call["end_reason"]) == ("completed", "user_hangup")
    assert call["started_at"] is not None
    assert call["agent_history"] == ["greeter-agent", "meal-agent", "feedback-agent"]


@pytest.mark.parametrize("number", ["+1415555012a", "+19002345678", "+33112"])
def test_it_refuses_a_number_voicecalls_would_not_dial(workflow, number):
    with pytest.raises(CommandError, match="--phone"):
        call_command("simulate_call", "--org", "acme", "--phone", number)
    assert Call.objects.count() == 0


@pytest.fixture
def support_line(organization, sip_fake):
    """A verified number reaching a workflow whose agent may transfer to the front desk."""
    from accounts.models import Organization
    from telephony.services import phone_number_verify
    from tests.factories import PhoneNumberFactory
    from tests.phone import INBOUND_NUMBER, inbound_trunk
    from tests.transfer import PBX, with_transfer_tool
    from workflows.demo import DEMO_DEFINITION
    from workflows.services import workflow_create

    Organization.objects.filter(pk=organization.pk).update(allowed_destination_countries=["US"])
    organization.refresh_from_db()
    support = workflow_create(
        organization=organization,
        slug="support",
        name="Support",
        definition=with_transfer_tool(DEMO_DEFINITION, [PBX]),
    )
    trunk = inbound_trunk(organization)
    phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=support))
    return INBOUND_NUMBER, PBX


def test_it_plays_an_inbound_call_the_agent_transfers(api, support_line, capsys):
    number, desk = support_line

    call_id = simulate("--org", "acme", "--inbound", number, "--transfer", desk, capsys=capsys)

    call = api.get(f"/api/v1/calls/{call_id}").json()
    assert (call["direction"], call["channel"], call["workflow_slug"]) == (
        "inbound",
        "phone",
        "support",
    )
    assert (call["status"], call["end_reason"], call["transfer_destination"]) == (
        "completed",
        "transferred",
        desk,
    )
    assert call["user_data"] == {"caller": "+12025550143", "called": number}
    lines = api.get(f"/api/v1/calls/{call_id}/transcript").json()
    assert lines[-1]["role"] == "system"
    assert lines[-1]["content"] == f"Call transferred to {desk}."


def test_an_inbound_caller_who_is_not_transferred_hangs_up(api, support_line, capsys):
    number, _ = support_line

    call_id = simulate("--org", "acme", "--inbound", number, capsys=capsys)

    call = api.get(f"/api/v1/calls/{call_id}").json()
    assert (call["status"], call["end_reason"]) == ("completed", "user_hangup")


def test_an_inbound_call_to_a_number_that_is_not_verified_is_refused(workflow):
    with pytest.raises(CommandError, match="no verified number"):
        call_command("simulate_call", "--org", "acme", "--inbound", "+14155550140")


def test_a_transfer_to_a_destination_the_workflow_does_not_list_is_refused(support_line):
    number, _ = support_line

    with pytest.raises(CommandError, match="--transfer"):
        call_command(
            "simulate_call", "--org", "acme", "--inbound", number, "--transfer", "+14155550199"
        )


def test_a_refused_transfer_says_why_and_leaves_no_call_open(support_line):
    number, _ = support_line

    with pytest.raises(CommandError) as refused:
        call_command(
            "simulate_call", "--org", "acme", "--inbound", number, "--transfer", "+14155550199"
        )

    # The API's reason as a sentence, not the repr of DRF's ErrorDetail dict.
    assert str(refused.value) == (
        "--transfer: Not a destination of this workflow's transfer tools."
    )
    # The simulated caller hangs up: no call stays `active` against the concurrency limit.
    call = Call.objects.get()
    assert (call.status, call.end_reason) == (CallStatus.COMPLETED, "user_hangup")
