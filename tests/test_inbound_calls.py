"""Inbound phone calls: a caller dials a verified number, LiveKit's dispatch rule puts
them in a room of their own and dispatches the agent; the call is created once per
room by whichever arrives first, the agent's session request or the SIP participant's
`participant_joined` webhook (DESIGN.md "Phone calls", Inbound). Through the fake
LiveKit's SIP service, the real webhook view and the real agent API."""

from __future__ import annotations

import copy
import json
import logging
import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import F
from django_tasks_db.models import DBTaskResult

from accounts.models import KeyKind, Organization
from accounts.services import api_key_create
from calls.lifecycle import call_transition
from calls.models import Call, CallStatus, LiveKitWebhookEvent
from privacy.erasure import erasure_create, erasure_run
from privacy.models import ErasureStatus
from telephony.models import PhoneNumber
from telephony.numbers import number_masked
from telephony.services import phone_number_verify
from tests.conftest import bearer_client
from tests.factories import PhoneNumberFactory, WorkflowFactory
from tests.livekit_samples import post_webhook
from tests.phone import INBOUND_NUMBER, inbound_trunk
from workflows.demo import DEMO_DEFINITION

CALLER = "+12025550177"
SESSION = "/api/v1/agent/inbound-calls"

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivered(sip_fake) -> list[tuple[str, str]]:
    """The fake LiveKit's webhooks, posted to our view and kept for replaying."""
    kept: list[tuple[str, str]] = []

    def sink(body: str, authorization: str) -> None:
        kept.append((body, authorization))
        sip_fake.webhook_answers.append(post_webhook(body, authorization=authorization).status_code)

    sip_fake.webhook_sink = sink
    return kept


@pytest.fixture
def number(organization, workflow, sip_fake) -> PhoneNumber:
    """A verified number of the organization, reaching its `daily-call` workflow."""
    trunk = inbound_trunk(organization)
    return phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))


def agent_asks(client, room: str, identity: str = f"sip_{CALLER}", **changes):
    body = {
        "room_name": room,
        "participant_identity": identity,
        "phone_number": INBOUND_NUMBER,
        "caller": CALLER,
        **changes,
    }
    return client.post(SESSION, body, format="json")


def call_in(room: str) -> Call:
    (call,) = Call.objects.filter(room_name=room)
    return call


def test_the_webhook_of_the_callers_sip_participant_creates_the_call(
    api, number, sip_fake, delivered
):
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    assert sip_fake.webhook_answers == [200]
    call = call_in(room)
    body = api.get(f"/api/v1/calls/{call.id}").json()
    assert (body["direction"], body["channel"], body["status"]) == ("inbound", "phone", "active")
    assert body["room_name"] == room
    assert body["user_id"] == CALLER
    assert body["user_data"] == {"caller": CALLER, "called": INBOUND_NUMBER}
    assert body["workflow_slug"] == "daily-call"
    assert body["started_at"] is not None
    assert (call.participant_identity, call.sip_trunk_id) == (
        identity,
        number.trunk.livekit_trunk_id,
    )
    assert room.startswith("inbound-_") and not room.startswith("call-")


def test_the_dispatch_rule_sends_the_agent_metadata_naming_the_number(number, sip_fake, delivered):
    room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    ((dispatched_room, agent_name, metadata),) = sip_fake.agent_dispatches
    assert (dispatched_room, agent_name) == (room, settings.LIVEKIT_AGENT_NAME)
    assert json.loads(metadata) == {
        "phone_number": INBOUND_NUMBER,
        "phone_number_id": str(number.id),
    }


def test_the_agents_session_request_creates_the_call_when_it_comes_first(
    agent_api, number, sip_fake
):
    """The agent asks before the webhook arrives (here: none is delivered at all)."""
    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    assert Call.objects.count() == 0

    response = agent_asks(agent_api, room, identity)

    assert response.status_code == 200, response.content
    call = call_in(room)
    session = response.json()
    assert session["call_id"] == str(call.id)
    assert session["room_name"] == room
    assert (session["direction"], session["channel"], session["status"]) == (
        "inbound",
        "phone",
        "active",
    )
    assert session["user_id"] == CALLER
    assert session["user_data"] == {"caller": CALLER, "called": INBOUND_NUMBER}
    assert session["workflow"]["slug"] == "daily-call"
    assert "no-store" in response["Cache-Control"]


