"""Per-organization call limits: how many calls may be open at once, and usage."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Subquery, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import Organization
from calls.models import NOT_ENDED_STATUSES, Call
from voicecalls.db import bound_cursor
from voicecalls.errors import LimitExceeded

logger = logging.getLogger(__name__)


class ConcurrencyLimitReached(LimitExceeded):
    """The organization already has as many calls not yet ended as it may."""

    code = "concurrency_limit_reached"
    detail = (
        "Your organization has as many calls in progress as it may; end one or wait for one to end."
    )
    # A slot frees when a call ends, which nobody can predict: a short, fixed wait.
    RETRY_AFTER_SECONDS = 5

    def __init__(self, *, active_calls: int, concurrency_limit: int) -> None:
        super().__init__(
            meta={"active_calls": active_calls, "concurrency_limit": concurrency_limit},
            retry_after=self.RETRY_AFTER_SECONDS,
        )
        self.active_calls = active_calls
        self.concurrency_limit = concurrency_limit


def active_call_count(*, organization: Organization) -> int:
    """Calls not yet ended (pending, connecting, active), counted; a partial index serves it."""
    return Call.objects.filter(organization=organization, status__in=NOT_ENDED_STATUSES).count()


def concurrency_limited(*, organization: Organization) -> bool:
    """False for organizations in `CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS`."""
    return organization.slug not in settings.CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS


def open_call_reserve(*, organization: Organization) -> None:
    """Count one more open call, or raise ConcurrencyLimitReached at the limit.

    One conditional UPDATE of the organization's `open_calls`, whatever the number of
    open calls. Call it in the transaction that inserts the call: the row lock it takes
    holds concurrent creations of the organization until that commits, so they never
    overshoot. Exempt organizations are counted, never refused. A plain statement:
    every create runs it (the ORM compiled it anew each time).
    """
    pk = Organization._meta.pk
    limited = concurrency_limited(organization=organization)
    with bound_cursor() as cursor:
        cursor.execute(
            _RESERVE_LIMITED if limited else _RESERVE,
            [pk.get_db_prep_value(organization.pk, connection)]
            + ([settings.CALLS_CONCURRENCY_LIMIT] if limited else []),
        )
        if cursor.rowcount == 1 or not limited:
            return
    open_calls, override = (
        Organization.objects.filter(pk=organization.pk)
        .values_list("open_calls", "concurrency_limit")
        .get()
    )
    raise ConcurrencyLimitReached(
        active_calls=open_calls,
        concurrency_limit=settings.CALLS_CONCURRENCY_LIMIT if override is None else override,
    )


_RESERVE = f"UPDATE {Organization._meta.db_table} SET open_calls = open_calls + 1 WHERE id = %s"
_RESERVE_LIMITED = _RESERVE + " AND open_calls < COALESCE(concurrency_limit, %s)"


def call_counts_lock(*, organization: Organization, statuses: Sequence[str]) -> None:
    """Lock this database session's status counter rows (`CallCount`) of `statuses`,
    adding nothing to them: for a transaction that moves its call into them only after
    reserving its place. Every other one takes its counter rows (through its call's
    insert or update) before the organization's row (the reservation, the release);
    taken the other way round, two of them deadlock. SQLite keeps no counter rows."""
    if connection.vendor != "postgresql":
        return
    pk = Organization._meta.pk.get_db_prep_value(organization.pk, connection)
    with bound_cursor() as cursor:
        for status in statuses:  # the shard is the trigger's (calls migration 0003)
            cursor.execute(_COUNT_LOCK, [pk, status])


_COUNT_LOCK = (
    "INSERT INTO calls_callcount AS c (organization_id, status, shard, count)"
    " VALUES (%s, %s, pg_backend_pid() %% 16, 0)"
    " ON CONFLICT (organization_id, status, shard) DO UPDATE SET count = c.count"
)


def open_call_release(*, call_id: UUID | str) -> None:
    """Count one open call fewer for the call's organization; call it in the transaction
    that ends the call. Never below zero, should a call have been ended behind the
    state machine's back (`open_calls_reconcile` repairs that)."""
    organization_id = Call.objects.filter(pk=call_id).values("organization_id")
    Organization.objects.filter(pk=Subquery(organization_id)).update(
        open_calls=Greatest(F("open_calls") - 1, Value(0))
    )


def open_calls_reconcile() -> int:
    """Repair every organization's `open_calls` that differs from its count of calls
    not yet ended; the number repaired (0 unless something bypassed the state machine).

    A first unlocked pass finds suspects (open calls are few: a partial index serves
    the count). Each suspect's row is then locked before its calls are counted again,
    so a creation or an end in flight either commits before that count (and is in it)
    or moves the counter after the repair.
    """
    counted = dict(
        Call.objects.filter(status__in=NOT_ENDED_STATUSES)
        .values("organization_id")
        .annotate(n=Count("id"))
        .values_list("organization_id", "n")
    )
    stored = dict(
        Organization.objects.filter(Q(open_calls__gt=0) | Q(pk__in=list(counted))).values_list(
            "pk", "open_calls"
        )
    )
    repaired = 0
    for pk in stored.keys() | counted.keys():
        if stored.get(pk, 0) != counted.get(pk, 0) and _open_calls_repair(organization_id=pk):
            repaired += 1
    return repaired


def _open_calls_repair(*, organization_id: UUID) -> bool:
    with transaction.atomic():
        stored = (
            Organization.objects.select_for_update()
            .filter(pk=organization_id)
            .values_list("open_calls", flat=True)
            .first()
        )
        counted = Call.objects.filter(
            organization_id=organization_id, status__in=NOT_ENDED_STATUSES
        ).count()
        if stored is None or stored == counted:
            return False
        Organization.objects.filter(pk=organization_id).update(open_calls=counted)
    logger.warning(
        "open_calls of organization %s was %s; %s calls are open", organization_id, stored, counted
    )
    return True


def organization_usage(*, organization: Organization) -> dict[str, int]:
    """`active_calls`, `concurrency_limit` and `calls_today` (since 00:00 UTC)."""
    midnight = (
        timezone.now().astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    return {
        "active_calls": active_call_count(organization=organization),
        "concurrency_limit": organization.effective_concurrency_limit,
        "calls_today": Call.objects.filter(
            organization=organization, created_at__gte=midnight
        ).count(),
    }
