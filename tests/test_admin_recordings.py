"""Recordings in the staff console: organizations' own buckets."""

from __future__ import annotations

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