def test_the_agents_session_requests_are_not_throttled_at_the_create_rate(
    agent_api, number, sip_fake, settings
):
    """Callers ring whenever they ring: the create rate counts no agent key (and the
    schema documents no 429 here)."""
    sip_fake.webhook_sink = None
    settings.API_CREATE_RATE = "2/minute"
    rooms = [sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER) for _ in range(4)]

    statuses = {agent_asks(agent_api, room, identity).status_code for room, identity in rooms}

    assert statuses == {200}


def test_a_callers_departure_delivered_before_their_join_ends_the_call_it_opens(
    api, agent_api, number, sip_fake
):
    held: list[tuple[str, str]] = []
    sip_fake.webhook_sink = lambda body, authorization: held.append((body, authorization))
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    caller_hangs_up(sip_fake, room, identity)
    (joined, joined_auth), (left, left_auth) = held

    answers = [
        post_webhook(left, authorization=left_auth).status_code,
        post_webhook(joined, authorization=joined_auth).status_code,
    ]

    assert answers == [200, 200]
    body = api.get(f"/api/v1/calls/{call_in(room).id}").json()
    # No agent had joined yet, but the caller left at once: their hang-up
    # (calls.agent_presence.AGENT_NOT_JOINED_AFTER).
    assert (body["status"], body["end_reason"]) == ("completed", "user_hangup")
    late = agent_asks(agent_api, room, identity)
    assert (late.status_code, late.json()["errors"][0]["code"]) == (409, "call_ended")
    assert Call.objects.count() == 1
    assert Organization.objects.get(pk=number.organization_id).open_calls == 0


def test_the_webhook_after_the_agent_finds_the_agents_call(agent_api, number, sip_fake, delivered):
    sink, sip_fake.webhook_sink = sip_fake.webhook_sink, None  # held back: the agent is first
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    call_id = agent_asks(agent_api, room, identity).json()["call_id"]
    sip_fake.webhook_sink = sink

    participant_joined_for(sip_fake, room, identity)

    assert sip_fake.webhook_answers == [200]
    assert [str(c.id) for c in Call.objects.all()] == [call_id]
    assert call_in(room).status == "active"


def caller_hangs_up(sip_fake, room: str, identity: str) -> None:
    from livekit import api as livekit_api

    # LiveKit's participant_left carries the whole participant, its attributes too.
    left = livekit_api.ParticipantInfo(
        identity=identity,
        kind=livekit_api.ParticipantInfo.Kind.SIP,
        disconnect_reason=livekit_api.DisconnectReason.CLIENT_INITIATED,
        attributes={
            "sip.callStatus": "hangup",
            "sip.phoneNumber": CALLER,
            "sip.trunkPhoneNumber": INBOUND_NUMBER,
        },
    )
    sip_fake.webhooks_send("participant_left", room, left)


def caller_erased(organization) -> str:
    """Erase the caller (by their number, the inbound call's user id); its status."""
    key, _ = api_key_create(name="privacy-bot", organization=organization)
    erasure = erasure_create(organization=organization, user_id=CALLER, api_key=key)
    return erasure_run(erasure_id=erasure.pk)


def participant_joined_for(sip_fake, room: str, identity: str) -> None:
    from livekit import api as livekit_api

    sip_fake.webhooks_send(
        "participant_joined",
        room,
        livekit_api.ParticipantInfo(
            identity=identity,
            kind=livekit_api.ParticipantInfo.Kind.SIP,
            attributes={
                "sip.callStatus": "active",
                "sip.phoneNumber": CALLER,
                "sip.trunkPhoneNumber": INBOUND_NUMBER,
            },
        ),
    )


def test_the_agent_after_the_webhook_gets_the_webhooks_call(agent_api, number, sip_fake, delivered):
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    call = call_in(room)

    response = agent_asks(agent_api, room, identity)

    assert response.json()["call_id"] == str(call.id)
    assert Call.objects.count() == 1


def test_a_replayed_webhook_creates_nothing_more(number, sip_fake, delivered):
    room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    ((body, auth),) = delivered

    assert post_webhook(body, authorization=auth).status_code == 200

    assert Call.objects.filter(room_name=room).count() == 1
    assert Call.objects.count() == 1


def agent_joins(sip_fake, room: str) -> None:
    from livekit import api as livekit_api

    agent = livekit_api.ParticipantInfo(
        identity="agent-AJ_inbound1", kind=livekit_api.ParticipantInfo.Kind.AGENT
    )
    sip_fake.webhooks_send("participant_joined", room, agent)


