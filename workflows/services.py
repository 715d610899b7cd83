from __future__ import annotations

import copy

from django.db import transaction

from accounts.models import Organization
from workflows.demo import DEMO_DEFINITION, DEMO_NAME, DEMO_SLUG
from workflows.models import Workflow, WorkflowVersion


@transaction.atomic
def workflow_create(
    *, organization: Organization, slug: str, name: str, definition: dict
) -> Workflow:
    """Create a workflow with its first version."""
    workflow = Workflow.objects.create(organization=organization, slug=slug, name=name)
    version = WorkflowVersion.objects.create(workflow=workflow, number=1, definition=definition)
    workflow.current_version = version
    workflow.save(update_fields=["current_version"])
    return workflow


@transaction.atomic
def workflow_demo_load(*, organization: Organization) -> tuple[Workflow, bool]:
    """Idempotently create the demo workflow `daily-call`; returns (workflow, created)."""
    existing = (
        Workflow.objects.select_for_update()
        .filter(organization=organization, slug=DEMO_SLUG, deleted_at__isnull=True)
        .first()
    )
    if existing is not None:
        return existing, False
    workflow = workflow_create(
        organization=organization,
        slug=DEMO_SLUG,
        name=DEMO_NAME,
        definition=copy.deepcopy(DEMO_DEFINITION),
    )
    return workflow, True
