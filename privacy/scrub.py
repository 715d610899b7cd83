"""What retention and erasure do to a batch of calls, one statement per table, and how
many calls a batch takes (`within_lines`).

Each function takes the ids of at most a batch of calls (privacy.BATCH_SIZE) whose rows
the caller holds locked in its transaction, so agent events, analyses and end-of-call
reports (which lock the call row first) see the calls before or after, never between.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from uuid import UUID

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from analysis.models import AnalysisStatus, CallAnalysis
from calls.models import (
    ERASED_CONTENT,
    ROOM_PREFIX,
    Call,
    CallChannel,
    CallDirection,
    IdempotencyRecord,
    LiveKitWebhookEvent,
    TranscriptEntry,
)
from privacy.keys import ERASED_ROOM_PREFIX, room_name_erased, user_id_hash
from privacy.models import RetainedIdentity
from recordings.models import Recording, RecordingStatus
from streams.feed import call_feeds_scrubbed
from webhooks.outbox import call_event_bodies_rebuild

# Calls per transaction: bounded IN lists and short row locks.
BATCH_SIZE = 500
# Transcript lines per retention or erasure transaction: 500 calls of 5,000 lines held
# their rows ~22 s; this many, at that rate, about half a second. A longer call goes alone.
BATCH_LINES = 50_000
# Calls whose lines within_lines counts first, each next statement twice as many.
_COUNT_FIRST = 10
# Far longer than any request creating a call takes.
_RECORD_BEFORE_CALL = datetime.timedelta(hours=1)


def within_lines(calls: list[tuple], *, batch_lines: int) -> list[tuple]:
    """The first of `calls` (rows whose first item is the call's id) whose transcripts
    hold at most `batch_lines` lines in all, at least one. Counted through
    transcript_call_order a chunk of calls at a time, each twice the last: a batch of
    long calls stops having counted about twice the calls it takes (not all it read),
    one of short calls counts in a few statements."""
    lines, start, size = 0, 0, _COUNT_FIRST
    while start < len(calls):
        chunk = [row[0] for row in calls[start : start + size]]
        counts = dict(
            TranscriptEntry.objects.filter(call_id__in=chunk)
            .order_by()
            .values_list("call_id")
            .annotate(Count("id"))
        )
        for n, call_id in enumerate(chunk, start=start):
            lines += counts.get(call_id, 0)
            if n and lines > batch_lines:
                return calls[:n]
        start, size = start + size, size * 2
    return calls


def transcript_delete(*, call_ids: Sequence[UUID]) -> int:
    """Delete the calls' transcript lines (tool calls with them); the count deleted."""
    deleted, _ = TranscriptEntry.objects.filter(call_id__in=call_ids).delete()
    call_feeds_scrubbed(call_ids=call_ids)
    return deleted


def transcript_erase(*, call_ids: Sequence[UUID]) -> int:
    """Replace each line's words by the marker and drop its tool call, keeping its role,
    agent and time; the count of lines changed (already erased ones are not)."""
    lines = TranscriptEntry.objects.filter(call_id__in=call_ids).exclude(
        content=ERASED_CONTENT, tool_call__isnull=True
    )
    changed = lines.update(content=ERASED_CONTENT, tool_call=None)
    call_feeds_scrubbed(call_ids=call_ids)
    return changed


def analysis_erase(*, call_ids: Sequence[UUID]) -> int:
    """Remove what the post-call analysis wrote (summary, structured data) and why it
    failed, which may quote the model's answer or the provider's echo of the prompt;
    its status and success verdict stay."""
    analyses = CallAnalysis.objects.filter(call_id__in=call_ids)
    written = analyses.filter(Q(summary__isnull=False) | Q(structured_data__isnull=False))
    count = written.update(summary=None, structured_data=None)
    # A skip's reason is ours (no LLM key), quoting nobody.
    failures = analyses.exclude(status=AnalysisStatus.SKIPPED)
    failures.exclude(error__in=["", ERASED_CONTENT]).update(error=ERASED_CONTENT)
    return count


def idempotency_tokens_clear(*, call_ids: Sequence[UUID]) -> int:
    """Blank the LiveKit token kept for replays of the calls' `POST /calls` (its claims
    carry the person's name from user_data); the rest of the answer stays, so a retry
    with the same key still gets its call, never a second one. Only calls created in
    the records' lifetime (24 h) can have one: older ones cost no search."""
    created = Call.objects.filter(
        pk__in=call_ids,
        created_at__gte=timezone.now()
        - datetime.timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS),
    ).values_list("pk", "organization_id", "created_at")
    recent = list(created)
    if not recent:
        return 0
    # A record is written when its request starts, a moment before its call.
    since = min(at for _, _, at in recent) - _RECORD_BEFORE_CALL
    records = IdempotencyRecord.objects.filter(
        organization_id__in={organization_id for _, organization_id, _ in recent},
        created_at__gte=since,
        response_body__call_id__in=[str(call_id) for call_id, _, _ in recent],
    ).exclude(response_body__token="")
    blanked = [
        IdempotencyRecord(pk=pk, response_body={**body, "token": ""})
        for pk, body in records.values_list("pk", "response_body")
    ]
    IdempotencyRecord.objects.bulk_update(blanked, ["response_body"])
    return len(blanked)


