"""Erasure: every call of one user in an organization loses its personal data, in
batches run by a task (`privacy.tasks.erasure_run_task`), resumable and safe to run
twice at once (a lease on the erasure row, each write of a run fenced by its own;
row locks on the calls). A batch holds at most `batch_size` calls and, but for a single
longer call, `batch_lines` transcript lines (scrub.within_lines), as retention's do.

Which calls: `user_id` equal to the given id; when that id is an E.164 number, also the
phone calls where it is the person's number (the callee of an outbound call, the caller
of an inbound one). What: recordings (deleted from their storage first, outside the
batch's transaction), transcript words (a marker instead) and tool calls,
user_data, metadata, the analysis's summary and structured data, the stored customer
webhook bodies; on ended calls also user_id, the person's phone number, the LiveKit
names made from it and the token kept for replays of the call's creation. A call still
open keeps those until it ends (its room and dialing need them); the erasure waits for
it and finishes the job then. Ids, statuses, timings, metrics and costs stay.
"""

from __future__ import annotations

import datetime
import logging
import re
from functools import partial
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import F, Lookup, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import APIKey, Organization
from calls.models import ENDED_STATUSES, Call
from calls.selectors import calls_with_number
from privacy import scrub
from privacy.keys import user_id_hash, user_id_hashes
from privacy.models import Erasure, ErasureStatus, RetainedIdentity
from privacy.recordings import recordings_delete
from recordings.storage import StorageError

logger = logging.getLogger(__name__)

# A run holds its erasure this long past its last batch; then another may take over.
LEASE = datetime.timedelta(minutes=5)
# Batches per run before it hands over to a fresh task (fairness with other work).
MAX_BATCHES_PER_RUN = 40
# How often an erasure waiting for open calls to end looks again.
WAIT_FOR_OPEN_CALLS = datetime.timedelta(minutes=1)
# Stored phone numbers are E.164 (telephony normalises them).
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def erasure_create(*, organization: Organization, user_id: str, api_key: APIKey) -> Erasure:
    """Record the request (who asked, the user id's hash) and start it after commit."""
    erasure = Erasure.objects.create(
        organization=organization,
        user_id=user_id,
        user_id_hash=user_id_hash(organization_id=organization.pk, user_id=user_id),
        requested_by_key_prefix=api_key.prefix,
        requested_by_key_name=api_key.name,
        next_run_at=timezone.now(),
    )
    _wake(erasure.pk, at=timezone.now())
    return erasure


def _wake(erasure_id: UUID, *, at: datetime.datetime) -> None:
    from privacy.tasks import erasure_run_task

    def enqueue() -> None:
        task = erasure_run_task
        if at > timezone.now() and task.get_backend().supports_defer:
            task = task.using(run_after=at)
        task.enqueue(str(erasure_id))

    # robust: `expire_data` wakes an erasure whose enqueue failed (next_run_at passed).
    transaction.on_commit(enqueue, robust=True)


def calls_of_user(*, organization_id: UUID, user_id: str) -> QuerySet[Call]:
    """The organization's calls of this user (indexes call_org_user, call_callee,
    call_caller), and those whose identity retention removed before their words
    (their keyed hash, under the current and earlier SECRET_KEYs)."""
    match = Q(user_id=user_id)
    if E164.match(user_id):
        match |= calls_with_number(user_id)
    hashes = user_id_hashes(organization_id=organization_id, user_id=user_id)
    # A subquery, read in each batch's own statement: retention clears a user id and
    # keeps its hash in one transaction, so a batch sees a call by one or the other.
    retained = RetainedIdentity.objects.filter(user_id_hash__in=hashes).values("call_id")
    if connection.vendor == "postgresql":
        match |= Q(_AnyOf(F("pk"), Subquery(retained)))
    else:
        match |= Q(pk__in=retained)
    return Call.objects.filter(match, organization_id=organization_id)


class _AnyOf(Lookup):
    """`id = ANY(ARRAY(subquery))`: PostgreSQL reads the subquery once (an InitPlan) and
    looks its ids up in the primary key, an arm of a BitmapOr beside the other indexes.
    An `IN (subquery)` arm of the OR is served by no index: every call was read."""

    lookup_name = "any_of"

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = compiler.compile(self.rhs)
        return f"{lhs} = ANY(ARRAY{rhs})", [*lhs_params, *rhs_params]


