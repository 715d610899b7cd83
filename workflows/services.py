"""Writes to workflows. Every write validates the whole definition here, so the API,
the admin and `load_demo` cannot store one the others would refuse.

Deleting is a soft delete: calls point at their workflow version forever (a call's
record and its agent session must keep working), so the row stays with `deleted_at`
set; the slug is free for a new workflow at once (the unique constraint is partial)
and the deleted workflow answers 404 everywhere.
"""

from __future__ import annotations

import copy
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.settings import api_settings

from accounts.models import Organization
from voicecalls.errors import Conflict
from workflows.demo import DEMO_DEFINITION, DEMO_NAME, DEMO_SLUG
from workflows.models import Workflow, WorkflowVersion
from workflows.serializers import (
    WorkflowWriteSerializer,
    definition_of,
    patch_merge,
    workflow_as_input,
)

SLUG_TAKEN = "A workflow with this slug already exists in your organization."


def workflow_validate(
    *,
    organization: Organization,
    definition: Any,
    slug: str | None = None,
    name: str | None = None,
) -> dict:
    """The validated, normalized workflow (defaults filled); ValidationError naming
    the offending field otherwise (`agents.1.handoffs.0`). Transfer destinations pass
    the organization's toll-fraud guard too (its countries, no premium rate).

    `slug` and `name`, when given, replace the definition's own. The API passes its
    body whole as `definition`, so a missing slug, a null one or a body that is not an
    object gets the serializer's own error, as sent.
    """
    data = WorkflowWriteSerializer(data=_write_input(definition, slug=slug, name=name))
    data.is_valid(raise_exception=True)
    _transfer_destinations_check(organization=organization, agents=data.validated_data["agents"])
    return data.validated_data


def _write_input(definition: Any, *, slug: str | None, name: str | None) -> Any:
    if not isinstance(definition, dict):
        return definition
    given = {"slug": slug, "name": name}
    return {**definition, **{key: value for key, value in given.items() if value is not None}}


def _transfer_destinations_check(*, organization: Organization, agents: list[dict]) -> None:
    from telephony.guard import destination_check  # telephony builds on workflows
    from telephony.numbers import is_sip_uri

    for a, agent in enumerate(agents):
        for t, tool in enumerate(agent["tools"]):
            for d, destination in enumerate(tool.get("destinations", [])):
                if not is_sip_uri(destination):
                    attr = f"agents.{a}.tools.{t}.destinations.{d}"
                    destination_check(organization=organization, number=destination, attr=attr)


def workflow_slug_taken(*, organization_id: int, slug: str, exclude: Workflow | None) -> bool:
    """Whether another live workflow of the organization has `slug` (`exclude`: the one
    being changed)."""
    live = Workflow.objects.filter(
        organization_id=organization_id, slug=slug, deleted_at__isnull=True
    )
    if exclude is not None:
        live = live.exclude(pk=exclude.pk)
    return live.exists()


def _slug_error() -> serializers.ValidationError:
    return serializers.ValidationError({"slug": [SLUG_TAKEN]}, code="unique")


@transaction.atomic
def workflow_create(
    *,
    organization: Organization,
    definition: Any,
    slug: str | None = None,
    name: str | None = None,
) -> Workflow:
    """Create a workflow with its first version (arguments as `workflow_validate`)."""
    data = workflow_validate(organization=organization, slug=slug, name=name, definition=definition)
    if workflow_slug_taken(organization_id=organization.pk, slug=data["slug"], exclude=None):
        raise _slug_error()
    try:
        # A savepoint, so a concurrent create with the same slug is a clean 400.
        with transaction.atomic():
            workflow = Workflow.objects.create(
                organization=organization, slug=data["slug"], name=data["name"]
            )
    except IntegrityError as exc:
        raise _slug_error() from exc
    version = WorkflowVersion.objects.create(
        workflow=workflow, number=1, definition=definition_of(data)
    )
    workflow.current_version = version
    workflow.save(update_fields=["current_version"])
    return workflow