def test_the_caller_hanging_up_ends_the_call_found_by_its_room(number, sip_fake, delivered):
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    agent_joins(sip_fake, room)

    caller_hangs_up(sip_fake, room, identity)

    call = call_in(room)
    assert (call.status, call.end_reason) == ("completed", "user_hangup")


def test_an_unverified_number_has_no_rule_so_no_call(organization, workflow, sip_fake, delivered):
    PhoneNumberFactory(trunk=inbound_trunk(organization), workflow=workflow)

    assert sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER) is None
    assert Call.objects.count() == 0


def test_a_call_that_still_arrives_for_a_deleted_number_is_logged_and_not_created(
    api, agent_api, number, sip_fake, delivered, caplog
):
    """LiveKit routed the call just before the rule went: nobody answers it for us."""
    rule = sip_fake.dispatch_rules[number.livekit_dispatch_rule_id]
    assert api.delete(f"/api/v1/phone-numbers/{number.id}").status_code == 204
    sip_fake.dispatch_rules[rule.sip_dispatch_rule_id] = rule  # still in LiveKit's cache
    caplog.set_level(logging.WARNING)

    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    response = agent_asks(agent_api, room, identity)

    assert sip_fake.webhook_answers == [200]
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "unknown_number"
    assert Call.objects.count() == 0
    # Logged without the caller's number, which the room's name holds (docs/privacy.md).
    assert f"inbound call from {number_masked(CALLER)} to" in caplog.text
    assert CALLER.removeprefix("+") not in caplog.text


def test_another_organizations_agent_key_cannot_open_the_call(outsider, number, sip_fake):
    _, key = api_key_create(name="their-worker", kind=KeyKind.AGENT, organization=outsider)
    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    response = agent_asks(bearer_client(key), room, identity)

    assert response.status_code == 404
    assert Call.objects.count() == 0


def test_another_organizations_agent_key_cannot_read_an_existing_inbound_call(
    outsider, number, sip_fake, delivered
):
    _, key = api_key_create(name="their-worker", kind=KeyKind.AGENT, organization=outsider)
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    assert Call.objects.filter(room_name=room).exists()

    response = agent_asks(bearer_client(key), room, identity)

    assert response.status_code == 404
    assert "api_key" not in response.content.decode()


def test_an_anonymous_caller_is_answered_without_a_caller_number(agent_api, number, sip_fake):
    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller="anonymous-caller-id-x")

    response = agent_asks(agent_api, room, identity, caller="anonymous-caller-id-x")

    assert response.status_code == 200, response.content
    call = call_in(room)
    assert (call.user_id, call.from_number) == ("anonymous-caller-id-x", None)
    assert call.user_data == {"caller": "anonymous-caller-id-x", "called": INBOUND_NUMBER}


def test_a_call_over_the_concurrency_limit_is_created_failed(
    organization, number, sip_fake, delivered
):
    Organization.objects.filter(pk=organization.pk).update(concurrency_limit=0)

    room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    call = call_in(room)
    assert (call.status, call.end_reason) == ("failed", "concurrency_limit")
    organization.refresh_from_db()
    assert organization.open_calls == 0


def test_changing_the_numbers_workflow_affects_only_new_calls(
    organization, number, sip_fake, delivered
):
    first, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    PhoneNumber.objects.filter(pk=number.pk).update(
        workflow=WorkflowFactory(organization=organization, slug="support")
    )

    second, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller="+12025550178")

    assert call_in(first).workflow_slug == "daily-call"
    assert call_in(second).workflow_slug == "support"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_agent_and_the_webhook_racing_make_exactly_one_call(agent_key, number, sip_fake):
    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    bodies: list[tuple[str, str]] = []
    sip_fake.webhook_sink = lambda body, auth: bodies.append((body, auth))
    participant_joined_for(sip_fake, room, identity)
    (body, auth) = bodies[0]
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    answers: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            if n % 2:
                answers.append(post_webhook(body, authorization=auth).status_code)
            else:
                answers.append(agent_asks(bearer_client(agent_key), room, identity).status_code)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors
    assert sorted(answers) == [200] * threads_count
    call = call_in(room)
    assert call.status == "active"
    organization = Organization.objects.get(pk=number.organization_id)
    assert organization.open_calls == 1


