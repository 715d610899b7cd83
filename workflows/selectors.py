from __future__ import annotations

from accounts.models import Organization
from workflows.models import Workflow


def workflow_get_by_slug(*, organization: Organization, slug: str) -> Workflow | None:
    """The organization's live workflow with that slug, with its current version."""
    return (
        Workflow.objects.select_related("current_version")
        .filter(organization=organization, slug=slug, deleted_at__isnull=True)
        .first()
    )
