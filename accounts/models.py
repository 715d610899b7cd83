from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


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
        editable=False,
        help_text="Calls not yet ended (pending, connecting, active), kept as a counter.",
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def effective_concurrency_limit(self) -> int:
        if self.concurrency_limit is not None:
            return self.concurrency_limit
        return settings.CALLS_CONCURRENCY_LIMIT


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
    tat = models.FloatField(help_text="Theoretical arrival time, in Unix seconds.")

    class Meta:
        verbose_name = "rate limit state"

    def __str__(self) -> str:
        return self.key
