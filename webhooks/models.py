"""Customer webhooks: endpoints, the event outbox, deliveries and their attempts.

An event row is written in the same transaction as the change that causes it (the
outbox), with one delivery per subscribed endpoint. The task queue only wakes a
delivery up; its state (attempts, next attempt, last answer) lives here.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from providerkeys.fields import EncryptedSecretField


class EventType(models.TextChoices):
    CALL_STATUS_CHANGED = "call.status_changed", "Call status changed"
    CALL_ENDED = "call.ended", "Call ended (end-of-call report)"
    # The post-call analysis finished after the end-of-call report was built.
    CALL_ANALYZED = "call.analyzed", "Call analyzed (post-call analysis)"


class SentEventType(models.TextChoices):
    """Every event type sent: those subscribed to, and `webhook.test`, sent when its
    owner asks (POST /webhook-endpoints/{id}/test) whatever the endpoint subscribed to."""

    CALL_STATUS_CHANGED = EventType.CALL_STATUS_CHANGED.value, EventType.CALL_STATUS_CHANGED.label
    CALL_ENDED = EventType.CALL_ENDED.value, EventType.CALL_ENDED.label
    CALL_ANALYZED = EventType.CALL_ANALYZED.value, EventType.CALL_ANALYZED.label
    WEBHOOK_TEST = "webhook.test", "Test event (sent on request)"


def endpoint_takes(events: list[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to `events` is sent an event of this type."""
    return event_type == SentEventType.WEBHOOK_TEST or event_type in events


def new_event_id() -> str:
    # Standard Webhooks: the id is the receiver's idempotency key and must not contain ".".
    return f"evt_{uuid.uuid4().hex}"


# How many secrets rotated out may still sign beside the current one (each for its own
# grace period, webhooks.services.SECRET_ROTATION_GRACE): so many rotations within one
# grace period, and a request carries one signature more than this at most.
MAX_PREVIOUS_SECRETS = 4


@dataclass(frozen=True)
class PreviousSecret:
    """A secret a rotation replaced, and when it stops signing."""

    secret: str
    expires_at: datetime.datetime


def previous_secrets_dump(previous: list[PreviousSecret]) -> str | None:
    """The JSON `previous_secrets` stores (encrypted as one value); None for none."""
    if not previous:
        return None
    return json.dumps(
        [{"secret": p.secret, "expires_at": p.expires_at.isoformat()} for p in previous]
    )


def previous_secrets_load(stored: str | None) -> list[PreviousSecret]:
    return [
        PreviousSecret(item["secret"], datetime.datetime.fromisoformat(item["expires_at"]))
        for item in json.loads(stored or "[]")
    ]


# A holder's encrypted columns: deferred by every read that does not sign, so that a
# page or a delete never decrypts them (nor fails on one no configured key opens).
SECRET_COLUMNS = ("secret", "previous_secret", "previous_secrets")


class SigningSecrets(models.Model):
    """A signing secret (`whsec_...`) and, each for a while after the rotation that
    replaced it, the secrets before it: what signs a webhook endpoint's deliveries and
    an organization's tool requests. Stored encrypted under CRYPTOGRAPHY_KEY, like
    provider keys.

    Every secret replaced within the grace period keeps signing, not the last one alone:
    a rotation retried because its answer was lost would otherwise drop the secret the
    customer still verifies with for one they never saw, and their receiver would
    reject everything (docs/webhooks.md)."""

    secret = EncryptedSecretField(max_length=100)
    # The newest replaced secret alone, as the release before this one signs with it
    # (README "Upgrading": a column stops being used a release before it is dropped).
    # Written beside `previous_secrets`, read by nothing here: drop it in the next release.
    previous_secret = EncryptedSecretField(max_length=100, null=True, blank=True)
    # The replaced secrets still signing, newest first, each with its own end:
    # `previous_secrets_dump`'s JSON, one encrypted value (at most MAX_PREVIOUS_SECRETS).
    previous_secrets = EncryptedSecretField(max_length=1000, null=True, blank=True)
    # When the newest of them (the last rotation's) stops signing: the last to. Readable
    # without decrypting, for the pages.
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def live_secrets(self, now: datetime.datetime) -> list[str]:
        """The secrets that sign now, newest first: the current one, and each replaced
        one until its grace period ends (None where no configured key opened it)."""
        previous = previous_secrets_load(self.previous_secrets)
        secrets = [self.secret, *(p.secret for p in previous if p.expires_at > now)]
        return [secret for secret in secrets if secret]


