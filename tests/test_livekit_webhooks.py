from __future__ import annotations

import datetime
import json
import time

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calls.models import CallStatus, LiveKitWebhookEvent
from tests.factories import CallFactory
from tests.livekit_samples import post_webhook, send, sign, webhook_body

S = CallStatus


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow)


@pytest.fixture
def active_call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow, active=True)


def _state(call) -> tuple:
    call.refresh_from_db()
    return (call.status, call.end_reason, call.started_at, call.ended_at, call.agent_history)


def test_the_user_joining_makes_the_call_active(call):
    response = send("participant_joined", call.pk)
    assert response.status_code == 200
    assert response.json() == {"result": "handled"}
    call.refresh_from_db()
    assert call.status == S.ACTIVE
    assert call.started_at is not None
    assert call.agent_history == ["greeter-agent"]
    assert call.current_agent == "greeter-agent"
    assert call.last_event_at is not None


def test_a_join_within_the_connect_timeout_delivered_after_it_still_starts_the_call(workflow):
    """LiveKit retried it (our first answer failed): it is timed by LiveKit's stamp."""
    now = timezone.now()
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        connect_timeout_seconds=60,
        created_at=now - datetime.timedelta(seconds=70),
    )
    joined = int(now.timestamp()) - 20

    assert send("participant_joined", call.pk, created_at=joined).json() == {"result": "handled"}

    call.refresh_from_db()
    assert call.status == S.ACTIVE
    assert call.started_at == datetime.datetime.fromtimestamp(joined, tz=datetime.UTC)


def test_a_departure_delivered_late_ends_the_call_when_it_happened(active_call):
    left = int(timezone.now().timestamp()) - 30
    started = datetime.datetime.fromtimestamp(left - 60, tz=datetime.UTC)
    active_call.started_at = active_call.agent_joined_at = started
    active_call.save()

    send("participant_left", active_call.pk, reason="CLIENT_INITIATED", created_at=left)

    active_call.refresh_from_db()
    assert (active_call.status, active_call.end_reason) == (S.COMPLETED, "user_hangup")
    assert active_call.ended_at == datetime.datetime.fromtimestamp(left, tz=datetime.UTC)


@pytest.mark.parametrize("created_at", ["99999999999999", "-99999999999999"])
def test_a_signed_event_stamped_beyond_any_date_is_timed_by_its_arrival(active_call, created_at):
    """createdAt is an int64: a stamp no datetime holds was a ValueError, a 500."""
    payload = json.loads(webhook_body("participant_left", call_id=active_call.pk))
    payload["createdAt"] = created_at
    before = timezone.now()

    response = post_webhook(json.dumps(payload))

    assert response.status_code == 200
    active_call.refresh_from_db()
    assert active_call.status == S.COMPLETED
    assert before <= active_call.ended_at <= timezone.now()


def test_an_event_delivered_at_once_is_timed_by_its_arrival_to_the_millisecond(call):
    """LiveKit's stamp is whole seconds; the arrival is the closer time."""
    before = timezone.now()

    send("participant_joined", call.pk)

    call.refresh_from_db()
    assert before <= call.started_at <= timezone.now()


def test_the_agent_joining_does_not_start_the_call(call):
    assert send("participant_joined_agent", call.pk).status_code == 200
    call.refresh_from_db()
    assert call.status == S.CONNECTING
    assert call.last_event_at is not None


@pytest.mark.parametrize(
    ("authorization", "why"),
    [
        ("", "unsigned"),
        ("not-a-jwt", "garbage"),
        ("other-key", "signed by another key and secret"),
        ("tampered", "signature over another body"),
    ],
)
def test_an_unsigned_or_forged_webhook_is_401_and_changes_nothing(call, authorization, why):
    body = webhook_body("participant_joined", call_id=call.pk)
    if authorization == "other-key":
        authorization = sign(body, key="devkey", secret="another-secret-entirely")
    elif authorization == "tampered":
        authorization = sign(body.replace("John Doe", "Jane Doe"))
    before = _state(call)
    response = post_webhook(body, authorization=authorization)
    assert response.status_code == 401, why
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "authentication_failed",
                "detail": "Invalid or missing webhook signature.",
                "attr": None,
            }
        ],
    }
    assert _state(call) == before
    assert LiveKitWebhookEvent.objects.count() == 0


# A LiveKit event with a byte no UTF-8 text holds (\xff).
_NOT_UTF8 = b'{"event": "room_finished", "id": "EV_\xff", "room": {"name": "x"}}'


