"""Reading a call's stream feed: events after a position, rendered in the REST API's
shapes (calls.representations)."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

import orjson

from calls import representations
from calls.models import ENDED_STATUSES, Call, MetricSample, TranscriptEntry
from calls.selectors import TRANSCRIPT_COLUMNS
from streams.models import CallEvent, CallEventType

# Events read (and sent) at a time: what one stream holds in memory at most.
PAGE_SIZE = 100


@dataclass(frozen=True)
class StreamEvent:
    """An event as the stream sends it: its id (`seq`), SSE type and JSON `data`; data
    None when the row it refers to is gone (erased, past retention): nothing is sent
    for it, but the stream moves past it."""

    seq: int
    type: str
    data: bytes | None


def call_end_heard_at(*, call: Call) -> datetime.datetime | None:
    """When an ended call's end was recorded (its last status event's writing), or
    `ended_at` if later: the end is stamped with when it happened, which a webhook
    delivered late puts long before a stream can hear of it; the grace for late lines
    counts from the hearing. None for a call not ended."""
    if call.status not in ENDED_STATUSES or call.ended_at is None:
        return None
    written = (
        CallEvent.objects.filter(call_id=call.pk, type=CallEventType.STATUS)
        .order_by("-seq")
        .values_list("created_at", flat=True)
        .first()
    )
    return max(call.ended_at, written) if written is not None else call.ended_at


def call_events_after(
    *, call_id: uuid.UUID | str, after: int, limit: int = PAGE_SIZE
) -> list[StreamEvent]:
    """The call's events numbered after `after`, in order, at most `limit`: one query,
    plus one for the transcript lines and one for the samples they refer to."""
    rows = list(
        CallEvent.objects.filter(call_id=call_id, seq__gt=after)
        .order_by("seq")
        .values_list("seq", "type", "ref_id", "data")[:limit]
    )
    lines = _transcript_lines(call_id, [r[2] for r in rows if r[1] == CallEventType.TRANSCRIPT])
    samples = _samples(call_id, [r[2] for r in rows if r[1] == CallEventType.METRICS])
    events = []
    for seq, type_, ref_id, data in rows:
        if type_ == CallEventType.TRANSCRIPT:
            body = lines.get(ref_id)
        elif type_ == CallEventType.METRICS:
            body = samples.get(ref_id)
        elif type_ == CallEventType.HANDOFF:
            body = orjson.dumps(representations.agent_handoff(data))
        else:
            body = orjson.dumps(representations.call_status_change(call_id, data))
        events.append(StreamEvent(seq=seq, type=type_, data=body))
    return events


def _transcript_lines(call_id: uuid.UUID | str, ids: list[int]) -> dict[int, bytes]:
    if not ids:
        return {}
    rows = TranscriptEntry.objects.filter(call_id=call_id, pk__in=ids).values_list(
        *TRANSCRIPT_COLUMNS
    )
    return {row[0]: representations.transcript_line_json(row) for row in rows}


def _samples(call_id: uuid.UUID | str, ids: list[int]) -> dict[int, bytes]:
    if not ids:
        return {}
    rows = MetricSample.objects.filter(call_id=call_id, pk__in=ids).values(
        "id", *representations.METRIC_SAMPLE_COLUMNS
    )
    return {row.pop("id"): orjson.dumps(representations.metric_sample(row)) for row in rows}
