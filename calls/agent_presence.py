"""Whether the call's voice agent is in its room: its participant joining or leaving
(LiveKit webhooks, kind AGENT), and `expire_calls` failing a call no agent joined.

The agent's departure never ends the call (DESIGN.md "Call lifecycle": after a transfer
the agent leaves and the call goes on); one nobody asked for (no transfer or hang-up
requested, no end reported, the room not deleted: its process died) is a system line in
the transcript, and the user's hang-up on the silence then ends the call
`failed`/`agent_lost`. A user who hangs up before any agent joined ends it
`failed`/`agent_not_joined`, as `expire_calls` does once the agent is overdue.
"""

from __future__ import annotations

import datetime
import uuid

from django.db import transaction

from calls.lifecycle import EndReason, call_transition
from calls.models import NOT_ENDED_STATUSES, Call, CallStatus, TranscriptEntry, TranscriptRole
from calls.signals import call_events_recorded

AGENT_KIND = "AGENT"
# An agent leaving for these reasons did not fail the call: the room is being deleted
# or closed (the agent's own hang-up, an API end, expiry), or the agent is still there
# (it reconnected, or moved to another LiveKit node).
_AGENT_DEPARTURES_EXPECTED = frozenset(
    {"ROOM_DELETED", "ROOM_CLOSED", "DUPLICATE_IDENTITY", "MIGRATION"}
)


# A user who leaves sooner than this after joining, no agent there yet, hung up for
# their own reasons (a misdial, a caller still hearing the ring): agents join within a
# few seconds, and only waiting this long in silence is ours to answer for.
AGENT_NOT_JOINED_AFTER = datetime.timedelta(seconds=10)


def missing_agent_reason(
    agent_joined_at: datetime.datetime | None,
    agent_left_at: datetime.datetime | None,
    *,
    started_at: datetime.datetime | None,
    at: datetime.datetime,
) -> str | None:
    """Why no agent is with the user at `at` (the end reason a hang-up then gets), or
    None when one is, or when the user joined too recently to expect one."""
    if agent_joined_at is None:
        if started_at is not None and at - started_at < AGENT_NOT_JOINED_AFTER:
            return None
        return EndReason.AGENT_NOT_JOINED
    if agent_left_at is not None:
        return EndReason.AGENT_LOST
    return None


def _system_line(*, call_id: uuid.UUID, content: str, at: datetime.datetime) -> None:
    """A system line in the transcript (and the live stream); the call's row is locked."""
    line = TranscriptEntry.objects.create(
        call_id=call_id, role=TranscriptRole.SYSTEM, content=content, timestamp=at
    )
    call_events_recorded.send(
        sender=Call, call_id=call_id, lines=[(line.pk, at)], samples=[], handoffs=[]
    )


def _open_locked(call_id: uuid.UUID) -> tuple | None:
    return (
        Call.objects.select_for_update()
        .filter(pk=call_id, status__in=NOT_ENDED_STATUSES)
        .values_list(
            "status",
            "hangup_requested_at",
            "agent_identity",
            "agent_left_at",
            "agent_joined_at",
            "created_at",
        )
        .first()
    )


@transaction.atomic
def call_agent_joined(*, call_id: uuid.UUID, identity: str, at: datetime.datetime) -> None:
    """An agent participant joined the call's room: the agent is there (again)."""
    row = _open_locked(call_id)
    if row is None:
        return  # ended: a late dispatch leaves at once (its session is 409)
    status, _requested, _identity, left_at, joined_at, created_at = row
    # A webhook stamped by LiveKit's clock (behind ours, or a late one's whole second)
    # never puts the agent there before the call existed, nor back before it left.
    at = max(at, left_at or created_at, created_at)
    Call.objects.filter(pk=call_id).update(
        agent_joined_at=joined_at or at, agent_identity=identity, agent_left_at=None
    )
    if left_at is not None and status == CallStatus.ACTIVE:
        _system_line(call_id=call_id, content="An agent joined the call again.", at=at)


def call_agent_seen(*, call_id: uuid.UUID, at: datetime.datetime) -> None:
    """The agent spoke for itself from the room (an inbound call's agent asks for its
    call once connected): there, if nothing said so yet (its join's webhook reached a
    room that had no call yet)."""
    Call.objects.filter(
        pk=call_id, status__in=NOT_ENDED_STATUSES, agent_joined_at__isnull=True
    ).update(agent_joined_at=at)


@transaction.atomic
def call_agent_left(
    *, call_id: uuid.UUID, identity: str, reason: str, at: datetime.datetime
) -> None:
    """An agent participant left the call's room: recorded if nobody asked for it (the
    call goes on: the user's departure ends it)."""
    row = _open_locked(call_id)
    if row is None or reason in _AGENT_DEPARTURES_EXPECTED:
        return
    _status, requested_at, present, left_at, joined_at, created_at = row
    if requested_at is not None or left_at is not None:
        return  # a transfer or a hang-up in flight: the agent leaves as it should
    if present is not None and present != identity:
        return  # another agent (dispatched again) has taken the call over
    # Never before its join (timed by its arrival, or the agent's first report, while
    # a late departure is timed by its whole-second stamp) nor the call's creation.
    at = max(at, joined_at or created_at, created_at)
    # (A departure whose join was lost still says an agent was there.)
    Call.objects.filter(pk=call_id).update(
        agent_joined_at=joined_at or at, agent_left_at=at, agent_identity=None
    )
    _system_line(
        call_id=call_id, content=f"The agent left the call unexpectedly ({reason}).", at=at
    )


@transaction.atomic
def call_agent_overdue(
    *, call_id: uuid.UUID, agent_in_room: bool, at: datetime.datetime, timeout_seconds: int
) -> bool:
    """An active call no agent joined within its bound: `failed`/`agent_not_joined`
    (True), unless LiveKit has an agent in its room (`agent_in_room`: its join's webhook
    was lost) or one joined meanwhile. Under the call's row lock, so an agent's join
    and this failure are one after the other, never both."""
    waiting = Call.objects.select_for_update().filter(
        pk=call_id,
        status=CallStatus.ACTIVE,
        agent_joined_at__isnull=True,
        hangup_requested_at__isnull=True,
    )
    if waiting.values_list("pk", flat=True).first() is None:
        return False
    if agent_in_room:
        Call.objects.filter(pk=call_id).update(agent_joined_at=at)
        return False
    if not call_transition(
        call_id=call_id,
        to_status=CallStatus.FAILED,
        end_reason=EndReason.AGENT_NOT_JOINED,
        at=at,
        only_from={CallStatus.ACTIVE},
    ):
        return False
    _system_line(
        call_id=call_id,
        content=f"No agent joined the call within {timeout_seconds} seconds.",
        at=at,
    )
    return True