@pytest.mark.parametrize(
    "authorization",
    ["", "not-a-jwt", "other-key", "signature over another body"],
)
def test_an_unsigned_body_that_is_not_utf8_is_401_like_any_unsigned_one(db, authorization):
    """The signature is checked before the body is read, whatever its bytes (DESIGN.md:
    unsigned or tampered → 401); it was a 400 saying what was wrong with the body."""
    if authorization == "other-key":
        authorization = sign(_NOT_UTF8, key="devkey", secret="another-secret-entirely")
    elif authorization == "signature over another body":
        authorization = sign(_NOT_UTF8.replace(b"\xff", b"\xfe"))

    response = post_webhook(_NOT_UTF8, authorization=authorization)

    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "authentication_failed"
    assert LiveKitWebhookEvent.objects.count() == 0


def test_a_signed_body_that_is_not_utf8_is_400(db):
    response = post_webhook(_NOT_UTF8)

    assert response.status_code == 400
    assert response.json()["errors"][0]["detail"] == "The body is not UTF-8."
    assert LiveKitWebhookEvent.objects.count() == 0


def test_a_webhook_signed_for_the_right_body_by_a_bearer_header_is_accepted(call):
    body = webhook_body("participant_joined", call_id=call.pk)
    assert post_webhook(body, authorization=f"Bearer {sign(body)}").status_code == 200


def test_get_is_405(client):
    assert client.get("/api/v1/webhooks/livekit").status_code == 405


NEW_KEY, NEW_SECRET = "APInewkey", "the-new-livekit-secret-" + "n" * 20


def test_during_a_livekit_key_rotation_webhooks_signed_by_either_key_are_accepted(
    workflow, settings
):
    """LiveKit signs its webhooks with the one key of its `webhook.api_key`: between
    deploying the new key here and switching LiveKit's, or the other way round, its
    webhooks come signed by the key this deployment no longer uses (docs/key-rotation.md)."""
    old_key, old_secret = settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET
    settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET = NEW_KEY, NEW_SECRET
    settings.LIVEKIT_API_KEY_FALLBACKS = {old_key: old_secret}
    by_old = CallFactory(organization=workflow.organization, workflow=workflow)
    by_new = CallFactory(organization=workflow.organization, workflow=workflow)
    old_body = webhook_body("participant_joined", call_id=by_old.pk)
    new_body = webhook_body("participant_joined", call_id=by_new.pk)

    old = post_webhook(old_body, authorization=sign(old_body, key=old_key, secret=old_secret))
    new = post_webhook(new_body)

    assert [old.json(), new.json()] == [{"result": "handled"}] * 2
    by_old.refresh_from_db()
    assert by_old.status == S.ACTIVE


@pytest.mark.parametrize(
    ("key", "secret"),
    [("devkey", "secret"), ("APIoldkey", "a-forged-secret"), (NEW_KEY, "a-forged-secret")],
)
def test_a_webhook_by_a_key_no_longer_or_never_listed_is_401(call, settings, key, secret):
    settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET = NEW_KEY, NEW_SECRET
    settings.LIVEKIT_API_KEY_FALLBACKS = {"APIoldkey": "the-old-livekit-secret"}
    body = webhook_body("participant_joined", call_id=call.pk)

    response = post_webhook(body, authorization=sign(body, key=key, secret=secret))

    assert response.status_code == 401
    assert LiveKitWebhookEvent.objects.count() == 0


def test_a_replayed_webhook_changes_nothing(active_call):
    body = webhook_body("participant_left", call_id=active_call.pk, reason="CLIENT_INITIATED")
    assert post_webhook(body).json() == {"result": "handled"}
    after_first = _state(active_call)
    replay = post_webhook(body)
    assert replay.status_code == 200
    assert replay.json() == {"result": "duplicate"}
    assert _state(active_call) == after_first
    assert LiveKitWebhookEvent.objects.count() == 1


def test_a_replayed_join_does_not_restart_the_call(call):
    body = webhook_body("participant_joined", call_id=call.pk)
    post_webhook(body)
    first = _state(call)
    time.sleep(0.01)
    # The same join under a new id (LiveKit resends after a lost ack) changes nothing either.
    send("participant_joined", call.pk)
    assert _state(call) == first


