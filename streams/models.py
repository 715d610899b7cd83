"""The live call stream's feed: one row per event of a call, numbered in commit order,
and the leases of the streams open now (the per-organization cap)."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import APIKey, Organization
from calls.models import Call


class CallEventType(models.TextChoices):
    TRANSCRIPT = "transcript", "Transcript line"
    STATUS = "status", "Status change"
    HANDOFF = "handoff", "Agent handoff"
    METRICS = "metrics", "Metrics sample"


class CallEvent(models.Model):
    """An event of a call's stream: `seq` is its SSE id (per call, from `Call.stream_seq`).

    Transcript lines and metric samples are referenced by their row's id (`ref_id`),
    never copied: erasure and retention reach the one copy, and the stream shows
    what is left of it. Status changes and handoffs carry their few fields in `data`
    (statuses, agent names and times: no personal data).
    """

    id = models.BigAutoField(primary_key=True)
    # No index of its own: callevent_call_seq starts with the call. No foreign key in
    # the database: a row is only ever inserted by the statement that moves its call's
    # counter (streams.feed), so the call exists and is locked; a deferred check per row
    # was a tenth of an agent batch's time (bench/README.md). Deleting a call still
    # deletes its events (Django's cascade).
    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=12, choices=CallEventType.choices)
    ref_id = models.BigIntegerField(null=True, blank=True)
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["call", "seq"], name="callevent_call_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.call_id}#{self.seq} {self.type}"


class StreamLease(models.Model):
    """A stream open now, held by the process serving it, which renews it every
    heartbeat; one whose process died stops counting after `STREAMS_LEASE_SECONDS`.
    The per-organization cap counts these, across every process."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(APIKey, on_delete=models.CASCADE, related_name="+")
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="+", db_index=False)
    opened_at = models.DateTimeField(default=timezone.now)
    renewed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["organization", "renewed_at"], name="streamlease_org_renewed"),
        ]

    def __str__(self) -> str:
        return f"stream of {self.call_id}"
