from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import connection
from django.db.models import QuerySet

from accounts.models import Organization
from voicecalls.db import bound_cursor
from workflows.models import Workflow, WorkflowVersion


def workflow_queryset(*, organization: Organization) -> QuerySet[Workflow]:
    """The organization's live (not deleted) workflows, with their current version:
    the only way client views reach workflows."""
    return Workflow.objects.select_related("current_version").filter(
        organization=organization, deleted_at__isnull=True
    )


def workflow_list(*, organization: Organization) -> QuerySet[Workflow]:
    return workflow_queryset(organization=organization).order_by("-created_at", "-id")


@dataclass(frozen=True)
class CallTarget:
    """What a new call takes from its workflow: ids, slug and its current version's limits."""

    workflow_id: uuid.UUID
    workflow_slug: str
    version_id: uuid.UUID
    connect_timeout_seconds: int
    max_duration_seconds: int
    ring_timeout_seconds: int = 30
    dial_deadline_seconds: int = 60


def workflow_call_target(
    *, organization: Organization, slug: str | None = None, workflow_id: uuid.UUID | None = None
) -> CallTarget | None:
    """The organization's live workflow with that slug (or, given, that id: a number's
    workflow, which a rename of its slug must not lose), as a call starts from it.

    `POST /calls` reads this on every create: one plain statement, without the ORM's
    query compilation and model building (bench/README.md), reading only the
    version's `settings` (its prompts can be large). The limits come
    from `WorkflowVersion`'s own properties, so their defaults live in one place. Which
    workflows it sees is `workflow_queryset`'s rule (the organization's, not deleted),
    spelled in SQL: change both together (tests/test_workflow_selectors.py).
    """
    if (slug is None) == (workflow_id is None):
        raise TypeError("workflow_call_target takes a slug or a workflow_id.")
    workflow_meta, version_meta = Workflow._meta, WorkflowVersion._meta
    definition_field = version_meta.get_field("definition")
    column, value = (
        ("slug", slug)
        if workflow_id is None
        else ("id", workflow_meta.pk.get_db_prep_value(workflow_id, connection))
    )
    settings = (
        "v.definition -> 'settings'"
        if connection.vendor == "postgresql"
        else "json_extract(v.definition, '$.settings')"
    )
    with bound_cursor() as cursor:
        cursor.execute(
            f"SELECT w.id, w.slug, v.id, {settings} FROM {workflow_meta.db_table} w"
            f" JOIN {version_meta.db_table} v ON v.id = w.current_version_id"
            f" WHERE w.organization_id = %s AND w.{column} = %s AND w.deleted_at IS NULL",
            [
                workflow_meta.get_field("organization").get_db_prep_value(
                    organization.pk, connection
                ),
                value,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    found_id, found_slug, version_id, limits = row
    if limits is not None:
        limits = definition_field.from_db_value(limits, None, connection)
    version = WorkflowVersion(definition={} if limits is None else {"settings": limits})
    return CallTarget(
        workflow_id=workflow_meta.pk.to_python(found_id),
        workflow_slug=found_slug,
        version_id=version_meta.pk.to_python(version_id),
        connect_timeout_seconds=version.connect_timeout_seconds,
        max_duration_seconds=version.max_duration_seconds,
        ring_timeout_seconds=version.ring_timeout_seconds,
        dial_deadline_seconds=version.dial_deadline_seconds,
    )


def workflow_versions(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    """Every version of a workflow, newest first."""
    return WorkflowVersion.objects.filter(workflow=workflow).order_by("-number")