@pytest.mark.parametrize(
    ("reason", "hangup_requested", "status", "end_reason"),
    [
        ("CLIENT_INITIATED", False, S.COMPLETED, "user_hangup"),
        ("ROOM_DELETED", True, S.COMPLETED, "api_request"),
        ("ROOM_DELETED", False, S.COMPLETED, "agent_hangup"),
        ("AGENT_ERROR", False, S.FAILED, "agent_error"),
        ("CONNECTION_TIMEOUT", False, S.DISCONNECTED, "connection_lost"),
        ("SIGNAL_CLOSE", False, S.DISCONNECTED, "connection_lost"),
        ("MEDIA_FAILURE", False, S.DISCONNECTED, "connection_lost"),
        ("SERVER_SHUTDOWN", False, S.DISCONNECTED, "connection_lost"),
        ("UNKNOWN_REASON", False, S.DISCONNECTED, "connection_lost"),
        ("PARTICIPANT_REMOVED", False, S.DISCONNECTED, "connection_lost"),
        ("JOIN_FAILURE", False, S.DISCONNECTED, "connection_lost"),
    ],
)
def test_the_users_departure_ends_an_active_call_by_its_reason(
    active_call, reason, hangup_requested, status, end_reason
):
    if hangup_requested:
        active_call.hangup_requested_at = timezone.now()
        active_call.end_reason = "api_request"
        active_call.save()
    send("participant_left", active_call.pk, reason=reason)
    active_call.refresh_from_db()
    assert (active_call.status, active_call.end_reason) == (status, end_reason)
    assert active_call.ended_at is not None
    assert active_call.current_agent is None


def test_an_absent_disconnect_reason_is_unknown_and_a_lost_connection(active_call):
    body = webhook_body("participant_left", call_id=active_call.pk)
    body = body.replace('"disconnectReason": "CLIENT_INITIATED", ', "").replace(
        ', "disconnectReason": "CLIENT_INITIATED"', ""
    )
    assert "disconnectReason" not in body
    post_webhook(body)
    active_call.refresh_from_db()
    assert (active_call.status, active_call.end_reason) == (S.DISCONNECTED, "connection_lost")


@pytest.mark.parametrize(
    ("reason", "status", "end_reason"),
    [
        ("JOIN_FAILURE", S.FAILED, "join_failure"),
        ("CLIENT_INITIATED", S.COMPLETED, "user_hangup"),
        ("CONNECTION_TIMEOUT", S.FAILED, "connection_lost"),
    ],
)
def test_the_user_leaving_before_the_call_started(call, reason, status, end_reason):
    send("participant_left", call.pk, reason=reason)
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (status, end_reason)
    assert call.started_at is None


@pytest.mark.parametrize("reason", ["DUPLICATE_IDENTITY", "MIGRATION"])
def test_a_superseded_user_session_does_not_end_the_call(active_call, reason):
    send("participant_left", active_call.pk, reason=reason)
    active_call.refresh_from_db()
    assert active_call.status == S.ACTIVE


@pytest.mark.parametrize("reason", ["CLIENT_INITIATED", "ROOM_DELETED", "AGENT_ERROR"])
def test_the_agents_own_departure_never_ends_the_call(active_call, reason):
    send(
        "participant_left",
        active_call.pk,
        identity="agent-AJ_Wd8fTq2Rk4sE",
        reason=reason,
    )
    active_call.refresh_from_db()
    assert active_call.status == S.ACTIVE


@pytest.mark.parametrize(
    ("status", "hangup_requested", "to_status", "end_reason"),
    [
        (S.ACTIVE, False, S.COMPLETED, "room_closed"),
        (S.ACTIVE, True, S.COMPLETED, "api_request"),
        (S.CONNECTING, False, S.FAILED, "room_closed"),
        (S.CONNECTING, True, S.COMPLETED, "api_request"),
    ],
)
def test_room_finished_ends_a_call_still_open(
    workflow, status, hangup_requested, to_status, end_reason
):
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        active=status == S.ACTIVE,
        hangup_requested_at=timezone.now() if hangup_requested else None,
    )
    send("room_finished", call.pk)
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (to_status, end_reason)


def test_room_finished_after_the_user_left_keeps_the_precise_reason(active_call):
    send("participant_left", active_call.pk, reason="CLIENT_INITIATED")
    send("room_finished", active_call.pk)
    active_call.refresh_from_db()
    assert (active_call.status, active_call.end_reason) == (S.COMPLETED, "user_hangup")


def test_a_join_after_room_finished_does_not_reopen_the_call(call):
    send("room_finished", call.pk)
    ended = _state(call)
    send("participant_joined", call.pk)
    assert _state(call) == ended
    assert ended[0] == S.FAILED


