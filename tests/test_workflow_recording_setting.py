"""A workflow's `recording` setting: off by default, a strict boolean, and versions saved
before it existed read back with it off."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.test_workflows_api import body, errors
from workflows.models import Workflow


def test_recording_is_off_by_default(api: APIClient) -> None:
    response = api.post("/api/v1/workflows", body(), format="json")

    assert response.json()["settings"]["recording"] == {"enabled": False}


def test_recording_is_stored_and_returned(api: APIClient) -> None:
    response = api.post(
        "/api/v1/workflows", body(settings={"recording": {"enabled": True}}), format="json"
    )

    assert response.status_code == 201
    assert response.json()["settings"]["recording"] == {"enabled": True}
    assert Workflow.objects.get().current_version.settings["recording"] == {"enabled": True}


def test_a_version_saved_before_the_setting_reads_back_with_recording_off(
    api: APIClient, workflow: Workflow
) -> None:
    version = workflow.current_version
    version.definition["settings"].pop("recording", None)
    version.save()

    response = api.get(f"/api/v1/workflows/{workflow.id}")

    assert response.json()["settings"]["recording"] == {"enabled": False}


def test_patching_settings_turns_it_on_and_keeps_the_other_settings(
    api: APIClient, workflow: Workflow
) -> None:
    before = api.get(f"/api/v1/workflows/{workflow.id}").json()["settings"]

    response = api.patch(
        f"/api/v1/workflows/{workflow.id}",
        {"settings": {"recording": {"enabled": True}}},
        format="json",
    )

    assert response.json()["settings"] == {**before, "recording": {"enabled": True}}


@pytest.mark.parametrize(
    ("recording", "expected"),
    [
        ({"enabled": "yes"}, [("settings.recording.enabled", "invalid")]),
        ({"enabled": 1}, [("settings.recording.enabled", "invalid")]),
        (True, [("settings.recording.non_field_errors", "invalid")]),
    ],
)
def test_a_malformed_recording_setting_is_400(api: APIClient, recording, expected) -> None:
    response = api.post("/api/v1/workflows", body(settings={"recording": recording}), format="json")

    assert response.status_code == 400
    assert errors(response) == expected
