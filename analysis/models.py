"""Post-call analysis: one row per analysed call, the source of truth for its run.

The task queue only wakes a run up (`analysis.tasks`); the row says which run is
current (`run`), how many provider attempts it made, when the next is due, and the
result. Results are personal data: they go with the call (CASCADE) and its erasure.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from calls.models import Call


class AnalysisStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


OPEN_STATUSES = (AnalysisStatus.PENDING, AnalysisStatus.RUNNING)
FINAL_STATUSES = (AnalysisStatus.COMPLETED, AnalysisStatus.FAILED, AnalysisStatus.SKIPPED)


class CallAnalysis(models.Model):
    call = models.OneToOneField(
        Call, on_delete=models.CASCADE, primary_key=True, related_name="analysis"
    )
    status = models.CharField(
        max_length=10, choices=AnalysisStatus.choices, default=AnalysisStatus.PENDING
    )
    summary = models.TextField(null=True, blank=True)
    structured_data = models.JSONField(null=True, blank=True)
    success = models.BooleanField(null=True, blank=True)
    # Why it failed or was skipped, for people; never holds the provider key.
    error = models.CharField(max_length=500, blank=True, default="")
    provider = models.CharField(max_length=50, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    # A re-run starts run + 1; a wake-up for an older run does nothing.
    run = models.PositiveIntegerField(default=1)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "call analyses"
        indexes = [
            # The open runs by due time, for the sweep of lost wake-ups (a few rows).
            models.Index(
                fields=["next_attempt_at"],
                name="callanalysis_open_due",
                condition=models.Q(status__in=OPEN_STATUSES),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.call_id} {self.status}"
