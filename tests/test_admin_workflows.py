from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from accounts.models import Organization
from tests.factories import CallFactory, PhoneNumberFactory, WorkflowFactory
from tests.phone import inbound_trunk
from workflows.demo import DEMO_DEFINITION
from workflows.models import Workflow


def preview_url(workflow: Workflow) -> str:
    return f"/admin/workflows/workflow/{workflow.id}/preview-prompts/"


def change_url(workflow: Workflow) -> str:
    return f"/admin/workflows/workflow/{workflow.id}/change/"


def test_the_changelist_lists_workflows_with_their_version(
    staff_client: Client, workflow: Workflow, outsider_workflow: Workflow
) -> None:
    response = staff_client.get("/admin/workflows/workflow/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "daily-call" in html and "Preview prompts" in html
    assert html.count(preview_url(workflow)) == 1


def test_changelist_query_count_does_not_grow(
    staff_client: Client, organization: Organization, django_assert_max_num_queries: Any
) -> None:
    WorkflowFactory(organization=organization)
    with django_assert_max_num_queries(30) as few:
        staff_client.get("/admin/workflows/workflow/")
    for _ in range(10):
        WorkflowFactory(organization=organization)
    with django_assert_max_num_queries(len(few.captured_queries)):
        staff_client.get("/admin/workflows/workflow/")


def test_the_change_page_shows_versions_read_only(staff_client: Client, workflow: Workflow) -> None:
    response = staff_client.get(change_url(workflow))

    assert response.status_code == 200
    html = response.content.decode()
    assert "greeter-agent, meal-agent, feedback-agent" in html
    assert 'name="versions-0-number"' not in html  # shown, not editable


def read_at(workflow: Workflow) -> str:
    """What the change page holds of when it was read."""
    return Workflow.objects.get(pk=workflow.pk).updated_at.isoformat()


def add_form(organization: Organization, *, slug: str, name: str) -> dict:
    """The add page's form, as staff post it, with the demo definition."""
    return {
        "organization": organization.pk,
        "slug": slug,
        "name": name,
        "definition": json.dumps(DEMO_DEFINITION),
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }


def change_form(workflow: Workflow, *, definition: str) -> dict:
    """The change page's form, as staff post it, with `definition` as typed."""
    return {
        "slug": "daily-call",
        "name": "Daily",
        "definition": definition,
        "read_at": read_at(workflow),
        "versions-TOTAL_FORMS": "1",
        "versions-INITIAL_FORMS": "1",
    }


def test_saving_a_changed_definition_adds_a_version(
    staff_client: Client, workflow: Workflow
) -> None:
    definition = copy.deepcopy(workflow.current_version.definition)
    definition["agents"][0]["greeting"] = "Hey {{ user.name }}"

    response = staff_client.post(
        change_url(workflow), change_form(workflow, definition=json.dumps(definition))
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    workflow.refresh_from_db()
    assert workflow.name == "Daily"
    assert workflow.current_version.number == 2
    assert workflow.current_version.definition["agents"][0]["greeting"] == "Hey {{ user.name }}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start_agent": "ghost"}, "start_agent: No agent named"),
        ({"agents": []}, "agents:"),
        ({"settings": {"max_duration_seconds": 1}}, "settings.max_duration_seconds:"),
    ],
)
def test_the_admin_cannot_save_an_invalid_definition(
    staff_client: Client, workflow: Workflow, change: dict, message: str
) -> None:
    definition = {**copy.deepcopy(workflow.current_version.definition), **change}

    response = staff_client.post(
        change_url(workflow), change_form(workflow, definition=json.dumps(definition))
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert workflow.versions.count() == 1


def test_a_workflow_changed_since_its_page_was_read_is_not_written_over(
    staff_client: Client, workflow: Workflow
) -> None:
    """Saving the page wrote what it held as the next version: a change made through
    the API meanwhile was silently undone."""
    from workflows.services import workflow_update

    page_read_at = read_at(workflow)
    held = copy.deepcopy(workflow.current_version.definition)
    changed = copy.deepcopy(held)
    changed["agents"][0]["greeting"] = "Changed through the API"
    workflow_update(workflow=workflow, slug=workflow.slug, name=workflow.name, definition=changed)
    held["agents"][0]["instructions"] = "Staff's edit of the page as read."

    response = staff_client.post(
        change_url(workflow),
        {
            "slug": workflow.slug,
            "name": "Renamed by staff",
            "definition": json.dumps(held),
            "read_at": page_read_at,
            "versions-TOTAL_FORMS": "2",
            "versions-INITIAL_FORMS": "2",
        },
    )

    assert response.status_code == 200
    assert "changed since this page was read" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.current_version.definition == changed


def test_the_admin_creates_workflows_through_the_service(
    staff_client: Client, organization: Organization
) -> None:
    response = staff_client.post(
        "/admin/workflows/workflow/add/",
        add_form(organization, slug="from-admin", name="From admin"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    created = Workflow.objects.get(slug="from-admin")
    assert created.current_version.number == 1
    assert created.current_version.definition["agents"][1]["tools"][0]["url"] is None


def test_a_slug_another_workflow_has_is_a_form_error_not_a_500(
    staff_client: Client, organization: Organization, workflow: Workflow
) -> None:
    other = WorkflowFactory(organization=organization, slug="other")
    added = staff_client.post(
        "/admin/workflows/workflow/add/",
        add_form(organization, slug="daily-call", name="Again"),
    )
    renamed = staff_client.post(
        change_url(other), change_form(other, definition=json.dumps(DEMO_DEFINITION))
    )

    for response in (added, renamed):
        assert response.status_code == 200
        assert "A workflow with this slug already exists" in response.content.decode()
    assert Workflow.objects.filter(slug="daily-call").count() == 1
    other.refresh_from_db()
    assert (other.slug, other.current_version.number) == ("other", 1)


def test_a_slug_another_staff_member_took_meanwhile_is_a_message_not_a_500(
    staff_client: Client, organization: Organization
) -> None:
    """Two staff creating the same slug at once: both forms pass their check, and the
    second save meets the unique constraint in the service."""
    from django.db.models.signals import pre_save

    def concurrent_create(sender: Any, instance: Workflow, **kwargs: Any) -> None:
        pre_save.disconnect(concurrent_create, sender=Workflow)
        WorkflowFactory(organization=organization, slug="from-admin")  # the other's save

    pre_save.connect(concurrent_create, sender=Workflow)
    try:
        response = staff_client.post(
            "/admin/workflows/workflow/add/",
            add_form(organization, slug="from-admin", name="From admin"),
            follow=True,
        )
    finally:
        pre_save.disconnect(concurrent_create, sender=Workflow)

    assert response.redirect_chain == [("/admin/workflows/workflow/add/", 302)]
    assert "Nothing was saved: A workflow with this slug already exists" in (
        response.content.decode()
    )
    assert not Workflow.objects.filter(name="From admin").exists()


def test_the_soft_delete_action_keeps_calls(
    staff_client: Client, organization: Organization, workflow: Workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow)
    chosen = {"action": "soft_delete", "_selected_action": [str(workflow.id)]}

    asked = staff_client.post("/admin/workflows/workflow/", chosen)
    workflow.refresh_from_db()
    assert (asked.status_code, workflow.deleted_at) == (200, None)  # asks first
    assert "Delete these workflows?" in asked.content.decode()
    response = staff_client.post("/admin/workflows/workflow/", {**chosen, "post": "yes"})

    assert response.status_code == 302
    workflow.refresh_from_db()
    assert workflow.deleted_at is not None
    call.refresh_from_db()
    assert call.workflow_version_id == workflow.current_version_id


def test_the_soft_delete_action_skips_workflows_inbound_numbers_reach(
    staff_client: Client, organization: Organization, workflow: Workflow, fake_livekit
) -> None:
    PhoneNumberFactory(trunk=inbound_trunk(organization), workflow=workflow)
    unused = WorkflowFactory(organization=organization, slug="unused")
    chosen = {
        "action": "soft_delete",
        "_selected_action": [str(workflow.id), str(unused.id)],
        "post": "yes",
    }

    response = staff_client.post("/admin/workflows/workflow/", chosen, follow=True)

    workflow.refresh_from_db()
    unused.refresh_from_db()
    assert (workflow.deleted_at, unused.deleted_at is not None) == (None, True)
    assert "Kept 1 workflow(s) inbound numbers reach: daily-call" in response.content.decode()


def test_preview_renders_prompts_for_sample_user_data(
    staff_client: Client, workflow: Workflow
) -> None:
    response = staff_client.get(
        preview_url(workflow),
        {"user_data": json.dumps({"name": "Grace", "language": "de"}), "metadata": "{}"},
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "Hello Grace! How are you today?" in html
    assert "call to Grace. Speak de." in html
    assert "Ask Grace what they ate today" in html


def test_preview_of_one_agent_and_an_old_version(staff_client: Client, workflow: Workflow) -> None:
    first = workflow.current_version
    definition = copy.deepcopy(first.definition)
    definition["agents"][0]["greeting"] = "New greeting"
    from workflows.services import workflow_update

    workflow_update(workflow=workflow, slug="daily-call", name="x", definition=definition)

    response = staff_client.get(
        preview_url(workflow),
        {"user_data": '{"name": "Ada"}', "agent": "greeter-agent", "version": str(first.pk)},
    )

    html = response.content.decode()
    assert "Hello Ada! How are you today?" in html
    assert "New greeting" not in html
    assert 'id="agent-meal-agent"' not in html


def test_preview_shows_hostile_user_data_verbatim_and_escaped(
    staff_client: Client, workflow: Workflow
) -> None:
    response = staff_client.get(
        preview_url(workflow), {"user_data": json.dumps({"name": "<script>{{ 7*7 }}</script>"})}
    )

    html = response.content.decode()
    assert "Hello &lt;script&gt;{{ 7*7 }}&lt;/script&gt;!" in html
    assert "<script>{{" not in html


@pytest.mark.parametrize(
    ("user_data", "error"), [("{not json", "Enter a valid JSON"), ("[1]", "Must be a JSON object")]
)
def test_preview_explains_bad_sample_data(
    staff_client: Client, workflow: Workflow, user_data: str, error: str
) -> None:
    response = staff_client.get(preview_url(workflow), {"user_data": user_data})

    assert response.status_code == 400
    assert error in response.content.decode()
    assert "Rendered prompts" not in response.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("user_data", "[" * 1000, "Enter a valid JSON."),
        ("user_data", "[" * 3000 + "]" * 3000, "Enter a valid JSON."),
        ("user_data", '{"a":' * 1000 + "1" + "}" * 1000, "Must be nested at most 8 levels"),
        ("user_data", '{"a":' * 9 + "1" + "}" * 9, "Must be nested at most 8 levels deep."),
        ("metadata", '{"a":' * 9 + "1" + "}" * 9, "Must be nested at most 8 levels deep."),
        ("user_data", json.dumps({"x": "y" * 33_000}), "Must be at most 32768 bytes as JSON."),
        ("metadata", json.dumps({"x": "y" * 17_000}), "Must be at most 16384 bytes as JSON."),
    ],
)
def test_preview_bounds_sample_data_as_the_api_does(
    staff_client: Client, workflow: Workflow, field: str, value: str, error: str
) -> None:
    """Deep nesting was a RecursionError (500); the API's own depth and size bounds."""
    params = {"user_data": "{}", "metadata": "{}", field: value}

    started = time.monotonic()
    response = staff_client.get(preview_url(workflow), params)

    assert time.monotonic() - started < 5
    assert response.status_code == 400
    html = response.content.decode()
    assert error in html
    assert "Rendered prompts" not in html


def test_preview_needs_staff(client: Client, workflow: Workflow) -> None:
    response = client.get(preview_url(workflow))

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_preview_needs_view_permission(client: Client, workflow: Workflow) -> None:
    staff = User.objects.create(username="staff", is_staff=True)
    client.force_login(staff)
    assert client.get(preview_url(workflow)).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    assert client.get(preview_url(workflow)).status_code == 200


def test_the_add_page_and_the_deleted_filter_render(
    staff_client: Client, workflow: Workflow
) -> None:
    assert staff_client.get("/admin/workflows/workflow/add/").status_code == 200
    response = staff_client.get("/admin/workflows/workflow/", {"deleted_at__isempty": "0"})
    assert response.status_code == 200


def test_a_deleted_workflow_is_read_only(staff_client: Client, workflow: Workflow) -> None:
    from workflows.services import workflow_delete

    workflow_delete(workflow=workflow)

    response = staff_client.get(change_url(workflow))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="definition"' not in html
    assert "&quot;start_agent&quot;: &quot;greeter-agent&quot;" in html


def test_view_only_staff_see_the_definition_read_only(client: Client, workflow: Workflow) -> None:
    staff = User.objects.create(username="viewer", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    client.force_login(staff)

    response = client.get(change_url(workflow))

    assert response.status_code == 200
    assert 'name="definition"' not in response.content.decode()


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        # The standard library's parser blows the recursion limit (a 500), as the
        # preview form's sample data did.
        ('{"agents": ' + "[" * 100_000 + "]" * 100_000 + "}", "depth limit exceeded"),
        # An integer the API's own parser refuses: a client could read the workflow
        # back but never save it again (PUT was a 400).
        ('{"x": 100000000000000000000000}', "does not fit in 64 bits"),
    ],
    ids=["deep", "integer-beyond-64-bits"],
)
def test_the_admin_refuses_a_definition_the_api_could_not_take(
    staff_client: Client, workflow: Workflow, definition: str, message: str
) -> None:
    held = workflow.current_version.definition
    tool = held["agents"][1]["tools"][0]
    text = json.dumps(held).replace(
        json.dumps(tool["parameters"]), definition.replace("{", '{"type": "object", ', 1), 1
    )
    assert text != json.dumps(held)
    staff_client.raise_request_exception = False

    response = staff_client.post(change_url(workflow), change_form(workflow, definition=text))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert workflow.versions.count() == 1


@pytest.mark.parametrize("depth", [500, 900, 1000, 1020])
def test_a_definition_nested_within_the_parsers_limit_is_no_500(
    staff_client: Client, workflow: Workflow, depth: int
) -> None:
    """The API's parser takes 1,024 levels: what it takes must not reach the standard
    library's recursive encoder (the form's has_changed, the size check) as a 500."""
    held = workflow.current_version.definition
    text = json.dumps(held)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    staff_client.raise_request_exception = False

    response = staff_client.post(
        change_url(workflow),
        {
            "slug": "daily-call",
            "name": "Daily",
            "definition": text,
            "read_at": read_at(workflow),
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
        },
    )

    assert response.status_code in (200, 302), response.status_code
    assert response.status_code == 200 or "x" not in workflow.versions.latest("number").definition
