"""PATCH through the generated Python client changes only what it names: the client sends
a declared default for every property it was not given, so PATCH bodies declare none."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.sdk.conftest import SDK, LiveServer

sys.path.insert(0, str(SDK / "python"))

from voicecalls_client import AuthenticatedClient
from voicecalls_client.api.webhook_endpoints import (
    webhook_endpoints_create,
    webhook_endpoints_partial_update,
)
from voicecalls_client.api.workflows import workflows_list, workflows_partial_update
from voicecalls_client.models import (
    PaginatedWorkflowList,
    PatchedWebhookEndpointWriteRequest,
    PatchedWorkflowWriteRequest,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
    WebhookEndpointWriteRequest,
    Workflow,
    WorkflowSettingsRequest,
)


@pytest.fixture(scope="module")
def client(api_server: LiveServer) -> Iterator[AuthenticatedClient]:
    key = api_server.client_key("sdk-python-patches")
    with AuthenticatedClient(base_url=api_server.url, token=key) as c:
        yield c


def _patch_settings(client: AuthenticatedClient, **settings: object) -> Workflow:
    page = workflows_list.sync(client=client)
    assert isinstance(page, PaginatedWorkflowList), page
    workflow = workflows_partial_update.sync(
        page.items[0].id,
        client=client,
        body=PatchedWorkflowWriteRequest(settings=WorkflowSettingsRequest(**settings)),
    )
    assert isinstance(workflow, Workflow), workflow
    return workflow


def test_a_patch_of_one_setting_keeps_the_others(client: AuthenticatedClient) -> None:
    _patch_settings(client, connect_timeout_seconds=120, allow_interruptions=False)

    settings = _patch_settings(client, max_duration_seconds=900).settings

    assert (
        settings.max_duration_seconds,
        settings.connect_timeout_seconds,
        settings.allow_interruptions,
    ) == (900, 120, False)


def test_a_patch_of_the_description_keeps_an_endpoint_disabled(
    client: AuthenticatedClient,
) -> None:
    created = webhook_endpoints_create.sync(
        client=client, body=WebhookEndpointWriteRequest(url="http://127.0.0.1:9/hooks")
    )
    assert isinstance(created, WebhookEndpointWithSecret), created
    webhook_endpoints_partial_update.sync(
        created.id, client=client, body=PatchedWebhookEndpointWriteRequest(enabled=False)
    )

    endpoint = webhook_endpoints_partial_update.sync(
        created.id, client=client, body=PatchedWebhookEndpointWriteRequest(description="CRM")
    )

    assert isinstance(endpoint, WebhookEndpoint), endpoint
    assert (endpoint.description, endpoint.enabled) == ("CRM", False)