def erasure_run(
    *,
    erasure_id: UUID | str,
    now: datetime.datetime | None = None,
    batch_size: int = scrub.BATCH_SIZE,
    batch_lines: int = scrub.BATCH_LINES,
    max_batches: int = MAX_BATCHES_PER_RUN,
) -> str | None:
    """Run the erasure for up to `max_batches` batches; its status afterwards, or None
    when another run holds it (or took it over from this one) or it is complete."""
    now = now or timezone.now()
    # The run's lease is its fencing token too: each of its writes names it, so a run
    # that outlasted it (another took over meanwhile) writes nothing more.
    lease = now + LEASE
    claimed = (
        Erasure.objects.filter(pk=erasure_id)
        .exclude(status=ErasureStatus.COMPLETED)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            status=ErasureStatus.RUNNING,
            started_at=Coalesce("started_at", now),
            lease_until=lease,
            updated_at=now,
        )
    )
    if not claimed:
        return None
    try:
        return _batches_run(
            erasure_id,
            lease=lease,
            now=now,
            batch_size=batch_size,
            batch_lines=batch_lines,
            max_batches=max_batches,
        )
    except _LeaseLost:
        logger.warning("erasure %s: another run took it over; this one stops", erasure_id)
        return None


class _LeaseLost(Exception):
    """Another run took the erasure over (this run outlasted its lease)."""


def _batches_run(
    erasure_id: UUID | str,
    *,
    lease: datetime.datetime,
    now: datetime.datetime,
    batch_size: int,
    batch_lines: int,
    max_batches: int,
) -> str:
    erasure = Erasure.objects.get(pk=erasure_id)
    calls = calls_of_user(organization_id=erasure.organization_id, user_id=erasure.user_id)
    if erasure.batches == 0:
        Erasure.objects.filter(pk=erasure.pk).update(calls_matched=calls.count())
    for _ in range(max_batches):
        try:
            ids = _batch_recordings_delete(
                erasure_id=erasure.pk, calls=calls, batch_size=batch_size, batch_lines=batch_lines
            )
        except StorageError as exc:
            logger.warning("erasure %s: a recording could not be deleted: %s", erasure.pk, exc)
            now = _clock(now)
            return _later(erasure_id=erasure.pk, lease=lease, now=now, at=now + WAIT_FOR_OPEN_CALLS)
        # Deleting the recordings may take minutes: the batch, its lease, and the end
        # are stamped when they happen, not when the run began.
        now = _clock(now)
        # The batch takes only the calls whose recordings went: one that ended since is
        # taken by the next, its recording first (it no longer matches once erased).
        if not ids and _batch_rows(calls).exists():
            continue
        batch = calls.filter(pk__in=ids)
        renewed = ids and _batch(
            erasure_id=erasure.pk, calls=batch, lease=lease, now=now, batch_size=len(ids)
        )
        if not renewed:
            return _finish(erasure_id=erasure.pk, calls=calls, lease=lease, now=now)
        lease = renewed
    # More to do: a fresh task continues (and other work gets the worker meanwhile).
    _fenced_update(erasure.pk, lease, lease_until=None, next_run_at=now)
    _wake(erasure.pk, at=now)
    return ErasureStatus.RUNNING


def _fenced_update(erasure_id: UUID, lease: datetime.datetime, **values: object) -> None:
    """Update the erasure while this run (`lease`) holds it, the check and the write
    one statement; _LeaseLost when another run has taken it over."""
    if not Erasure.objects.filter(pk=erasure_id, lease_until=lease).update(**values):
        raise _LeaseLost


def _clock(since: datetime.datetime) -> datetime.datetime:
    """The time now, never before `since` (a run given its start keeps to it)."""
    return max(since, timezone.now())


def _batch_rows(calls: QuerySet[Call]) -> QuerySet[Call]:
    """The user's calls the next batch takes, in id order (an open call already erased
    waits for its end)."""
    return calls.exclude(erased_at__isnull=False, ended_at__isnull=True).order_by("id")


def _batch_recordings_delete(
    *, erasure_id: UUID, calls: QuerySet[Call], batch_size: int, batch_lines: int
) -> list[UUID]:
    """Delete the recordings of the calls the next batch takes, before it locks them:
    the storage is asked outside any transaction; those calls' ids. StorageError: retry
    later."""
    rows = _batch_rows(calls)
    # Calls still open go in a batch of their own: their agent's events, LiveKit's
    # webhooks and transfers wait on their rows, never for hundreds of ended calls.
    taken = list(rows.filter(ended_at__isnull=True).values_list("id")[:batch_size])
    taken = taken or list(rows.values_list("id")[:batch_size])
    # Its work (lines rewritten, reports carrying them rebuilt) and so how long it holds
    # the calls' rows grows with their lines: a long call goes alone.
    ids = [call_id for (call_id,) in scrub.within_lines(taken, batch_lines=batch_lines)]
    # Counted in the transaction marking them: a run killed between the two would
    # leave them deleted, never to be found again, and uncounted.
    recordings_delete(call_ids=ids, counted=partial(_recordings_deleted_count, erasure_id))
    return ids


