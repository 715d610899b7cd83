"""`workflow_call_target`: what a new call takes from its workflow, in one statement,
only for the organization's live workflows."""

from __future__ import annotations

import copy

import pytest
from django.utils import timezone

from accounts.models import Organization
from tests.factories import WorkflowFactory
from workflows.demo import DEMO_DEFINITION
from workflows.models import Workflow
from workflows.selectors import CallTarget, workflow_call_target

pytestmark = pytest.mark.django_db


def test_a_live_workflow_gives_its_ids_slug_and_current_versions_limits(
    organization: Organization,
) -> None:
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["settings"] = {"connect_timeout_seconds": 25, "max_duration_seconds": 600}
    workflow = WorkflowFactory(organization=organization, slug="support", definition=definition)

    assert workflow_call_target(organization=organization, slug="support") == CallTarget(
        workflow_id=workflow.pk,
        workflow_slug="support",
        version_id=workflow.current_version_id,
        connect_timeout_seconds=25,
        max_duration_seconds=600,
    )


def test_limits_missing_from_the_definition_take_the_versions_defaults(
    organization: Organization,
) -> None:
    definition = copy.deepcopy(DEMO_DEFINITION)
    del definition["settings"]
    WorkflowFactory(organization=organization, slug="plain", definition=definition)

    target = workflow_call_target(organization=organization, slug="plain")

    assert (target.connect_timeout_seconds, target.max_duration_seconds) == (60, 1800)


def test_a_limit_left_out_of_the_settings_takes_its_default(organization: Organization) -> None:
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["settings"] = {"max_duration_seconds": 300}
    WorkflowFactory(organization=organization, slug="short", definition=definition)

    target = workflow_call_target(organization=organization, slug="short")

    assert (target.connect_timeout_seconds, target.max_duration_seconds) == (60, 300)


def test_it_follows_the_current_version(organization: Organization, workflow: Workflow) -> None:
    newer = workflow.versions.create(number=2, definition=copy.deepcopy(DEMO_DEFINITION))
    Workflow.objects.filter(pk=workflow.pk).update(current_version=newer)

    assert workflow_call_target(organization=organization, slug="daily-call").version_id == newer.pk


def test_a_deleted_workflow_is_none(organization: Organization, workflow: Workflow) -> None:
    Workflow.objects.filter(pk=workflow.pk).update(deleted_at=timezone.now())

    assert workflow_call_target(organization=organization, slug="daily-call") is None


def test_another_organizations_workflow_is_none(
    organization: Organization, outsider_workflow: Workflow
) -> None:
    assert workflow_call_target(organization=organization, slug="daily-call") is None


@pytest.mark.parametrize("slug", ["", "Daily-Call", "daily-call ", "daily%", "' OR 1=1 --"])
def test_only_the_exact_slug_matches(
    organization: Organization, workflow: Workflow, slug: str
) -> None:
    assert workflow_call_target(organization=organization, slug=slug) is None


def test_by_id_it_finds_the_workflow_under_its_slug_of_now_and_only_the_organizations(
    organization: Organization, outsider_workflow: Workflow
) -> None:
    workflow = WorkflowFactory(organization=organization, slug="renamed")

    target = workflow_call_target(organization=organization, workflow_id=workflow.pk)

    assert (target.workflow_id, target.workflow_slug) == (workflow.pk, "renamed")
    assert target.version_id == workflow.current_version_id
    assert workflow_call_target(organization=organization, workflow_id=outsider_workflow.pk) is None
    Workflow.objects.filter(pk=workflow.pk).update(deleted_at=timezone.now())
    assert workflow_call_target(organization=organization, workflow_id=workflow.pk) is None


def test_it_takes_one_query(
    organization: Organization, workflow: Workflow, django_assert_num_queries
) -> None:
    with django_assert_num_queries(1):
        workflow_call_target(organization=organization, slug="daily-call")


def test_it_sees_exactly_the_workflows_workflow_queryset_sees(
    organization: Organization, outsider: Organization
) -> None:
    """The rule `workflow_call_target` spells in SQL is `workflow_queryset`'s."""
    from workflows.selectors import workflow_queryset
    from workflows.services import workflow_delete

    live = WorkflowFactory(organization=organization, slug="live")
    workflow_delete(workflow=WorkflowFactory(organization=organization, slug="gone"))
    workflow_delete(workflow=WorkflowFactory(organization=organization, slug="again"))
    again = WorkflowFactory(organization=organization, slug="again")
    WorkflowFactory(organization=outsider, slug="theirs")
    newer = live.versions.create(number=2, definition=copy.deepcopy(DEMO_DEFINITION))
    Workflow.objects.filter(pk=live.pk).update(current_version=newer)

    for org in (organization, outsider):
        for slug in ("live", "gone", "again", "theirs", "missing"):
            target = workflow_call_target(organization=org, slug=slug)
            workflow = workflow_queryset(organization=org).filter(slug=slug).first()
            if workflow is None:
                assert target is None, (org.slug, slug)
                continue
            assert (target.workflow_id, target.version_id) == (
                workflow.pk,
                workflow.current_version_id,
            ), (org.slug, slug)
    assert workflow_call_target(organization=organization, slug="again").workflow_id == again.pk
