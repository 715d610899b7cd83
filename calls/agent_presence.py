"""Whether the call's voice agent came: its participant joining (LiveKit webhooks, kind
AGENT) or its own reports, and `expire_calls` failing a call no agent joined.

A user who hangs up before any agent joined ends the call `failed`/`agent_not_joined`,
as `expire_calls` does once the agent is overdue (and closes the room, so the user is
not left in silence): a failure of ours, not the user's hang-up.
"""

from __future__ import annotations

import datetime
import uuid

from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce

from calls.lifecycle import EndReason, call_transition
from calls.models import NOT_ENDED_STATUSES, Call, CallStatus, TranscriptEntry, TranscriptRole
from calls.signals import call_events_recorded

AGENT_KIND = "AGENT"


def missing_agent_reason(agent_joined_at: datetime.datetime | None) -> str | None:
    """Why no agent is with the user now (the end reason a hang-up then gets), or None
    when one is."""
    if agent_joined_at is None:
        return EndReason.AGENT_NOT_JOINED
    return None


def _system_line(*, call_id: uuid.UUID, content: str, at: datetime.datetime) -> None:
    """A system line in the transcript (and the live stream); the call's row is locked."""
    line = TranscriptEntry.objects.create(
        call_id=call_id, role=TranscriptRole.SYSTEM, content=content, timestamp=at
    )
    call_events_recorded.send(
        sender=Call, call_id=call_id, lines=[(line.pk, at)], samples=[], handoffs=[]
    )


@transaction.atomic
def call_agent_joined(*, call_id: uuid.UUID, identity: str, at: datetime.datetime) -> None:
    """An agent participant joined the call's room: the agent is there."""
    Call.objects.filter(pk=call_id, status__in=NOT_ENDED_STATUSES).update(
        agent_joined_at=Coalesce("agent_joined_at", Value(at))
    )


def call_agent_seen(*, call_id: uuid.UUID, at: datetime.datetime) -> None:
    """The agent spoke for itself from the room (an inbound call's agent asks for its
    call once connected): there, if nothing said so yet (its join's webhook reached a
    room that had no call yet)."""
    Call.objects.filter(
        pk=call_id, status__in=NOT_ENDED_STATUSES, agent_joined_at__isnull=True
    ).update(agent_joined_at=at)


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
