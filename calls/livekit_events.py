"""LiveKit's webhook events applied to calls: the user joining starts a call, the
user leaving or the room closing ends it. Each event is applied once (its id is
recorded in the same transaction) and never moves a call backwards."""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from calls.agent_presence import (
    AGENT_KIND,
    call_agent_joined,
    call_agent_left,
    missing_agent_reason,
)
from calls.departures import Outcome, room_finished_outcome, user_departure_outcome
from calls.lifecycle import call_transition, requested_end
from calls.models import (
    ENDED_STATUSES,
    MONITOR_IDENTITY_PREFIX,
    NOT_STARTED_STATUSES,
    USER_IDENTITY_PREFIX,
    Call,
    CallChannel,
    CallStatus,
    LiveKitWebhookEvent,
)
from calls.services import call_room_close_later, call_start_refused, call_transfer_in_flight
from calls.sql import insert_new
from voicecalls import livekit
from voicecalls.livekit import WebhookEvent
from voicecalls.logging import log_context


@dataclass(frozen=True)
class CallRef:
    """The call whose room an event is about, and its end user's identity."""

    id: uuid.UUID
    user_identity: str
    organization_id: uuid.UUID | None = None


def _call_in_room(room_name: str, now: datetime.datetime) -> CallRef | None:
    """The call whose stored room this is (exact name), marked as just heard from: one
    `UPDATE … RETURNING` (PostgreSQL and SQLite ≥ 3.35 alike). It holds the call's row
    for the event's transaction: an agent's join is before a departure's read of its
    presence, or after the end it decides, never between."""
    table = Call._meta.db_table
    last_event_at = Call._meta.get_field("last_event_at").get_db_prep_save(now, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_event_at = %s WHERE room_name = %s"
            " RETURNING id, participant_identity, organization_id",
            [last_event_at, room_name],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    call_id = Call._meta.pk.to_python(row[0])
    organization_id = Call._meta.get_field("organization").target_field.to_python(row[2])
    return CallRef(call_id, row[1] or f"{USER_IDENTITY_PREFIX}{call_id}", organization_id)


def _inbound_call_open(event: WebhookEvent) -> None:
    """A caller's SIP participant joined a room no call has yet: an inbound call to
    one of our numbers, created here unless the agent's session request did first.
    Their departure delivered before their join opens it too, and then ends it: else
    the late join would start a call in a room the caller has left."""
    if event.event not in ("participant_joined", "participant_left"):
        return
    if event.participant_kind != "SIP":
        return
    from telephony.inbound import inbound_call_open

    inbound_call_open(
        room_name=event.room_name,
        participant_identity=event.participant_identity,
        attributes=event.participant_attributes,
    )


def _dialing(channel: str, status: str) -> bool:
    """A phone call whose dial job is (or is about to be) waiting for the dial's result,
    which decides how it ends: while it rings, the callee's SIP participant joins and,
    when the dial fails, leaves again; its departure then is no outcome of its own."""
    return channel == CallChannel.PHONE and status in NOT_STARTED_STATUSES


def _transition_by_state(
    *,
    call_id: uuid.UUID,
    decide: Callable[[str, str | None, str | None], Outcome],
    at: datetime.datetime,
) -> bool:
    """Apply the outcome `decide(status, requested end, why no agent)` picks for the
    call's current state; if the state changed meanwhile, decide again for the new one.
    True if the call moved. A phone call being dialed is left to its dial's result,
    one being transferred to the transfer's (the ledger keeps the event for both)."""
    for _ in range(3):
        row = (
            Call.objects.filter(pk=call_id)
            .values_list(
                "status",
                "hangup_requested_at",
                "channel",
                "end_reason",
                "started_at",
                "agent_joined_at",
                "agent_left_at",
            )
            .first()
        )
        if row is None or row[0] in ENDED_STATUSES or _dialing(row[2], row[0]):
            return False
        status, hangup_requested_at, _channel, end_reason, started_at, *agent = row
        if call_transfer_in_flight(end_reason, hangup_requested_at):
            return False
        requested = requested_end(hangup_requested_at, end_reason)
        no_agent = missing_agent_reason(*agent, started_at=started_at, at=at)
        outcome = decide(status, requested, no_agent)
        if outcome is None:
            return False
        to_status, end_reason = outcome
        if call_transition(
            call_id=call_id, to_status=to_status, end_reason=end_reason, at=at, only_from={status}
        ):
            return True
    return False


def _on_participant_joined(call: CallRef, event: WebhookEvent, at: datetime.datetime) -> None:
    if event.participant_kind == AGENT_KIND:
        # (Only an agent's token, with LiveKit's agent grant, joins as kind AGENT.)
        call_agent_joined(call_id=call.id, identity=event.participant_identity, at=at)
        return
    if event.participant_identity == f"{MONITOR_IDENTITY_PREFIX}{call.id}":
        _ended_room_reopened(call_id=call.id, channel=CallChannel.PHONE)
    if event.participant_identity != call.user_identity:
        return  # the agent, or a phone call's listen-only monitor
    # A phone's SIP participant joins while it still rings: only an answered one
    # (`sip.callStatus` active) starts the call; else the dial's result will. (Only a
    # phone call's callee joins as `user-<id>` of kind SIP: no query needed.)
    if event.participant_kind == "SIP" and (
        event.participant_attributes.get("sip.callStatus") != "active"
    ):
        return
    if call_transition(call_id=call.id, to_status=CallStatus.ACTIVE, at=at):
        return
    # Timed by its arrival it may be past the start delay, yet have happened as
    # early as its stamp (whole seconds): a join stamped in time still starts it.
    if not call_start_refused(call_id=call.id, at=at, earliest=_event_stamp(event)):
        _ended_room_reopened(call_id=call.id, channel=CallChannel.WEB)


def _ended_room_reopened(*, call_id: uuid.UUID, channel: str) -> None:
    """Someone joined the room of a call that has ended: their token (15 minutes)
    outlives it, so LiveKit opened the room anew and nobody else would close it on them
    (a web call's agent dispatched there leaves at once: its session is 409). A phone
    call's room closes only if listeners are all it holds: it may still play an answer,
    e.g. the busy message of a call over the limit."""
    if Call.objects.filter(pk=call_id, channel=channel, status__in=ENDED_STATUSES).exists():
        call_room_close_later(call_id=call_id, unless_attended=channel == CallChannel.PHONE)


# A SIP participant's `sip.callStatus` once its call was answered; a failed dial's stays
# `dialing` or `ringing` (livekit/sip pkg/sip/participant.go: a failed call's status
# sets no attribute).
_SIP_ANSWERED = frozenset({"active", "hangup"})


def _on_participant_left(call: CallRef, event: WebhookEvent, at: datetime.datetime) -> None:
    # The agent participant's own departure never ends the call; the user's does.
    if event.participant_kind == AGENT_KIND:
        call_agent_left(
            call_id=call.id,
            identity=event.participant_identity,
            reason=event.disconnect_reason,
            at=at,
        )
        return
    if event.participant_identity != call.user_identity:
        return
    if (
        event.participant_kind == "SIP"
        and event.disconnect_reason == "CLIENT_INITIATED"
        and event.participant_attributes.get("sip.callStatus") in _SIP_ANSWERED
    ):
        # The callee hung up: it answered, and its departure overtook the dial's answer.
        # Answered now, its departure ends the call below; the answer then finds it
        # ended. (Nothing moves if it is not dialing.) A dial the carrier failed (5xx)
        # leaves CLIENT_INITIATED too (LiveKit keeps no other reason of the SIP
        # bridge's than unavailable and rejected), still dialing or ringing.
        call_transition(
            call_id=call.id, to_status=CallStatus.ACTIVE, at=at, only_from={CallStatus.CONNECTING}
        )
    _user_departure_apply(call_id=call.id, reason=event.disconnect_reason, at=at)


def _user_departure_apply(*, call_id: uuid.UUID, reason: str, at: datetime.datetime) -> None:
    if _transition_by_state(
        call_id=call_id,
        decide=lambda status, requested, no_agent: user_departure_outcome(
            reason=reason, status=status, requested=requested, no_agent=no_agent
        ),
        at=at,
    ):
        # The user left a room the agent may still be in.
        call_room_close_later(call_id=call_id)


def _on_room_finished(call: CallRef, event: WebhookEvent | None, at: datetime.datetime) -> None:
    _transition_by_state(
        call_id=call.id,
        decide=lambda status, requested, no_agent: room_finished_outcome(
            status=status, requested=requested, no_agent=no_agent
        ),
        at=at,
    )


@transaction.atomic
def call_heard_while_dialing(*, call_id: uuid.UUID) -> None:
    """The dial answered: the callee's departure or the room's end heard while it ran
    (left then to the dial's result) ends the call now, as it would have ended it
    active."""
    dialed_at = Call.objects.filter(pk=call_id).values_list("dial_attempted_at", flat=True)
    # What happened before the dial (a monitor's room closing; LiveKit may deliver it
    # during the dial) is no end of this one.
    call_heard_since(call_id=call_id, since=dialed_at.first())


def call_heard_since(*, call_id: uuid.UUID, since: datetime.datetime | None) -> None:
    """Apply the user's departures and the room's end that happened from `since` on,
    left meanwhile to a dial's or a transfer's result (the ledger keeps them). Any such
    webhook held the call's row until it committed, so a result written after reads
    it here."""
    for _, apply in heard_since(call_id=call_id, since=since):
        apply()


def heard_since(
    *, call_id: uuid.UUID, since: datetime.datetime | None
) -> list[tuple[datetime.datetime, Callable[[], None]]]:
    """What `call_heard_since` applies, in the order it happened: when each arrived
    (the server's clock, as the agent's reports are stamped), and how to apply it."""
    call = Call.objects.filter(pk=call_id).values_list("room_name", "participant_identity")
    found = call.first()
    if found is None or since is None:
        return []
    room_name, identity = found
    ref = CallRef(call_id, identity or f"{USER_IDENTITY_PREFIX}{call_id}")
    heard = (
        LiveKitWebhookEvent.objects.filter(
            room_name=room_name,
            event__in=("participant_left", "room_finished"),
            happened_at__gte=since,
        )
        .order_by("happened_at", "id")
        .values_list(
            "event", "participant_identity", "disconnect_reason", "happened_at", "received_at"
        )
    )
    return [
        (arrived, functools.partial(_on_room_finished, ref, None, at))
        if event == "room_finished"
        else (
            arrived,
            functools.partial(_user_departure_apply, call_id=call_id, reason=reason, at=at),
        )
        for event, who, reason, at, arrived in heard
        if event == "room_finished" or who == ref.user_identity
    ]


_WEBHOOK_HANDLERS: dict[str, Callable[[CallRef, WebhookEvent, datetime.datetime], None]] = {
    "participant_joined": _on_participant_joined,
    "participant_left": _on_participant_left,
    "room_finished": _on_room_finished,
}


# Egress (recording) events: about a recording, not the call's state (recordings app).
_EGRESS_EVENTS = frozenset({"egress_started", "egress_updated", "egress_ended"})


def _on_egress(event: WebhookEvent, at: datetime.datetime) -> str:
    from recordings.services import recording_egress_update

    known = recording_egress_update(egress=event.egress, at=at)
    return WebhookResult.HANDLED if known else WebhookResult.UNKNOWN_ROOM


class WebhookResult:
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    UNKNOWN_ROOM = "unknown_room"


def livekit_webhook_receive(*, body: bytes, authorization: str) -> str:
    """Verify a LiveKit webhook (raises `WebhookSignatureError`) and apply it."""
    event = livekit.webhook_event_verify(body=body, authorization=authorization)
    return livekit_webhook_handle(event=event)


@transaction.atomic
def livekit_webhook_handle(*, event: WebhookEvent) -> str:
    """Apply a verified webhook event once: its id is recorded in the same transaction."""
    handler = _WEBHOOK_HANDLERS.get(event.event)
    egress = event.event in _EGRESS_EVENTS and event.egress is not None
    if handler is None and not egress:
        return WebhookResult.IGNORED
    now = timezone.now()
    at = _event_time(event, now)
    if event.id:
        new = insert_new(
            LiveKitWebhookEvent,
            [
                {
                    "event_id": event.id,
                    "event": event.event,
                    "room_name": event.room_name[:200],
                    "participant_identity": event.participant_identity[:200],
                    "disconnect_reason": event.disconnect_reason[:40],
                    "received_at": now,
                    "happened_at": at,
                }
            ],
            unique="event_id",
        )
        if not new:
            return WebhookResult.DUPLICATE
    if egress:
        result = _on_egress(event, at)
        _ledger_forget_if_erased(event)
        return result
    call = _call_in_room(event.room_name, now)
    if call is None:
        _inbound_call_open(event)
        call = _call_in_room(event.room_name, now)
    if call is None:
        _ledger_forget_if_erased(event)
        return WebhookResult.UNKNOWN_ROOM
    with log_context(call_id=call.id, organization_id=call.organization_id):
        handler(call, event, at)
    return WebhookResult.HANDLED


def _ledger_forget_if_erased(event: WebhookEvent) -> None:
    """A late event (LiveKit retried it) of a call erased, or past its user data's
    retention, since: its room name and identity name the caller, and the row just
    recorded keeps neither, as the erasure's scrub of the ledger left the others."""
    from privacy.keys import room_names_erased

    if event.id and Call.objects.filter(room_name__in=room_names_erased(event.room_name)).exists():
        LiveKitWebhookEvent.objects.filter(event_id=event.id).update(
            room_name="", participant_identity=""
        )


# LiveKit stamps an event in whole seconds. Delivered within this of its stamp, an event
# is timed by its arrival (to the millisecond); delivered later (LiveKit retried it,
# or it queued), by the stamp, so a join that came within the connect timeout still
# starts the call and a late departure does not lengthen it.
LATE_DELIVERY = datetime.timedelta(seconds=2)


def _event_time(event: WebhookEvent, now: datetime.datetime) -> datetime.datetime:
    """When the event happened, as well as we know: see LATE_DELIVERY."""
    stamped = _event_stamp(event)
    if stamped is None:
        return now
    return stamped if now - stamped > LATE_DELIVERY else now


def _event_stamp(event: WebhookEvent) -> datetime.datetime | None:
    """LiveKit's stamp (the whole second the event happened in), if it has a valid one."""
    if not event.created_at:
        return None
    try:
        return datetime.datetime.fromtimestamp(event.created_at, tz=datetime.UTC)
    except (ValueError, OverflowError, OSError):  # an int64 beyond any date
        return None
