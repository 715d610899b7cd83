"""LiveKit's webhook events applied to calls: the user joining starts a call, the
user leaving or the room closing ends it. Each event is applied once (its id is
recorded in the same transaction) and never moves a call backwards."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from calls.lifecycle import EndReason, call_transition
from calls.models import (
    ENDED_STATUSES,
    ROOM_PREFIX,
    USER_IDENTITY_PREFIX,
    Call,
    CallChannel,
    CallStatus,
    LiveKitWebhookEvent,
)
from calls.services import call_room_close_later
from calls.sql import insert_new
from voicecalls import livekit
from voicecalls.livekit import WebhookEvent


def _call_id_from_room(room_name: str) -> uuid.UUID | None:
    """The call whose room this is: only the exact name we gave it (`call-<uuid>`, the
    uuid in its canonical lowercase, dashed form) matches."""
    if not room_name.startswith(ROOM_PREFIX):
        return None
    try:
        call_id = uuid.UUID(room_name.removeprefix(ROOM_PREFIX))
    except ValueError:
        return None
    return call_id if room_name == f"{ROOM_PREFIX}{call_id}" else None


def _is_user(call_id: uuid.UUID, identity: str) -> bool:
    return identity == f"{USER_IDENTITY_PREFIX}{call_id}"


# A participant_left for the user with these reasons does not mean the user left:
# DUPLICATE_IDENTITY — the same user joined again (new tab, reconnect) and the older
# session was closed; MIGRATION — the session moved to another LiveKit node.
_USER_STILL_THERE = frozenset({"DUPLICATE_IDENTITY", "MIGRATION"})

Outcome = tuple[str, str] | None  # (to_status, end_reason), or None: no change


def _user_departure_outcome(*, reason: str, status: str, hangup_requested: bool) -> Outcome:
    """How the end user's departure ends the call, by LiveKit's DisconnectReason."""
    if reason in _USER_STILL_THERE:
        return None
    started = status == CallStatus.ACTIVE
    if reason == "CLIENT_INITIATED":
        return CallStatus.COMPLETED, EndReason.USER_HANGUP
    if reason == "ROOM_DELETED":
        # We delete rooms on API hang-ups (recorded first); otherwise the agent did.
        cause = EndReason.API_REQUEST if hangup_requested else EndReason.AGENT_HANGUP
        return CallStatus.COMPLETED, cause
    if reason == "AGENT_ERROR":
        return CallStatus.FAILED, EndReason.AGENT_ERROR
    if reason == "JOIN_FAILURE" and not started:
        return CallStatus.FAILED, EndReason.JOIN_FAILURE
    # Any other reason is a dropped connection. A call we never saw start (its
    # participant_joined was lost) cannot be `disconnected`: it failed to connect.
    return (CallStatus.DISCONNECTED if started else CallStatus.FAILED), EndReason.CONNECTION_LOST


def _room_finished_outcome(*, status: str, hangup_requested: bool) -> Outcome:
    """The room closed while the call was not ended (its user's departure was lost,
    or nobody ever joined): completed if it ran, else failed to connect."""
    if hangup_requested:
        return CallStatus.COMPLETED, EndReason.API_REQUEST
    if status == CallStatus.ACTIVE:
        return CallStatus.COMPLETED, EndReason.ROOM_CLOSED
    return CallStatus.FAILED, EndReason.ROOM_CLOSED


def _dialing(channel: str, status: str) -> bool:
    """A phone call whose dial job is (or is about to be) waiting for the dial's result,
    which decides how it ends: while it rings, the callee's SIP participant joins and,
    when the dial fails, leaves again; its departure then is no outcome of its own."""
    return channel == CallChannel.PHONE and status in (CallStatus.PENDING, CallStatus.CONNECTING)


def _transition_by_state(
    *, call_id: uuid.UUID, decide: Callable[[str, bool], Outcome], at: datetime.datetime
) -> bool:
    """Apply the outcome `decide(status, hangup_requested)` picks for the call's
    current state; if the state changed meanwhile, decide again for the new one.
    True if the call moved. A phone call being dialed is left to its dial's result."""
    for _ in range(3):
        row = (
            Call.objects.filter(pk=call_id)
            .values_list("status", "hangup_requested_at", "channel")
            .first()
        )
        if row is None or row[0] in ENDED_STATUSES or _dialing(row[2], row[0]):
            return False
        status, hangup_requested_at, _channel = row
        outcome = decide(status, hangup_requested_at is not None)
        if outcome is None:
            return False
        to_status, end_reason = outcome
        if call_transition(
            call_id=call_id, to_status=to_status, end_reason=end_reason, at=at, only_from={status}
        ):
            return True
    return False