def test_prompts_can_greet_the_caller_by_number(agent_api, organization, sip_fake):
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["agents"][0]["greeting"] = "You called from {{ user.caller }}."
    workflow = WorkflowFactory(organization=organization, slug="support", definition=definition)
    trunk = inbound_trunk(organization)
    phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))
    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    session = agent_asks(agent_api, room, identity).json()

    assert session["workflow"]["agents"][0]["greeting"] == f"You called from {CALLER}."


def test_over_the_limit_the_agent_still_gets_the_session_to_say_the_busy_message(
    organization, agent_api, number, sip_fake
):
    """Never silence: the call is refused (`failed`/`concurrency_limit`), but the agent
    gets the workflow's voice and busy message to tell the caller before hanging up."""
    sip_fake.webhook_sink = None
    Organization.objects.filter(pk=organization.pk).update(concurrency_limit=0)
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    response = agent_asks(agent_api, room, identity)

    assert response.status_code == 200, response.content
    session = response.json()
    assert (session["status"], session["end_reason"]) == ("failed", "concurrency_limit")
    assert session["workflow"]["settings"]["busy_message"].startswith("All our lines are busy")
    assert session["workflow"]["agents"][0]["tts"]["provider"] == "cartesia"


def test_a_refused_calls_session_is_gone_a_minute_later_and_never_by_call_id(
    organization, agent_api, number, sip_fake
):
    sip_fake.webhook_sink = None
    Organization.objects.filter(pk=organization.pk).update(concurrency_limit=0)
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    assert agent_asks(agent_api, room, identity).status_code == 200
    call = call_in(room)

    by_id = agent_api.get(f"/api/v1/agent/calls/{call.id}/session")
    Call.objects.filter(pk=call.pk).update(ended_at=F("ended_at") - timedelta(seconds=61))
    later = agent_asks(agent_api, room, identity)

    assert (by_id.status_code, by_id.json()["errors"][0]["code"]) == (409, "call_ended")
    assert (later.status_code, later.json()["errors"][0]["code"]) == (409, "call_ended")


def test_a_refused_calls_room_is_closed_a_minute_later_even_if_no_agent_comes(
    organization, number, sip_fake, delivered, django_capture_on_commit_callbacks
):
    Organization.objects.filter(pk=organization.pk).update(concurrency_limit=0)

    with django_capture_on_commit_callbacks(execute=True):
        room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    (task,) = DBTaskResult.objects.filter(task_path="calls.tasks.call_room_close")
    assert task.args_kwargs["args"] == [str(call_in(room).id)]
    assert task.run_after - call_in(room).ended_at == pytest.approx(
        timedelta(seconds=60), abs=timedelta(seconds=5)
    )


def test_a_late_webhook_or_agent_request_for_an_erased_calls_room_opens_no_second_call(
    organization, agent_api, number, sip_fake, delivered
):
    """The erasure renames the ended call's room (its name holds the caller's number);
    a participant_joined that LiveKit delivers only now (its first delivery failed) or an
    agent's retried request still finds that call, so no phantom call opens."""
    sink, sip_fake.webhook_sink = sip_fake.webhook_sink, None  # the webhook is held back
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    call_id = agent_asks(agent_api, room, identity).json()["call_id"]
    call_transition(call_id=call_id, to_status=CallStatus.COMPLETED, end_reason="user_hangup")
    assert caller_erased(organization) == ErasureStatus.COMPLETED
    assert CALLER not in Call.objects.get(pk=call_id).room_name
    sip_fake.webhook_sink = sink

    participant_joined_for(sip_fake, room, identity)
    late = agent_asks(agent_api, room, identity)

    assert sip_fake.webhook_answers == [200]
    assert (late.status_code, late.json()["errors"][0]["code"]) == (409, "call_ended")
    assert [str(c.id) for c in Call.objects.all()] == [call_id]


def test_a_room_erased_before_a_secret_key_rotation_still_finds_its_call(
    organization, agent_api, number, sip_fake, settings
):
    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    call_id = agent_asks(agent_api, room, identity).json()["call_id"]
    call_transition(call_id=call_id, to_status=CallStatus.COMPLETED, end_reason="user_hangup")
    caller_erased(organization)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY

    late = agent_asks(agent_api, room, identity)

    assert (late.status_code, late.json()["errors"][0]["code"]) == (409, "call_ended")
    assert Call.objects.count() == 1


