from __future__ import annotations

import uuid

from django.db import models

from accounts.models import Organization

DEFAULT_CONNECT_TIMEOUT_SECONDS = 60
DEFAULT_MAX_DURATION_SECONDS = 1800
DEFAULT_RING_TIMEOUT_SECONDS = 30
DEFAULT_DIAL_DEADLINE_SECONDS = 60


class Workflow(models.Model):
    """A team of voice agents a call runs. Its id and slug are stable across versions.

    The definition itself lives in immutable `WorkflowVersion`s; `current_version`
    is what new calls start with, so editing never changes calls already made.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="workflows"
    )
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    current_version = models.ForeignKey(
        "WorkflowVersion", on_delete=models.PROTECT, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Soft delete: calls keep pointing at a deleted workflow's versions.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "slug"],
                condition=models.Q(deleted_at__isnull=True),
                name="workflow_slug_unique_per_organization",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="workflow_org_created")
        ]

    def __str__(self) -> str:
        return self.slug


class WorkflowVersion(models.Model):
    """One immutable definition of a workflow: `start_agent`, `agents`, `settings`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "number"], name="workflow_version_number_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.number}"

    @property
    def start_agent(self) -> str:
        return self.definition["start_agent"]

    @property
    def settings(self) -> dict:
        return self.definition.get("settings") or {}

    @property
    def analysis(self) -> dict | None:
        return self.definition.get("analysis")

    @property
    def connect_timeout_seconds(self) -> int:
        return int(self.settings.get("connect_timeout_seconds", DEFAULT_CONNECT_TIMEOUT_SECONDS))

    @property
    def max_duration_seconds(self) -> int:
        return int(self.settings.get("max_duration_seconds", DEFAULT_MAX_DURATION_SECONDS))

    @property
    def ring_timeout_seconds(self) -> int:
        return int(self.settings.get("ring_timeout_seconds", DEFAULT_RING_TIMEOUT_SECONDS))

    @property
    def dial_deadline_seconds(self) -> int:
        return int(self.settings.get("dial_deadline_seconds", DEFAULT_DIAL_DEADLINE_SECONDS))