def data_clear(*, call_ids: Sequence[UUID]) -> None:
    """Empty user_data and metadata (whatever the customer put there)."""
    Call.objects.filter(pk__in=call_ids).update(user_data={}, metadata={})


def identities_retain(*, call_ids: list[UUID]) -> None:
    """Keep, as keyed hashes, who the calls were with (user id, callee's or caller's
    number), before retention clears them: their words may be kept longer, and an
    erasure of that user must still find them (privacy.erasure.calls_of_user)."""
    rows = Call.objects.filter(pk__in=call_ids).values_list(
        "id", "organization_id", "user_id", "phone_number", "from_number", "direction"
    )
    kept = []
    for call_id, organization_id, user_id, phone_number, from_number, direction in rows:
        number = phone_number if direction == CallDirection.OUTBOUND else from_number
        for identity in {user_id, number} - {None, ""}:
            digest = user_id_hash(organization_id=organization_id, user_id=identity)
            kept.append(RetainedIdentity(call_id=call_id, user_id_hash=digest))
    RetainedIdentity.objects.bulk_create(kept, ignore_conflicts=True)


def identities_release(*, call_ids: Sequence[UUID]) -> None:
    """Forget the kept hashes of calls left with nothing an erasure would reach: their
    transcript expired, and no recording file is kept."""
    recorded = Recording.objects.filter(call_id__in=call_ids).exclude(
        status=RecordingStatus.DELETED
    )
    RetainedIdentity.objects.filter(
        call_id__in=call_ids, call__transcript_expired_at__isnull=False
    ).exclude(call_id__in=recorded.values("call_id")).delete()


def identity_clear(*, calls: Sequence[tuple[UUID, str, str]]) -> None:
    """Remove who the caller was from ended calls, given (id, channel, direction):
    `user_id`; the callee's number of an outbound phone call (`phone_number`); the
    caller's number of an inbound one (`from_number`), and the LiveKit room name and
    participant identity LiveKit made from it: the room gets its keyed hash (see
    `privacy.keys.room_name_erased`), the identity becomes the call's own (`user-<id>`).
    The organization's own numbers stay."""
    Call.objects.filter(pk__in=[call_id for call_id, _, _ in calls]).update(user_id=None)
    phone = [(call_id, d) for call_id, channel, d in calls if channel == CallChannel.PHONE]
    callees = [call_id for call_id, direction in phone if direction == CallDirection.OUTBOUND]
    callers = [call_id for call_id, direction in phone if direction == CallDirection.INBOUND]
    if callees:
        Call.objects.filter(pk__in=callees).update(phone_number=None)
    if callers:
        Call.objects.filter(pk__in=callers).update(from_number=None, participant_identity=None)
        _rooms_rename(call_ids=callers)


def _rooms_rename(*, call_ids: list[UUID]) -> None:
    """Give the inbound calls' rooms their erased names; a name already erased (or the
    call's own, as erasures before the keyed name left it) stays."""
    rooms = Call.objects.filter(pk__in=call_ids).exclude(room_name__startswith=ERASED_ROOM_PREFIX)
    named = [
        (call_id, room_name)
        for call_id, room_name in rooms.values_list("pk", "room_name")
        if room_name != f"{ROOM_PREFIX}{call_id}"
    ]
    if named:
        Call.objects.bulk_update(
            [Call(pk=call_id, room_name=room_name_erased(name)) for call_id, name in named],
            ["room_name"],
        )
        # The webhook ledger (kept a day, for retries) named the room and the caller too.
        LiveKitWebhookEvent.objects.filter(room_name__in=[name for _, name in named]).update(
            room_name="", participant_identity=""
        )


def webhook_bodies_scrub(*, call_ids: Sequence[UUID]) -> int:
    """Rebuild the calls' stored customer-webhook bodies from what is left of them."""
    return call_event_bodies_rebuild(call_ids=list(call_ids))


def cutoff(*, now: datetime.datetime, days: int) -> datetime.datetime:
    """Calls that ended at or before this are past a retention of `days`."""
    return now - datetime.timedelta(days=days)