def test_an_erasure_removes_the_callers_number_from_the_webhook_ledger_too(
    organization, number, sip_fake, delivered
):
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    caller_hangs_up(sip_fake, room, identity)
    assert LiveKitWebhookEvent.objects.filter(room_name=room).count() == 2

    assert caller_erased(organization) == ErasureStatus.COMPLETED

    ledger = list(LiveKitWebhookEvent.objects.values("room_name", "participant_identity"))
    assert ledger == [{"room_name": "", "participant_identity": ""}] * 2


def long_caller_joins(sip_fake, *, identity: str, caller: str) -> None:
    from livekit import api as livekit_api

    sip_fake.webhooks_send(
        "participant_joined",
        "inbound-_long",
        livekit_api.ParticipantInfo(
            identity=identity,
            kind=livekit_api.ParticipantInfo.Kind.SIP,
            attributes={
                "sip.callStatus": "active",
                "sip.phoneNumber": caller,
                "sip.trunkPhoneNumber": INBOUND_NUMBER,
            },
        ),
    )


def test_a_callers_participant_the_call_cannot_store_is_ignored_not_a_500(
    number, sip_fake, delivered, caplog
):
    """An identity beyond its column was a DataError on PostgreSQL: the webhook
    answered 500 (and LiveKit retried it). The agent's session request refuses it too."""
    long_caller_joins(sip_fake, identity="sip_" + "9" * 300, caller=CALLER)

    assert sip_fake.webhook_answers == [200]
    assert not Call.objects.exists()
    assert "inbound call whose participant_identity is beyond" in caplog.text


def test_a_caller_id_too_long_to_keep_is_answered_as_an_unknown_caller(
    number, sip_fake, delivered, caplog
):
    """It was ignored, and nobody answered the caller."""
    long_caller_joins(sip_fake, identity=f"sip_{CALLER}", caller="+1" + "2" * 300)

    assert sip_fake.webhook_answers == [200]
    call = Call.objects.get()
    assert (call.status, call.user_id, call.from_number) == ("active", None, None)
    assert call.user_data == {"caller": "", "called": INBOUND_NUMBER}
    assert "inbound caller id of 302 characters: taken as none" in caplog.text


def test_a_caller_id_with_a_nul_is_kept_without_it(number, sip_fake, delivered):
    """A carrier's caller id with U+0000 made the call's insert a 500 on PostgreSQL;
    then the call was answered as from an unknown caller, as the agent's request was not."""
    long_caller_joins(sip_fake, identity=f"sip_{CALLER}", caller="+1202\x00555")

    assert sip_fake.webhook_answers == [200]
    call = Call.objects.get()
    assert (call.status, call.user_id, call.from_number) == ("active", "+1202555", "+1202555")
    assert call.user_data == {"caller": "+1202555", "called": INBOUND_NUMBER}


def test_the_agent_asking_for_a_caller_whose_id_holds_a_nul_gets_its_session(number, agent_api):
    """It was a 400 (`null_characters_not_allowed`): the agent closed the room and the
    caller, whose carrier sent that id, heard nothing."""
    response = agent_asks(agent_api, "inbound-_nul", caller="+1202\x00555")

    assert response.status_code == 200, response.content
    call = Call.objects.get(pk=response.json()["call_id"])
    assert (call.status, call.user_id, call.from_number) == ("active", "+1202555", "+1202555")
    assert call.user_data == {"caller": "+1202555", "called": INBOUND_NUMBER}


def test_the_agent_asking_for_a_caller_whose_id_is_too_long_to_keep_gets_its_session(
    number, agent_api
):
    response = agent_asks(agent_api, "inbound-_long", caller="+1" + "2" * 300)

    assert response.status_code == 200, response.content
    call = Call.objects.get(pk=response.json()["call_id"])
    assert (call.status, call.user_id) == ("active", None)


def test_a_webhook_livekit_delivers_after_the_erasure_leaves_no_caller_number_in_the_ledger(
    organization, agent_api, number, sip_fake, delivered
):
    """LiveKit retried a webhook whose first delivery failed: recorded after the
    erasure's scrub of the ledger, its row kept the caller's number for a day."""
    sink, sip_fake.webhook_sink = sip_fake.webhook_sink, None  # webhooks held back
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    call_id = agent_asks(agent_api, room, identity).json()["call_id"]
    call_transition(call_id=call_id, to_status=CallStatus.COMPLETED, end_reason="user_hangup")
    assert caller_erased(organization) == ErasureStatus.COMPLETED
    sip_fake.webhook_sink = sink

    # LiveKit retries its participant_left now (its first delivery failed).
    caller_hangs_up(sip_fake, room, identity)

    ledger = list(LiveKitWebhookEvent.objects.values_list("room_name", "participant_identity"))
    assert ledger, "the late webhook was recorded"
    assert not [row for row in ledger if CALLER in row[0] or CALLER in row[1]], ledger