class WebhookEndpoint(SigningSecrets):
    """A customer's URL receiving the events it subscribed to, signed with its secret.

    `secret` is shown once (on creation and on rotation) and never returned again;
    during a rotation's grace period deliveries are signed with the secret it replaced
    too. All are stored encrypted (`CRYPTOGRAPHY_KEY`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2048)
    description = models.CharField(max_length=255, blank=True, default="")
    events = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    # Why the service disabled the endpoint (e.g. the receiver answered 410 Gone).
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Deleted by its owner (DELETE answers at once): gone from every page, sent nothing;
    # `expire_data` then deletes its deliveries in batches, and it (webhooks.retention).
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["organization", "-created_at", "-id"], name="webhook_endpoint_org"
            ),
        ]

    def __str__(self) -> str:
        return self.url


class ToolSigningSecret(SigningSecrets):
    """An organization's secret signing the requests its workflows' tools are sent
    (Standard Webhooks headers, as deliveries), so a tool endpoint can tell the voice
    agent from anyone who learned its URL. Shown once, when created or rotated; it
    leaves the service otherwise only in the agent session."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="tool_signing_secret"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # The last rotation (the creation until the first).
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"tool signing secret of {self.organization_id}"


class WebhookEvent(models.Model):
    """One event, whatever the number of endpoints receiving it.

    `body` is the exact JSON sent. A `call.status_changed` body is written with the
    event; a `call.ended` body is built at its first delivery attempt (late transcript
    lines included) and then frozen, so every retry and replay sends the same bytes.
    """

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_events"
    )
    type = models.CharField(max_length=40, choices=SentEventType.choices)
    call = models.ForeignKey(
        "calls.Call", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # When the change happened (the payload's `timestamp`).
    occurred_at = models.DateTimeField()
    body = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["call", "type"], name="webhook_event_call")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event on its way to one endpoint: the source of truth for retries."""

    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    # Attempts ever made (numbering the log) and attempts in the current round of the
    # retry schedule (a replay starts a new round).
    attempt_count = models.PositiveIntegerField(default=0)
    round_attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the attempt in flight was claimed (None: none is): a replay leaves it be.
    # Pending with neither: it waits for its endpoint's turn (webhooks.turns).
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="one_delivery_per_endpoint")
        ]
        indexes = [
            models.Index(
                fields=["endpoint", "-created_at", "-id"], name="webhook_delivery_endpoint"
            ),
            # Overdue pending deliveries (a lost wake-up) are found through this.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_pending",
                condition=models.Q(status="pending"),
            ),
            # An endpoint's attempts in flight and deliveries waiting for their turn.
            models.Index(
                fields=["endpoint", "created_at"],
                name="webhook_delivery_endpoint_due",
                condition=models.Q(status="pending"),
            ),
            # Deliveries given up lately, by when (GET /ops/metrics, voicecalls.ops_metrics):
            # only the failed ones, not the millions delivered.
            models.Index(
                fields=["updated_at"],
                name="webhook_delivery_failed",
                condition=models.Q(status="failed"),
            ),
            # Deliveries that ended, by their last change: those past their retention
            # (webhooks.retention) are found through this.
            models.Index(
                fields=["updated_at"],
                name="webhook_delivery_ended",
                condition=~models.Q(status="pending"),
            ),
            # An endpoint's latest success, read when a delivery fails for good.
            models.Index(
                fields=["endpoint", "delivered_at"],
                name="webhook_delivery_succeeded",
                condition=models.Q(status="succeeded"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id}"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery: what came back, how long it took.

    Never the secret or the signature; at most a short excerpt of the response body.
    """

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    # The attempt's `webhook-timestamp`.
    attempted_at = models.DateTimeField()
    url = models.URLField(max_length=2048)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True, default="")
    response_excerpt = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_per_number")
        ]

    def __str__(self) -> str:
        return f"#{self.number} {self.status_code or self.error}"
