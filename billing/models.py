"""What calls used and cost, and the organizations' own prices.

`CallCost` is one row per call that reported usage or ended: the agent's latest usage
snapshot, its post-call analysis's usage, and the cost computed from them and the call's
timings when the call ended (or when usage arrives after the end). The organization,
workflow and the call's creation time ride along, so the daily usage reads this table's
own index, not the calls'.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call

# Per-token prices run to 10^-9 USD; totals to a million dollars and more.
PRICE_DIGITS, PRICE_PLACES = 20, 12
COST_DIGITS, COST_PLACES = 16, 6


class CostComponent(models.TextChoices):
    STT = "stt", "Speech to text (per minute of audio)"
    LLM_PROMPT = "llm_prompt", "LLM prompt tokens"
    LLM_COMPLETION = "llm_completion", "LLM completion tokens"
    LLM_CACHED = "llm_cached", "LLM cached prompt tokens"
    TTS = "tts", "Text to speech (per character)"
    ROOM = "room", "LiveKit room (per minute)"
    SIP = "sip", "SIP (per minute)"


class CostPhase(models.TextChoices):
    CALL = "call", "The call: its agent's STT, LLM and TTS, its room and SIP minutes"
    ANALYSIS = "analysis", "The post-call analysis: its LLM requests' tokens"


class PriceOverride(models.Model):
    """An organization's own price for one (component, provider, model); model `*`
    prices the provider's models that have no line of their own."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="price_overrides"
    )
    component = models.CharField(max_length=20, choices=CostComponent.choices)
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=100)
    unit_price_usd = models.DecimalField(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["component", "provider", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "component", "provider", "model"],
                name="price_override_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.component} {self.provider}/{self.model}: {self.unit_price_usd}"


class CallCost(models.Model):
    call = models.OneToOneField(
        Call, on_delete=models.CASCADE, primary_key=True, related_name="cost"
    )
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    workflow_id = models.UUIDField()
    call_created_at = models.DateTimeField()
    # The agent's cumulative usage per provider and model, as of `usage_at` (the newest
    # snapshot wins: replayed and reordered reports change nothing).
    usage = models.JSONField(default=list, blank=True)
    usage_at = models.DateTimeField(null=True, blank=True)
    # `usage` is the sum of these: each agent session's newest report, `{session:
    # {"usage", "at"}}` (a re-dispatched agent counts from zero in a new session).
    usage_sessions = models.JSONField(default=dict, db_default={}, blank=True)
    # The post-call analysis's LLM usage, every request of every run that reported
    # tokens summed per provider and model (as `usage`): each attempt adds its own once
    # (analysis.services._finish), a re-run adds its requests, the provider bills them all.
    analysis_usage = models.JSONField(default=list, db_default=[], blank=True)
    # Computed once the call ended; null before.
    total_usd = models.DecimalField(
        max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True, blank=True
    )
    breakdown = models.JSONField(null=True, blank=True)
    complete = models.BooleanField(default=True)
    computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["organization", "call_created_at"], name="call_cost_org_created"),
            models.Index(fields=["call_created_at"], name="call_cost_created"),
        ]

    def __str__(self) -> str:
        return f"{self.call_id}: {self.total_usd}"
