from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from providerkeys.fields import EncryptedSecretField

PASSWORD_MASK = "••••"
PASSWORD_MAX_LENGTH = 256


class TrunkDirection(models.TextChoices):
    OUTBOUND = "outbound", "Outbound"
    INBOUND = "inbound", "Inbound"


class SipTrunkManager(models.Manager):
    """Trunks without their password: LiveKit holds it (sent when the trunk was made) and
    nothing here reads it again, so a password no configured key opens (a fallback
    removed too early, docs/key-rotation.md) fails nothing that loads a trunk. Whether
    there is one comes from the column, undecrypted."""

    def get_queryset(self) -> models.QuerySet:
        has_password = models.Q(auth_password__isnull=False)
        return (
            super()
            .get_queryset()
            .defer("auth_password")
            .annotate(
                has_auth_password=models.ExpressionWrapper(
                    has_password, output_field=models.BooleanField()
                )
            )
        )


class SipTrunk(models.Model):
    """An organization's SIP trunk at its carrier, mirrored in LiveKit (`livekit_trunk_id`).

    The password is ciphertext at rest (the provider keys' encryption) and never shown:
    the API and admin show only whether there is one.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="sip_trunks"
    )
    name = models.CharField(max_length=100)
    direction = models.CharField(max_length=8, choices=TrunkDirection.choices)
    # The carrier's SIP host (outbound trunks).
    address = models.CharField(max_length=255, blank=True)
    numbers = models.JSONField(default=list, help_text="E.164 numbers of this trunk.")
    auth_username = models.CharField(max_length=255, blank=True)
    auth_password = EncryptedSecretField(max_length=PASSWORD_MAX_LENGTH, null=True, blank=True)
    livekit_trunk_id = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = SipTrunkManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at", "-id"], name="trunk_list")]

    def __str__(self) -> str:
        return f"{self.name} ({self.direction})"

    @property
    def auth_password_masked(self) -> str | None:
        has_password = getattr(self, "has_auth_password", None)
        if has_password is None:  # not read through the manager: it was just made
            has_password = bool(self.auth_password)
        return PASSWORD_MASK if has_password else None


class PhoneNumberStatus(models.TextChoices):
    UNVERIFIED = "unverified", "Unverified"
    VERIFIED = "verified", "Verified"


class PhoneNumber(models.Model):
    """A number on one of the organization's inbound trunks that callers dial to reach a
    workflow. Unique platform-wide; `unverified` (no LiveKit dispatch rule, so no calls)
    until staff verify it in the admin, so nobody can claim another customer's number."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="phone_numbers"
    )
    number = models.CharField(max_length=16, unique=True, help_text="E.164.")
    # PROTECT: a trunk is deleted only once its numbers are (their dispatch rules name it).
    trunk = models.ForeignKey(SipTrunk, on_delete=models.PROTECT, related_name="phone_numbers")
    workflow = models.ForeignKey(
        "workflows.Workflow", on_delete=models.PROTECT, related_name="phone_numbers"
    )
    status = models.CharField(
        max_length=10, choices=PhoneNumberStatus.choices, default=PhoneNumberStatus.UNVERIFIED
    )
    livekit_dispatch_rule_id = models.CharField(max_length=100, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="phone_number_list")
        ]
        constraints = [
            # A verified number always has its LiveKit rule; an unverified one never.
            models.CheckConstraint(
                condition=(
                    models.Q(status="verified") & ~models.Q(livekit_dispatch_rule_id="")
                    | models.Q(status="unverified", livekit_dispatch_rule_id="")
                ),
                name="phone_number_rule_iff_verified",
            )
        ]

    def __str__(self) -> str:
        return self.number


class RefusedTransfer(models.Model):
    """A transfer to a number the carrier dialed and the destination did not take (busy,
    no answer): the number was dialed that day, and counts against the organization's
    daily cap as a busy outbound call does. Only when: whom is no one's business here."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    attempted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["organization", "attempted_at"], name="refused_transfer_by_day")
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.attempted_at:%Y-%m-%d %H:%M}"
