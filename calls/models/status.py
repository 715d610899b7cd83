"""A call's statuses and its times: which statuses are ended or not yet started, how
long a call may wait for its start, and how long it ran."""

from __future__ import annotations

import datetime

from django.db import models
from django.utils import timezone

from workflows.settings import MAX_START_DELAY_SECONDS


class CallStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    CONNECTING = "connecting", "Connecting"
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    DISCONNECTED = "disconnected", "Disconnected"
    TIMEOUT = "timeout", "Timeout"


NOT_ENDED_STATUSES = (CallStatus.PENDING, CallStatus.CONNECTING, CallStatus.ACTIVE)
NOT_STARTED_STATUSES = frozenset({CallStatus.PENDING, CallStatus.CONNECTING})
ENDED_STATUSES = (
    CallStatus.COMPLETED,
    CallStatus.FAILED,
    CallStatus.DISCONNECTED,
    CallStatus.TIMEOUT,
)

# The longest a call may wait for its start: a call starts, if ever, between its
# creation and this long after it (calls/lifecycle.py enforces each call's own bound).
MAX_START_DELAY = datetime.timedelta(seconds=MAX_START_DELAY_SECONDS)


def start_bound(created_at: datetime.datetime, connect_timeout_seconds: int) -> datetime.datetime:
    """When a call that has not started times out: its creation plus its own start delay
    (`connect_timeout_seconds`; a phone call's covers its dial and ringing)."""
    return created_at + datetime.timedelta(seconds=connect_timeout_seconds)


def duration_between(
    started_at: datetime.datetime | None, ended_at: datetime.datetime | None
) -> int | None:
    """Whole seconds a call has run: null before it started, until now while it runs."""
    if started_at is None:
        return None
    return max(0, int(((ended_at or timezone.now()) - started_at).total_seconds()))