def _on_participant_joined(call_id: uuid.UUID, event: WebhookEvent, at: datetime.datetime) -> None:
    if not _is_user(call_id, event.participant_identity):
        return  # the agent, or a phone call's listen-only monitor
    # A phone's SIP participant joins while it still rings: only an answered one
    # (`sip.callStatus` active) starts the call; else the dial's result will. (Only a
    # phone call's callee joins as `user-<id>` of kind SIP: no query needed.)
    if event.participant_kind == "SIP" and (
        event.participant_attributes.get("sip.callStatus") != "active"
    ):
        return
    call_transition(call_id=call_id, to_status=CallStatus.ACTIVE, at=at)


def _on_participant_left(call_id: uuid.UUID, event: WebhookEvent, at: datetime.datetime) -> None:
    # The agent participant's own departure never ends the call; the user's does.
    if not _is_user(call_id, event.participant_identity):
        return
    if _transition_by_state(
        call_id=call_id,
        decide=lambda status, hangup: _user_departure_outcome(
            reason=event.disconnect_reason, status=status, hangup_requested=hangup
        ),
        at=at,
    ):
        # The user left a room the agent may still be in.
        call_room_close_later(call_id=call_id)


def _on_room_finished(call_id: uuid.UUID, event: WebhookEvent, at: datetime.datetime) -> None:
    _transition_by_state(
        call_id=call_id,
        decide=lambda status, hangup: _room_finished_outcome(
            status=status, hangup_requested=hangup
        ),
        at=at,
    )


_WEBHOOK_HANDLERS: dict[str, Callable[[uuid.UUID, WebhookEvent, datetime.datetime], None]] = {
    "participant_joined": _on_participant_joined,
    "participant_left": _on_participant_left,
    "room_finished": _on_room_finished,
}


class WebhookResult:
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    UNKNOWN_ROOM = "unknown_room"


def livekit_webhook_receive(*, body: str, authorization: str) -> str:
    """Verify a LiveKit webhook (raises `WebhookSignatureError`) and apply it."""
    event = livekit.webhook_event_verify(body=body, authorization=authorization)
    return livekit_webhook_handle(event=event)


@transaction.atomic
def livekit_webhook_handle(*, event: WebhookEvent) -> str:
    """Apply a verified webhook event once: its id is recorded in the same transaction."""
    handler = _WEBHOOK_HANDLERS.get(event.event)
    if handler is None:
        return WebhookResult.IGNORED
    if event.id:
        new = insert_new(
            LiveKitWebhookEvent,
            [
                {
                    "event_id": event.id,
                    "event": event.event,
                    "room_name": event.room_name[:200],
                    "participant_identity": event.participant_identity[:200],
                    "received_at": timezone.now(),
                }
            ],
            unique="event_id",
        )
        if not new:
            return WebhookResult.DUPLICATE
    call_id = _call_id_from_room(event.room_name)
    now = timezone.now()
    if call_id is None or not Call.objects.filter(pk=call_id).update(last_event_at=now):
        return WebhookResult.UNKNOWN_ROOM
    handler(call_id, event, now)
    return WebhookResult.HANDLED
