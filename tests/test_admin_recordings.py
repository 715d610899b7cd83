"""Recordings in the staff console: organizations' own buckets."""

from __future__ import annotations

import datetime

from django.utils import timezone

from tests.factories import CallFactory, RecordingFactory

URL = "/api/v1/organization/recording-storage"
KEY_ID = "AKIAORGANIZATION0042"
SECRET = "org-secret-2bq9Vx7LmT4pWz1K"


def body(**overrides: object) -> dict:
    return {
        "bucket": "acme-recordings",
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        **overrides,
    }


def test_staff_see_storages_whose_credentials_no_key_opens_not_a_500(
    api, organization, settings, admin_client
) -> None:
    api.put(URL, body(), format="json")
    settings.CRYPTOGRAPHY_KEY = "a-key-that-did-not-encrypt-it"
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    listed = admin_client.get("/admin/recordings/recordingstorage/")
    shown = admin_client.get(f"/admin/recordings/recordingstorage/{organization.pk}/change/")

    assert (listed.status_code, shown.status_code) == (200, 200)
    for page in (listed.content.decode(), shown.content.decode()):
        assert "acme-recordings" in page
        assert KEY_ID not in page and SECRET not in page


def test_a_complete_recording_past_its_retention_says_why_it_has_no_player(
    admin_client, organization
) -> None:
    """It read "complete" with no player and no reason, as if the page were broken."""
    organization.recording_retention_days = 1
    organization.save(update_fields=["recording_retention_days"])
    ended = timezone.now() - datetime.timedelta(days=2)
    call = CallFactory(organization=organization, completed=True, ended_at=ended)
    RecordingFactory(call=call)

    html = admin_client.get(f"/admin/calls/call/{call.id}/change/").content.decode()

    assert '<span id="recording-status">complete</span>' in html
    assert "<audio" not in html
    assert "past the organization&#x27;s recording retention (1 day)" in html


def test_a_complete_recording_no_credentials_reach_says_why_it_has_no_player(
    admin_client, organization, settings
) -> None:
    settings.RECORDINGS_S3_BUCKET = ""  # the platform's bucket is no longer configured
    call = CallFactory(organization=organization, completed=True)
    RecordingFactory(call=call)

    html = admin_client.get(f"/admin/calls/call/{call.id}/change/").content.decode()

    assert "<audio" not in html
    assert "no credentials or endpoint reach its bucket" in html


def test_staff_find_a_calls_recording_by_the_call_id(admin_client, organization) -> None:
    """The list shows each recording's call, but searched only LiveKit's egress ids."""
    mine, other = (RecordingFactory(call__organization=organization) for _ in range(2))

    html = admin_client.get(
        "/admin/recordings/recording/", {"q": str(mine.call_id)}
    ).content.decode()

    assert f"/admin/recordings/recording/{mine.pk}/change/" in html
    assert f"/admin/recordings/recording/{other.pk}/change/" not in html
    html = admin_client.get("/admin/recordings/recording/", {"q": other.egress_id}).content.decode()
    assert f"/admin/recordings/recording/{other.pk}/change/" in html
    assert f"/admin/recordings/recording/{mine.pk}/change/" not in html