def test_late_events_never_move_an_ended_call(workflow):
    call = CallFactory(organization=workflow.organization, workflow=workflow, completed=True)
    before = _state(call)
    for name, reason in [
        ("participant_joined", None),
        ("participant_left", "CONNECTION_TIMEOUT"),
        ("room_finished", None),
    ]:
        send(name, call.pk, reason=reason)
    assert _state(call) == before


@pytest.mark.parametrize("room", ["call-not-a-uuid", "some-other-room", f"call-{'0' * 32}"])
def test_events_for_unknown_rooms_are_acknowledged(db, room):
    body = webhook_body("participant_joined", call_id="x").replace("call-x", room)
    response = post_webhook(body)
    assert response.status_code == 200
    assert response.json() == {"result": "unknown_room"}


def test_other_events_are_acknowledged_and_not_recorded(call):
    response = send("track_published", call.pk)
    assert response.status_code == 200
    assert response.json() == {"result": "ignored"}
    assert LiveKitWebhookEvent.objects.count() == 0
    call.refresh_from_db()
    assert call.status == S.CONNECTING


def test_a_webhook_takes_few_queries(call, is_postgres, django_assert_max_num_queries):
    body = webhook_body("participant_joined", call_id=call.pk)
    # Beyond 7: when a call becomes active, the recordings app reads its workflow's
    # `recording` setting; the status change's event in the live stream's feed is one
    # statement on PostgreSQL, an UPDATE and an INSERT on SQLite (streams.feed).
    with django_assert_max_num_queries(8 + (1 if is_postgres else 2)):
        assert post_webhook(body).status_code == 200


@pytest.mark.parametrize(
    "room",
    [
        "call-{upper}",
        "call-{dashless}",
        "call-{{{lower}}}",
        "call-urn:uuid:{lower}",
        " call-{lower}",
    ],
)
def test_only_the_calls_exact_room_name_reaches_it(active_call, room):
    call_id = active_call.pk
    room = room.format(upper=str(call_id).upper(), dashless=call_id.hex, lower=call_id)
    body = webhook_body("room_finished", call_id=call_id).replace(f"call-{call_id}", room)
    before = _state(active_call)
    response = post_webhook(body)
    assert response.json() == {"result": "unknown_room"}
    assert _state(active_call) == before


@pytest.mark.parametrize("bad", ["nul \x00 inside", "lone \ud800 surrogate"])
@pytest.mark.parametrize("field", ["id", "room", "identity"])
def test_a_signed_webhook_with_text_the_database_cannot_store_is_400(call, field, bad):
    payload = json.loads(webhook_body("participant_joined", call_id=call.pk))
    if field == "id":
        payload["id"] = f"EV_{bad}"
    elif field == "room":
        payload["room"]["name"] = f"call-{call.pk}{bad}"
    else:
        payload["participant"]["identity"] = f"user-{call.pk}{bad}"
    before = _state(call)
    response = post_webhook(json.dumps(payload))
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"
    assert _state(call) == before
    assert LiveKitWebhookEvent.objects.count() == 0


def test_a_signed_webhook_with_an_overlong_id_is_400(call):
    payload = json.loads(webhook_body("participant_joined", call_id=call.pk))
    payload["id"] = "EV_" + "x" * 200
    assert post_webhook(json.dumps(payload)).status_code == 400
    assert LiveKitWebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    ['{"event": 5}', "[1, 2]", "{not json", '{"room": {"name": ["a"]}}'],
)
def test_a_signed_body_that_is_no_event_is_400(db, body):
    response = post_webhook(body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["detail"] == "The body is not a LiveKit webhook event."


_texts = st.text(max_size=12) | st.sampled_from(["", "\x00", "\ud800", "x" * 300])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_texts, children, max_size=3),
    max_leaves=10,
)
_webhook_like = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["participant_joined", "participant_left", "room_finished"])
        | _texts,
        "id": _texts,
    },
    optional={
        "room": st.fixed_dictionaries({"name": _texts}, optional={"sid": _json_values}),
        "participant": st.fixed_dictionaries(
            {"identity": _texts},
            optional={"kind": _json_values, "disconnectReason": _json_values},
        ),
        "createdAt": _json_values,
    },
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=_webhook_like | _json_values)
def test_no_signed_body_makes_a_server_error(call, body):
    """Any JSON signed with our key: handled, ignored or 400, never a 5xx (on PostgreSQL
    too, where text with U+0000 or lone surrogates fails inside the database)."""
    text = json.dumps(body)
    with transaction.atomic():
        response = post_webhook(text)
        transaction.set_rollback(True)
    assert response.status_code in (200, 400), (response.status_code, text)
