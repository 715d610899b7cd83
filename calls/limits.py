"""Per-organization call limits: how many calls may be open at once, and usage."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.utils import timezone

from accounts.models import Organization
from calls.models import NOT_ENDED_STATUSES, Call
from voicecalls.errors import LimitExceeded


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
    """Calls not yet ended (pending, connecting, active); a partial index serves it."""
    return Call.objects.filter(organization=organization, status__in=NOT_ENDED_STATUSES).count()


def concurrency_limited(*, organization: Organization) -> bool:
    """False for organizations in `CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS`."""
    return organization.slug not in settings.CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS


def concurrency_check(*, organization: Organization) -> None:
    """Raise ConcurrencyLimitReached when one more call would exceed the limit.

    Call inside the transaction that creates the call: it locks the organization's
    row first, so concurrent creations for one organization count one after the
    other and never overshoot (on SQLite, writes are serialized anyway).
    Organizations in `CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS` are not checked.
    """
    if not concurrency_limited(organization=organization):
        return
    override = (
        Organization.objects.select_for_update()
        .filter(pk=organization.pk)
        .values_list("concurrency_limit", flat=True)
        .get()
    )
    limit = settings.CALLS_CONCURRENCY_LIMIT if override is None else override
    active = active_call_count(organization=organization)
    if active >= limit:
        raise ConcurrencyLimitReached(active_calls=active, concurrency_limit=limit)


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
