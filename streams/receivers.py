"""The feed's writers: what the calls app announces (calls.signals), numbered and stored
in the transaction of the change, with the call's row locked (streams.feed)."""

from __future__ import annotations

import datetime
from typing import Any

from rest_framework import serializers

from streams.feed import FeedEvent, call_events_append
from streams.models import CallEventType

_iso = serializers.DateTimeField().to_representation


def call_status_changed_receiver(
    signal: object,
    sender: type,
    *,
    call_id: Any,
    from_status: str | None,
    to_status: str,
    end_reason: str | None,
    at: datetime.datetime,
    **kwargs: Any,
) -> None:
    data = {
        "from_status": from_status,
        "to_status": to_status,
        "end_reason": end_reason,
        "at": _iso(at),
    }
    call_events_append(call_id=call_id, events=[FeedEvent(CallEventType.STATUS, data=data)])


def call_events_recorded_receiver(
    signal: object,
    sender: type,
    *,
    call_id: Any,
    lines: list[tuple[int, datetime.datetime]],
    samples: list[tuple[int, datetime.datetime]],
    handoffs: list[dict],
    **kwargs: Any,
) -> None:
    """The batch's new events in time order; at one instant, lines before handoffs
    before samples, lines in arrival order (as GET /transcript orders them)."""
    timed = [(at, 0, pk, FeedEvent(CallEventType.TRANSCRIPT, ref_id=pk)) for pk, at in lines]
    timed += [
        (
            h["timestamp"],
            1,
            0,
            FeedEvent(
                CallEventType.HANDOFF,
                data={
                    "from_agent": h.get("from_agent"),
                    "to_agent": h["to_agent"],
                    "timestamp": _iso(h["timestamp"]),
                },
            ),
        )
        for h in handoffs
    ]
    timed += [(at, 2, pk, FeedEvent(CallEventType.METRICS, ref_id=pk)) for pk, at in samples]
    timed.sort(key=lambda item: item[:3])
    call_events_append(call_id=call_id, events=[event for *_, event in timed])