def _recordings_deleted_count(erasure_id: UUID, deleted: int) -> None:
    Erasure.objects.filter(pk=erasure_id).update(
        recordings_deleted=F("recordings_deleted") + deleted
    )


def _later(
    *, erasure_id: UUID, lease: datetime.datetime, now: datetime.datetime, at: datetime.datetime
) -> str:
    _fenced_update(erasure_id, lease, lease_until=None, next_run_at=at, updated_at=now)
    _wake(erasure_id, at=at)
    return ErasureStatus.RUNNING


@transaction.atomic
def _batch(
    *,
    erasure_id: UUID,
    calls: QuerySet[Call],
    lease: datetime.datetime,
    now: datetime.datetime,
    batch_size: int,
) -> datetime.datetime | None:
    """Erase one batch of the user's calls, locked in id order; the run's renewed lease,
    or None when none is left (_LeaseLost: nothing of it is kept). An open call already
    erased waits for its end (it still matches by its ids)."""
    rows = list(
        _batch_rows(calls)
        .select_for_update()
        .values_list("id", "channel", "direction", "status", "erased_at")[:batch_size]
    )
    if not rows:
        return None
    ids = [row[0] for row in rows]
    lines = scrub.transcript_erase(call_ids=ids)
    scrub.data_clear(call_ids=ids)
    scrub.analysis_erase(call_ids=ids)
    ended = [(call_id, c, d) for call_id, c, d, status, _ in rows if status in ENDED_STATUSES]
    # Erased, the calls need no way back to the user: the next batch finds others.
    RetainedIdentity.objects.filter(call_id__in=ids).delete()
    if ended:
        scrub.identity_clear(calls=ended)
        scrub.idempotency_tokens_clear(call_ids=[call_id for call_id, _, _ in ended])
    Call.objects.filter(pk__in=ids).update(erased_at=Coalesce("erased_at", now))
    events = scrub.webhook_bodies_scrub(call_ids=ids)
    renewed = now + LEASE
    _fenced_update(
        erasure_id,
        lease,
        calls_erased=F("calls_erased") + sum(1 for row in rows if row[4] is None),
        transcript_lines_erased=F("transcript_lines_erased") + lines,
        webhook_events_scrubbed=F("webhook_events_scrubbed") + events,
        batches=F("batches") + 1,
        lease_until=renewed,
        updated_at=now,
    )
    return renewed


def _finish(
    *, erasure_id: UUID, calls: QuerySet[Call], lease: datetime.datetime, now: datetime.datetime
) -> str:
    """Complete the erasure (the user id is dropped), or wait for open calls to end."""
    waiting = calls.filter(erased_at__isnull=False, ended_at__isnull=True).count()
    if waiting:
        _fenced_update(erasure_id, lease, calls_waiting=waiting)
        return _later(erasure_id=erasure_id, lease=lease, now=now, at=now + WAIT_FOR_OPEN_CALLS)
    erasure = Erasure.objects.get(pk=erasure_id)
    _fenced_update(
        erasure_id,
        lease,
        status=ErasureStatus.COMPLETED,
        user_id=None,
        calls_matched=max(erasure.calls_matched, erasure.calls_erased),
        calls_waiting=0,
        lease_until=None,
        next_run_at=None,
        finished_at=now,
        updated_at=now,
    )
    return ErasureStatus.COMPLETED


def erased_call_identity_clear(*, call_id: UUID | str) -> None:
    """Finish erasing a call erased while open that has ended since: its user id,
    numbers and room name go now, not at the erasure's next look (a minute later).
    Called, holding the call's row, by what builds a copy sent out of voicecalls (the
    end-of-call report), which must not carry them. Nothing for any other call."""
    row = (
        Call.objects.filter(pk=call_id, erased_at__isnull=False, status__in=ENDED_STATUSES)
        .values_list("id", "channel", "direction")
        .first()
    )
    if row is not None:
        scrub.identity_clear(calls=[row])
        scrub.idempotency_tokens_clear(call_ids=[row[0]])


def erasures_wake_due(*, now: datetime.datetime | None = None, limit: int = 100) -> int:
    """Wake unfinished erasures that are due and not held by a run (a lost wake-up, a
    worker that died mid-run). A duplicate wake-up does nothing."""
    now = now or timezone.now()
    due = list(
        Erasure.objects.exclude(status=ErasureStatus.COMPLETED)
        .filter(next_run_at__lte=now)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("next_run_at")
        .values_list("pk", flat=True)[:limit]
    )
    with transaction.atomic():
        for erasure_id in due:
            _wake(erasure_id, at=now)
    return len(due)