def test_a_webhook_livekit_delivers_after_user_data_retention_leaves_no_caller_number(
    organization, agent_api, number, sip_fake, delivered
):
    import datetime

    from django.utils import timezone

    from accounts.models import Organization
    from privacy.retention import retention_apply

    sink, sip_fake.webhook_sink = sip_fake.webhook_sink, None  # webhooks held back
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    call_id = agent_asks(agent_api, room, identity).json()["call_id"]
    call_transition(call_id=call_id, to_status=CallStatus.COMPLETED, end_reason="user_hangup")
    Organization.objects.filter(pk=organization.pk).update(user_data_retention_days=1)
    assert retention_apply(now=timezone.now() + datetime.timedelta(days=2)).user_data_expired == 1
    sip_fake.webhook_sink = sink

    caller_hangs_up(sip_fake, room, identity)

    ledger = list(LiveKitWebhookEvent.objects.values_list("room_name", "participant_identity"))
    assert ledger, "the late webhook was recorded"
    assert not [row for row in ledger if CALLER in row[0] or CALLER in row[1]], ledger


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_caller_dialing_while_the_numbers_workflow_is_renamed_is_answered(
    agent_api, number, sip_fake
):
    """The number's workflow was read, then looked up again by its slug: renamed in
    between (a PATCH of its slug), it was not found, and the caller was told
    `unknown_number` and hung up on. (The rename commits from the database driver's
    hook, just before the lookup.)"""
    from workflows.services import workflow_patch

    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    def rename_elsewhere() -> None:
        try:
            workflow_patch(workflow=number.workflow, changes={"slug": "daily-call-v2"})
        finally:
            connection.close()

    def before_lookup(execute, sql, params, many, context):
        if "workflows_workflowversion" in sql and not renamed.is_set():
            renamed.set()
            thread = threading.Thread(target=rename_elsewhere)
            thread.start()
            thread.join()
        return execute(sql, params, many, context)

    renamed = threading.Event()
    with connection.execute_wrapper(before_lookup):
        response = agent_asks(agent_api, room, identity)

    assert renamed.is_set()
    assert response.status_code == 200, response.content
    assert response.json()["workflow"]["slug"] == "daily-call-v2"
    assert call_in(room).workflow_slug == "daily-call-v2"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_caller_dialing_as_the_number_moves_to_another_workflow_reaches_that_one(
    agent_api, organization, number, sip_fake
):
    """The number was read, then pointed at another workflow and its old one deleted
    before that workflow was looked up: the caller, whose number reaches a live
    workflow, was told `unknown_number` and hung up on. (The move commits from the
    database driver's hook, just before the lookup.)"""
    from telephony.services import phone_number_update
    from workflows.services import workflow_delete

    WorkflowFactory(organization=organization, slug="support")
    sip_fake.webhook_sink = None
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)

    def move_elsewhere() -> None:
        try:
            old = number.workflow
            phone_number_update(phone_number=number, workflow_slug="support")
            workflow_delete(workflow=old)
        finally:
            connection.close()

    def before_lookup(execute, sql, params, many, context):
        if "workflows_workflowversion" in sql and not moved.is_set():
            moved.set()
            thread = threading.Thread(target=move_elsewhere)
            thread.start()
            thread.join()
        return execute(sql, params, many, context)

    moved = threading.Event()
    with connection.execute_wrapper(before_lookup):
        response = agent_asks(agent_api, room, identity)

    assert moved.is_set()
    assert response.status_code == 200, response.content
    assert call_in(room).workflow_slug == "support"


def test_a_caller_hanging_up_on_the_agent_that_asked_for_their_call_is_a_hang_up(
    agent_api, number, sip_fake, delivered
):
    """The agent connects to the room before it asks for the call: its join's webhook
    finds no call yet, and its asking is what says it is there."""
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    assert agent_asks(agent_api, room, identity).status_code == 200

    caller_hangs_up(sip_fake, room, identity)

    call = call_in(room)
    assert (call.status, call.end_reason) == (CallStatus.COMPLETED, "user_hangup")
