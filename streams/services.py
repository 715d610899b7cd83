"""Stream leases: the per-organization cap on open streams, across every process, and
the revocation check of the keys they were opened with; the login check of the admin's
staff streams."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Collection

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.models import APIKey, Organization
from streams.models import StreamLease
from voicecalls.db import advisory_lock
from voicecalls.errors import LimitExceeded


class StreamLimitReached(LimitExceeded):
    """The organization has as many streams open as it may."""

    code = "stream_limit_reached"
    detail = "Your organization has as many live streams open as it may; close one first."
    RETRY_AFTER_SECONDS = 5

    def __init__(self, *, open_streams: int, stream_limit: int) -> None:
        super().__init__(
            meta={"open_streams": open_streams, "stream_limit": stream_limit},
            retry_after=self.RETRY_AFTER_SECONDS,
        )


def _lease_cutoff(now: datetime.datetime) -> datetime.datetime:
    return now - datetime.timedelta(seconds=settings.STREAMS_LEASE_SECONDS)


@transaction.atomic
def stream_lease_open(
    *, organization: Organization, api_key_id: str, call_id: uuid.UUID
) -> StreamLease:
    """A lease for one more stream of the organization, or StreamLimitReached.

    Opens of one organization are serialized by a transaction-level advisory lock
    (SQLite: its one writer), so concurrent opens never overshoot the cap; the
    organization's row, which call creation locks, is left alone. Leases nobody
    renewed for `STREAMS_LEASE_SECONDS` (their process died) are removed on the way.

    The lease counts for `STREAMS_LEASE_ADOPT_SECONDS` only, until its stream starts
    and renews it (Hub.subscribe): a client that left before that (while its request
    waited for an opening) has no stream to close it.
    """
    now = timezone.now()
    advisory_lock(f"streams:{organization.pk}")
    leases = StreamLease.objects.filter(organization=organization)
    leases.filter(renewed_at__lt=_lease_cutoff(now)).delete()
    open_streams = leases.count()
    limit = settings.STREAMS_PER_ORGANIZATION
    if open_streams >= limit:
        raise StreamLimitReached(open_streams=open_streams, stream_limit=limit)
    adopt = min(settings.STREAMS_LEASE_ADOPT_SECONDS, settings.STREAMS_LEASE_SECONDS)
    return StreamLease.objects.create(
        organization=organization,
        api_key_id=api_key_id,
        call_id=call_id,
        opened_at=now,
        renewed_at=_lease_cutoff(now) + datetime.timedelta(seconds=adopt),
    )


def stream_lease_close(*, lease_id: uuid.UUID) -> None:
    StreamLease.objects.filter(pk=lease_id).delete()


def stream_leases_renew(*, lease_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Renew the leases whose key is still usable; answer the others (revoked, expired
    or deleted keys, suspended organizations, leases gone): their streams must close.
    Two statements, whatever the number of streams."""
    if not lease_ids:
        return set()
    now = timezone.now()
    # A suspended organization's keys are refused as a revoked key is.
    usable_keys = APIKey.objects.filter(
        revoked=False, organization__suspended_at__isnull=True
    ).filter(Q(expiry_date__isnull=True) | Q(expiry_date__gt=now))
    live = set(
        StreamLease.objects.filter(pk__in=lease_ids, api_key__in=usable_keys).values_list(
            "pk", flat=True
        )
    )
    StreamLease.objects.filter(pk__in=live).update(renewed_at=now)
    return set(lease_ids) - live


def staff_sessions_ended(*, session_keys: Collection[str]) -> set[str]:
    """The staff streams' login sessions that ended: gone (logged out), expired, whose
    user is no longer active staff, or whose password changed since (the way to end
    every other login: Django's own check, `get_user`). Two queries, whatever the
    number of streams."""
    sessions = Session.objects.filter(session_key__in=session_keys, expire_date__gt=timezone.now())
    logins = {session.session_key: session.get_decoded() for session in sessions}
    staff = {
        str(user.pk): user
        for user in get_user_model().objects.filter(
            pk__in=[data.get(SESSION_KEY) for data in logins.values() if data.get(SESSION_KEY)],
            is_active=True,
            is_staff=True,
        )
    }
    live = {key for key, data in logins.items() if _login_valid(data, staff)}
    return set(session_keys) - live


def _login_valid(data: dict, staff: dict) -> bool:
    user = staff.get(str(data.get(SESSION_KEY)))
    hashed = data.get(HASH_SESSION_KEY)
    if user is None or not isinstance(hashed, str):
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(hashed, expected) for expected in hashes)
