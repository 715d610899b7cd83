"""Writing a call's live-stream feed: each event gets the next number of its call, in
the transaction of the write that caused it.

The number comes from `Call.stream_seq`, moved by an UPDATE of the call's row: the row
lock it takes (already held by agent event batches and status transitions) lasts until
commit, so a later transaction of the same call waits for this one and numbers after
it. Numbers are therefore handed out in commit order, and a reader that has seen
number n has seen every number below it: a stream resumed from its Last-Event-ID
never skips one.

On PostgreSQL the counter, the rows and a NOTIFY on the call's own channel are one
statement (the write paths are benchmarked: one statement more, no round trip more).
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from calls.models import Call
from calls.sql import insert_new
from streams.models import CallEvent
from voicecalls.db import bound_cursor


@dataclass(frozen=True)
class FeedEvent:
    """One event to number: a transcript line or metric sample by its row id, or a
    status change or handoff by its few fields."""

    type: str
    ref_id: int | None = None
    data: dict | None = None


# The payload of a NOTIFY that says a call's words were erased (others carry a number).
SCRUBBED = "scrubbed"


def channel_name(call_id: uuid.UUID | str) -> str:
    """The call's NOTIFY channel (an identifier under PostgreSQL's 63 bytes)."""
    return f"call_{uuid.UUID(str(call_id)).hex}"


_APPEND_POSTGRES = """
WITH counter AS (
    UPDATE calls_call SET stream_seq = stream_seq + %s WHERE id = %s RETURNING stream_seq
), added AS (
    INSERT INTO streams_callevent (call_id, seq, type, ref_id, data, created_at)
    SELECT %s, counter.stream_seq - %s + e.ord, e.type, e.ref_id, e.data::jsonb, %s
    FROM counter,
        unnest(%b::text[], %b::bigint[], %b::text[]) WITH ORDINALITY AS e(type, ref_id, data, ord)
    RETURNING seq
)
SELECT pg_notify(%s, last.seq::text)
FROM (SELECT max(seq) AS seq FROM added) AS last WHERE last.seq IS NOT NULL
"""


def call_events_append(
    *, call_id: uuid.UUID | str, events: Sequence[FeedEvent], now: datetime.datetime | None = None
) -> None:
    """Number `events` after the call's last and store them, in this order. Call it
    inside the transaction that writes what they describe (it locks the call's row)."""
    if not events:
        return
    now = now or timezone.now()
    call_id = uuid.UUID(str(call_id))
    n = len(events)
    types = [e.type for e in events]
    refs = [e.ref_id for e in events]
    datas = [None if e.data is None else json.dumps(e.data) for e in events]
    if connection.vendor == "postgresql":
        params = [n, call_id, call_id, n, now, types, refs, datas, channel_name(call_id)]
        with bound_cursor() as cursor:
            cursor.execute(_APPEND_POSTGRES, params)
        return
    # SQLite: one writer at a time (IMMEDIATE transactions), so commit order is given;
    # the streams poll the counter (streams.hub).
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE calls_call SET stream_seq = stream_seq + %s WHERE id = %s RETURNING stream_seq",
            [n, Call._meta.pk.get_db_prep_value(call_id, connection)],
        )
        row = cursor.fetchone()
    if row is None:
        return
    first = row[0] - n + 1
    rows = [
        {"call": call_id, "seq": first + i, "type": e.type, "ref_id": e.ref_id, "data": e.data}
        for i, e in enumerate(events)
    ]
    # One statement for a whole batch (bulk_create would split 500 rows into four).
    insert_new(
        CallEvent, [{**r, "created_at": now} for r in rows], unique="seq", unique_with=("call",)
    )


def call_feeds_scrubbed(*, call_ids: Sequence[uuid.UUID]) -> None:
    """Tell the streams' processes that these calls' words were erased or deleted, so
    none serves them again from the events it holds (streams.hub): a NOTIFY on each
    call's channel, delivered when the transaction commits. On SQLite the streams' poll
    sees the calls' erasure and expiry times instead."""
    if connection.vendor != "postgresql" or not call_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(channel, %s) FROM unnest(%s::text[]) AS channel",
            [SCRUBBED, [channel_name(call_id) for call_id in call_ids]],
        )