def _lock(workflow: Workflow) -> Workflow:
    """The workflow row, locked until the transaction ends, with its current version."""
    locked = Workflow.objects.select_for_update().filter(pk=workflow.pk, deleted_at__isnull=True)
    workflow = locked.first()
    if workflow is None:  # deleted meanwhile
        raise NotFound()
    # Read the current version only now, in a statement of its own: a join in the locking
    # query would be evaluated on the snapshot from before the wait (PostgreSQL, READ
    # COMMITTED) and miss a version another request committed meanwhile.
    workflow.current_version  # noqa: B018 - loads it
    return workflow


def _apply(*, workflow: Workflow, data: dict) -> Workflow:
    """Store validated data on a locked workflow: a changed definition becomes a new
    version; the same definition again adds none."""
    if workflow_slug_taken(
        organization_id=workflow.organization_id, slug=data["slug"], exclude=workflow
    ):
        raise _slug_error()
    new_definition = definition_of(data)
    if workflow.current_version is None or workflow.current_version.definition != new_definition:
        latest = workflow.versions.aggregate(latest=Max("number"))["latest"] or 0
        workflow.current_version = WorkflowVersion.objects.create(
            workflow=workflow, number=latest + 1, definition=new_definition
        )
    workflow.slug = data["slug"]
    workflow.name = data["name"]
    try:
        with transaction.atomic():
            workflow.save(update_fields=["slug", "name", "current_version", "updated_at"])
    except IntegrityError as exc:
        raise _slug_error() from exc
    return workflow


@transaction.atomic
def workflow_update(
    *, workflow: Workflow, definition: Any, slug: str | None = None, name: str | None = None
) -> Workflow:
    """Replace a workflow's slug, name and definition (PUT; arguments as
    `workflow_validate`).

    A changed definition becomes a new immutable version that new calls start with;
    calls already made keep theirs.
    """
    data = workflow_validate(
        organization=workflow.organization, slug=slug, name=name, definition=definition
    )
    return _apply(workflow=_lock(workflow), data=data)


@transaction.atomic
def workflow_patch(*, workflow: Workflow, changes: Any) -> Workflow:
    """Change the top-level fields `changes` names (PATCH; `settings` merges key by key).

    The merge happens under the row lock, so concurrent patches of different fields
    never undo each other; the merged workflow is validated as a whole.
    """
    workflow = _lock(workflow)
    merged = patch_merge(workflow_as_input(workflow), changes)
    if not isinstance(merged, dict):
        raise serializers.ValidationError(
            {api_settings.NON_FIELD_ERRORS_KEY: ["Expected a JSON object."]}, code="invalid"
        )
    data = workflow_validate(
        organization=workflow.organization,
        slug=merged.get("slug"),
        name=merged.get("name"),
        definition=merged,
    )
    return _apply(workflow=workflow, data=data)


class WorkflowInUse(Conflict):
    default_detail = (
        "Inbound phone numbers reach this workflow: point them at another workflow or "
        "delete them first."
    )
    default_code = "workflow_in_use"


@transaction.atomic
def workflow_delete(*, workflow: Workflow) -> None:
    """Soft delete (see the module docstring); deleting twice changes nothing.

    `WorkflowInUse` while a phone number routes callers to it: its callers would go
    unanswered. Checked holding the row, which a number's create or move locks too.
    """
    live = Workflow.objects.select_for_update().filter(pk=workflow.pk, deleted_at__isnull=True)
    if not list(live.values_list("pk")):
        return
    if Workflow.objects.filter(pk=workflow.pk, phone_numbers__isnull=False).exists():
        raise WorkflowInUse()
    live.update(deleted_at=timezone.now(), updated_at=timezone.now())


@transaction.atomic
def workflow_demo_load(*, organization: Organization) -> tuple[Workflow, bool]:
    """Idempotently create the demo workflow `daily-call`; returns (workflow, created)."""
    demo = Workflow.objects.filter(
        organization=organization, slug=DEMO_SLUG, deleted_at__isnull=True
    )
    existing = demo.select_for_update().first()
    if existing is not None:
        return existing, False
    try:
        workflow = workflow_create(
            organization=organization,
            slug=DEMO_SLUG,
            name=DEMO_NAME,
            definition=copy.deepcopy(DEMO_DEFINITION),
        )
    except serializers.ValidationError:
        # A load running at the same time (two `make run`s) created it first.
        existing = demo.first()
        if existing is None:
            raise
        return existing, False
    return workflow, True
