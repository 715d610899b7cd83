"""What a call accumulates beside its row: transcript lines, metric samples, the agent
event ledger, the LiveKit webhook ledger, idempotency records and per-status counts."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from calls.models.call import Call, TranscriptRole
from calls.models.status import CallStatus


class CallCount(models.Model):
    """How many calls an organization has in each status: `total` for the two lists that
    would otherwise count the most rows (no filter, and status only).

    On PostgreSQL a trigger on `calls_call` (migration 0003) keeps these rows exact in
    the same transaction as every insert, delete and status change, whoever makes it
    (services, `QuerySet.update`, raw SQL). Each database session adds its ±1 to its own
    shard, so concurrent transactions seldom wait for one another's counter row; a
    shard may go negative, the sum over shards is the count. SQLite counts rows instead.
    """

    # call_count_unique (organization, status, shard) serves lookups by organization.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    status = models.CharField(max_length=12, choices=CallStatus.choices)
    shard = models.SmallIntegerField()
    count = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "status", "shard"], name="call_count_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.status}[{self.shard}] = {self.count}"


class TranscriptEntry(models.Model):
    """One line of a call's conversation. The auto id is the server's arrival order."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: transcript_call_order starts with the call.
    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="transcript", db_index=False
    )
    # The agent's client-made event id: re-sending an event to a call never adds a
    # line twice (unique per call: see transcript_event_once).
    event_id = models.UUIDField(null=True, blank=True)
    role = models.CharField(max_length=10, choices=TranscriptRole.choices)
    content = models.TextField(blank=True)
    agent_name = models.CharField(max_length=100, null=True, blank=True)
    tool_call = models.JSONField(null=True, blank=True)
    # Assistant lines only: the caller cut the agent off before it finished (the API
    # shows it on assistant lines alone). A database default, so bulk loads may omit it.
    interrupted = models.BooleanField(default=False, db_default=False)
    timestamp = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["timestamp", "id"]
        verbose_name_plural = "transcript entries"
        indexes = [models.Index(fields=["call", "timestamp", "id"], name="transcript_call_order")]
        # Per call, not global: a batch's index entries then sit together next to the
        # call's other lines, where a global index of random uuids sends each of them
        # to a different page of an index larger than memory (bench/README.md).
        constraints = [
            models.UniqueConstraint(fields=["call", "event_id"], name="transcript_event_once")
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def sequence(self) -> int:
        return self.id


class IdempotencyRecord(models.Model):
    """The first answer to a POST carrying an `Idempotency-Key`, for 24 hours.

    The row is inserted (and committed) before the work starts, so a concurrent
    request with the same key finds it and gets 409 instead of doing the work twice.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "key"], name="idempotency_key_unique_per_organization"
            )
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return self.key

    @property
    def is_complete(self) -> bool:
        return self.response_status is not None


class MetricSample(models.Model):
    """One metrics event the agent reported: per-turn latencies and tokens.

    The call keeps running sums and counts for the means; these rows give the
    latency percentiles (p50/p95/max) and keep the evidence.
    """

    id = models.BigAutoField(primary_key=True)
    # No index of its own: metric_sample_call starts with the call.
    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="metric_samples", db_index=False
    )
    event_id = models.UUIDField()
    agent_name = models.CharField(max_length=100, null=True, blank=True)
    turn_index = models.PositiveIntegerField(null=True, blank=True)
    stt_latency_ms = models.FloatField(null=True, blank=True)
    llm_latency_ms = models.FloatField(null=True, blank=True)
    tts_latency_ms = models.FloatField(null=True, blank=True)
    e2e_latency_ms = models.FloatField(null=True, blank=True)
    eou_latency_ms = models.FloatField(null=True, blank=True)
    # Which provider and model served the turn's stt/llm/tts (a fallback, maybe):
    # {"llm": {"provider": ..., "model": ...}, ...}.
    providers = models.JSONField(null=True, blank=True)
    tokens = models.PositiveIntegerField(null=True, blank=True)
    timestamp = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["call", "timestamp"], name="metric_sample_call")]
        constraints = [
            models.UniqueConstraint(fields=["call", "event_id"], name="metric_sample_event_once")
        ]

    def __str__(self) -> str:
        return str(self.event_id)


class AgentEventType(models.TextChoices):
    TRANSCRIPT = "transcript", "Transcript"
    AGENT_HANDOFF = "agent_handoff", "Agent handoff"
    METRICS = "metrics", "Metrics"
    STATUS = "status", "Status"
    USAGE = "usage", "Usage"


class AgentEvent(models.Model):
    """An `agent_handoff`, `status` or `usage` event the agent reported, kept by its id.

    Transcript lines and metric samples live in their own tables (each unique by
    event id); this ledger makes the other event types idempotent too.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="agent_events")
    type = models.CharField(max_length=20, choices=AgentEventType.choices)
    payload = models.JSONField(default=dict)
    timestamp = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["call", "timestamp"], name="agent_event_call")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class LiveKitWebhookEvent(models.Model):
    """A LiveKit webhook event we acted on, by LiveKit's event id: retries are no-ops."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=100, unique=True)
    event = models.CharField(max_length=50)
    room_name = models.CharField(max_length=200, blank=True)
    participant_identity = models.CharField(max_length=200, blank=True)
    # A departure's `DisconnectReason`: a phone call's callee leaving while the dial runs
    # is applied once the dial answers (calls.livekit_events.call_heard_while_dialing).
    disconnect_reason = models.CharField(max_length=40, blank=True, default="", db_default="")
    received_at = models.DateTimeField(default=timezone.now)
    # When it happened, as well as we know (calls.livekit_events._event_time): LiveKit
    # may deliver it up to 30 s late.
    happened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["room_name"], name="livekit_event_room"),
            # expire_calls prunes ids older than any LiveKit retry.
            models.Index(fields=["received_at"], name="livekit_event_received"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.event_id}"
