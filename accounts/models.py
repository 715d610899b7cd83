from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from accounts.validators import region_codes_validator

# Retention settings, in days: at least a day, at most ten years.
RETENTION_DAYS = (1, 3650)
RETENTION_SETTINGS = (
    "transcript_retention_days",
    "recording_retention_days",
    "user_data_retention_days",
)


class Organization(models.Model):
    """A customer: owns workflows, calls, provider keys and client API keys."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    concurrency_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most calls not yet ended at once; empty means the platform default "
        "(CALLS_CONCURRENCY_LIMIT).",
    )
    # Moved by every call creation and every end, in their transactions, so the limit
    # check is one conditional UPDATE however many calls are open (calls/limits.py).
    open_calls = models.PositiveIntegerField(
        default=0,
        db_default=0,
        editable=False,
        help_text="Calls not yet ended (pending, connecting, active), kept as a counter.",
    )
    # Phone calls (DESIGN.md "Phone calls"). The organization's own choices, which its
    # client keys set (GET/PATCH /organization) ...
    default_caller_number = models.CharField(
        max_length=16,
        null=True,
        blank=True,
        help_text="E.164 caller id of outbound calls without `from_number` (one of the "
        "organization's outbound trunk numbers).",
    )
    outbound_calls_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the ceiling below."
    )
    outbound_calls_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the ceiling below."
    )
    # ... and the platform's ceilings on them, which only staff set (admin): they bound
    # money and abuse (toll fraud).
    allowed_destination_countries = models.JSONField(
        default=list,
        db_default=[],
        blank=True,
        validators=[region_codes_validator],
        help_text='ISO 3166 region codes outbound calls may reach, e.g. ["US", "CA"]; empty: none.',
    )
    max_outbound_calls_per_minute = models.PositiveIntegerField(
        default=10, db_default=10, help_text="Ceiling of outbound_calls_per_minute."
    )
    max_outbound_calls_per_day = models.PositiveIntegerField(
        default=500, db_default=500, help_text="Ceiling of outbound_calls_per_day (per UTC day)."
    )

    # Retention (docs/privacy.md): how many days after a call ended its transcript, its
    # recording and who the caller was are kept; empty keeps them. `expire_data` deletes
    # what is past them.
    transcript_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(RETENTION_DAYS[0]), MaxValueValidator(RETENTION_DAYS[1])],
        help_text="Days a call's transcript (and tool calls) is kept after the call ended; "
        "empty: kept.",
    )
    recording_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(RETENTION_DAYS[0]), MaxValueValidator(RETENTION_DAYS[1])],
        help_text="Days a call's recording is kept after the call ended; empty: kept.",
    )
    user_data_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(RETENTION_DAYS[0]), MaxValueValidator(RETENTION_DAYS[1])],
        help_text="Days a call's user_id, user_data, metadata and the caller's or callee's "
        "phone number are kept after the call ended; empty: kept.",
    )

    # Staff suspend an organization (fraud, toll fraud, non-payment) from the admin: its
    # client keys are refused and no new call starts; nothing is deleted (README).
    suspended_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Empty: not suspended."
    )
    suspension_reason = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text="Why staff suspended it; staff only, never shown to the customer.",
    )

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(**{f"{name}__isnull": True})
                | models.Q(**{f"{name}__range": RETENTION_DAYS}),
                name=f"organization_{name}_range",
            )
            for name in RETENTION_SETTINGS
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None

    @property
    def effective_concurrency_limit(self) -> int:
        if self.concurrency_limit is not None:
            return self.concurrency_limit
        return settings.CALLS_CONCURRENCY_LIMIT

    @property
    def effective_outbound_calls_per_minute(self) -> int:
        own = self.outbound_calls_per_minute
        ceiling = self.max_outbound_calls_per_minute
        return ceiling if own is None else min(own, ceiling)

    @property
    def effective_outbound_calls_per_day(self) -> int:
        own = self.outbound_calls_per_day
        ceiling = self.max_outbound_calls_per_day
        return ceiling if own is None else min(own, ceiling)


class KeyKind(models.TextChoices):
    CLIENT = "client", "Client"
    AGENT = "agent", "Agent worker"


class APIKey(AbstractAPIKey):
    """A hashed API key. Only its prefix is readable after creation.

    Client keys belong to one organization. Agent keys (for the voice-agent worker)
    either belong to one organization (a customer running their own worker) or to
    none (the platform's fleet, reaching any call).
    """

    kind = models.CharField(max_length=10, choices=KeyKind.choices, default=KeyKind.CLIENT)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys"
    )

    @property
    def has_expired(self) -> bool:
        # The library counts a key usable at its expiry instant; it has expired by then.
        return self.expiry_date is not None and self.expiry_date <= timezone.now()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="agent") | models.Q(organization__isnull=False),
                name="client_key_has_organization",
            ),
        ]


class RateLimitState(models.Model):
    """One rate limit's state (GCRA): the time by which the requests let through so far
    would have been spaced out at the allowed rate. accounts/rates.py moves it."""

    key = models.CharField(max_length=200, primary_key=True)
    tat_us = models.BigIntegerField(help_text="Theoretical arrival time, in Unix microseconds.")

    class Meta:
        verbose_name = "rate limit state"

    def __str__(self) -> str:
        return self.key
