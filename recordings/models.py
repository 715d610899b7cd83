"""Call recordings: one `Recording` per recorded call (the egress LiveKit runs for it and
the OGG file it wrote), and an organization's own bucket (`RecordingStorage`).

A recording's status only moves forward (`STATUS_RANK`): egress webhooks arrive late,
twice or out of order, and a late `egress_started` must not reopen a finished file.
Recordings are personal data: they go with the call (CASCADE), and `recording_delete`
removes the file itself.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call
from providerkeys.fields import EncryptedSecretField

MASK = "••••"


class RecordingStatus(models.TextChoices):
    STARTING = "starting", "Starting"
    RECORDING = "recording", "Recording"
    PROCESSING = "processing", "Processing"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"
    DELETED = "deleted", "Deleted"


S = RecordingStatus
# A status may only be replaced by one of a higher rank; complete and failed are final
# (only a deletion follows them).
STATUS_RANK = {
    S.STARTING: 0,
    S.RECORDING: 1,
    S.PROCESSING: 2,
    S.COMPLETE: 3,
    S.FAILED: 3,
    S.DELETED: 4,
}


def statuses_below(status: str) -> list[str]:
    return [name for name, rank in STATUS_RANK.items() if rank < STATUS_RANK[status]]


class StorageKind(models.TextChoices):
    PLATFORM = "platform", "Platform bucket"
    ORGANIZATION = "organization", "Organization's bucket"


class Recording(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    call = models.OneToOneField(Call, on_delete=models.CASCADE, related_name="recording")
    # The call's: recording retention finds an organization's recordings not yet deleted
    # by it (`recording_org_live`), not through all its calls. Null only in rows an
    # older release wrote during an upgrade (migration 0005 filled the rest).
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, related_name="+", db_index=False
    )
    status = models.CharField(
        max_length=10, choices=RecordingStatus.choices, default=RecordingStatus.STARTING
    )
    # Set from LiveKit's answer to the start request, or from the first egress webhook
    # for the call's room when that overtook the answer.
    egress_id = models.CharField(max_length=100, unique=True, null=True, blank=True)
    storage = models.CharField(max_length=12, choices=StorageKind.choices)
    # Where the file is, kept as it was when the recording started: an organization
    # changing its bucket later still finds its older recordings (never credentials).
    endpoint = models.CharField(max_length=255, blank=True)
    bucket = models.CharField(max_length=63)
    region = models.CharField(max_length=32, blank=True)
    object_key = models.CharField(max_length=300, unique=True)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    # LiveKit's reason for a failure, or ours (LiveKit unreachable); of a complete one,
    # why its file ended before the call (LiveKit's limit reached). Never credentials.
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="recording_status_created"),
            # `recordings_expire`: an organization's recordings not yet deleted, oldest
            # first, never the ones it deleted before (its whole history).
            models.Index(
                fields=["organization", "created_at"],
                condition=~models.Q(status="deleted"),
                name="recording_org_live",
            ),
            # `recordings_reconcile`: egresses not known to have ended (a few), not the
            # millions of recordings that ended.
            models.Index(
                fields=["created_at"],
                condition=models.Q(ended_at__isnull=True, egress_id__isnull=False),
                name="recording_egress_unended",
            ),
            # `recordings_wake_lost_starts` and `recordings_*_starts_settle`: starts
            # with no egress id, going, failed by LiveKit or deleted (a few in flight),
            # not the recordings settled as failed before LiveKit gave one.
            models.Index(
                fields=["created_at"],
                condition=models.Q(egress_id__isnull=True, ended_at__isnull=True),
                name="recording_unclaimed_unended",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.call_id} {self.status}"


class RecordingStorage(models.Model):
    """An organization's own S3-compatible bucket for its calls' recordings. The access
    key id and secret are ciphertext at rest (the provider keys' encryption); the API
    and admin show the key id masked and never the secret."""

    organization = models.OneToOneField(
        Organization,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="recording_storage",
    )
    endpoint = models.CharField(max_length=255, blank=True, help_text="Empty: AWS S3.")
    bucket = models.CharField(max_length=63)
    region = models.CharField(max_length=32)
    access_key_id = EncryptedSecretField(max_length=128)
    secret_access_key = EncryptedSecretField(max_length=256)
    access_key_id_last4 = models.CharField(max_length=4)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    # Read only where they are used (signing, the egress start): a row whose ciphertext
    # no configured key opens must still be shown, replaced and removed.
    SECRET_FIELDS = ("access_key_id", "secret_access_key")

    class Meta:
        verbose_name_plural = "recording storage"

    def __str__(self) -> str:
        return f"{self.organization_id} s3://{self.bucket}"

    @property
    def access_key_id_masked(self) -> str:
        return f"{MASK}{self.access_key_id_last4}"
