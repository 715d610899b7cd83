from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Organization
from workflows.models import Workflow, WorkflowVersion


def workflow_queryset(*, organization: Organization) -> QuerySet[Workflow]:
    """The organization's live (not deleted) workflows, with their current version:
    the only way client views reach workflows."""
    return Workflow.objects.select_related("current_version").filter(
        organization=organization, deleted_at__isnull=True
    )


def workflow_list(*, organization: Organization) -> QuerySet[Workflow]:
    return workflow_queryset(organization=organization).order_by("-created_at", "-id")


def workflow_get_by_slug(*, organization: Organization, slug: str) -> Workflow | None:
    """The organization's live workflow with that slug, with its current version."""
    return workflow_queryset(organization=organization).filter(slug=slug).first()


def workflow_versions(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    """Every version of a workflow, newest first."""
    return WorkflowVersion.objects.filter(workflow=workflow).order_by("-number")
