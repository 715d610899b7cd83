"""Erasures: a client's request to erase one user's personal data from its calls, and
the audit record of it (docs/privacy.md).

The record keeps who asked (the API key's prefix and name), when, and how many calls
were affected, never the data: the user id only as a keyed hash. The user id itself
is needed while the erasure runs (it finds the calls); it is stored encrypted until
then and removed when the erasure completes.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from providerkeys.fields import EncryptedSecretField


class ErasureStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    # Erasing, or waiting for calls that were still open to end (their phone numbers
    # and LiveKit identities are removed once they have).
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"


class Erasure(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="erasures"
    )
    status = models.CharField(
        max_length=10, choices=ErasureStatus.choices, default=ErasureStatus.PENDING
    )
    # HMAC-SHA256 of the organization and the user id (privacy.keys.user_id_hash).
    user_id_hash = models.CharField(max_length=64)
    # The user id, encrypted (CRYPTOGRAPHY_KEY), while the erasure runs; null afterwards.
    user_id = EncryptedSecretField(max_length=255, null=True, blank=True)
    requested_by_key_prefix = models.CharField(max_length=16)
    requested_by_key_name = models.CharField(max_length=50)
    calls_matched = models.PositiveIntegerField(default=0)
    calls_erased = models.PositiveIntegerField(default=0)
    # Erased calls still open when last looked at: their identities wait for the end.
    calls_waiting = models.PositiveIntegerField(default=0)
    transcript_lines_erased = models.PositiveBigIntegerField(default=0)
    webhook_events_scrubbed = models.PositiveIntegerField(default=0)
    recordings_deleted = models.PositiveIntegerField(default=0, db_default=0)
    batches = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A run holds the erasure until then; a run that died is taken over afterwards.
    lease_until = models.DateTimeField(null=True, blank=True)
    # When `expire_data` should wake it again (it waits for open calls to end).
    next_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="erasure_org"),
            # Unfinished erasures are few: `expire_data` looks for the ones to wake.
            models.Index(
                fields=["next_run_at"],
                name="erasure_unfinished",
                condition=~models.Q(status="completed"),
            ),
            models.Index(fields=["user_id_hash"], name="erasure_user_hash"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class RetainedIdentity(models.Model):
    """Who a call was with, as a keyed hash (`privacy.keys.user_id_hash`), kept when
    user-data retention removed the identity itself but the call's words or recording
    are kept longer: an erasure of that user must still find them. Gone when the call
    is erased."""

    id = models.BigAutoField(primary_key=True)
    call = models.ForeignKey("calls.Call", on_delete=models.CASCADE, related_name="+")
    user_id_hash = models.CharField(max_length=64)

    class Meta:
        verbose_name_plural = "retained identities"
        indexes = [models.Index(fields=["user_id_hash"], name="retained_identity_hash")]
        constraints = [
            models.UniqueConstraint(fields=["call", "user_id_hash"], name="one_hash_per_call")
        ]

    def __str__(self) -> str:
        return f"{self.call_id} {self.user_id_hash[:12]}"
