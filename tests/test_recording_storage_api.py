"""An organization's own bucket for its recordings: PUT/GET/DELETE
/organization/recording-storage; credentials encrypted and write-only."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

from recordings import storage
from recordings.deletion import recording_delete
from recordings.models import RecordingStorage
from tests.factories import CallFactory, RecordingFactory

URL = "/api/v1/organization/recording-storage"
KEY_ID = "AKIAORGANIZATION0042"
SECRET = "org-secret-2bq9Vx7LmT4pWz1K"


def body(**overrides: object) -> dict:
    return {
        "endpoint": "https://s3.example.com",
        "bucket": "acme-recordings",
        "region": "eu-west-1",
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        **overrides,
    }


def errors(response) -> list[tuple]:
    return [(e["attr"], e["code"]) for e in response.json()["errors"]]


def test_put_stores_it_and_answers_it_without_the_secret(api, organization) -> None:
    response = api.put(URL, body(), format="json")

    assert response.status_code == 200
    storage = RecordingStorage.objects.get()
    assert response.json() == {
        "endpoint": "https://s3.example.com",
        "bucket": "acme-recordings",
        "region": "eu-west-1",
        "masked_access_key_id": "••••0042",
        "created_at": storage.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": storage.updated_at.isoformat().replace("+00:00", "Z"),
    }
    assert api.get(URL).json() == response.json()
    assert (storage.access_key_id, storage.secret_access_key) == (KEY_ID, SECRET)
    assert storage.updated_at == storage.created_at  # a new one, not updated before made


def test_the_credentials_are_encrypted_at_rest(api, organization) -> None:
    api.put(URL, body(), format="json")

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT access_key_id, secret_access_key FROM {RecordingStorage._meta.db_table}"
        )
        row = cursor.fetchone()
    raw = b"".join(bytes(value) for value in row)
    assert KEY_ID.encode() not in raw and SECRET.encode() not in raw


def test_put_again_replaces_it(api, organization) -> None:
    api.put(URL, body(), format="json")

    response = api.put(
        URL, body(bucket="acme-other", access_key_id="AKIANEW0000009999"), format="json"
    )

    assert response.json()["bucket"] == "acme-other"
    assert response.json()["masked_access_key_id"] == "••••9999"
    assert RecordingStorage.objects.count() == 1


def test_endpoint_and_region_have_defaults(api, organization) -> None:
    data = body()
    del data["endpoint"], data["region"]

    response = api.put(URL, data, format="json")

    assert (response.json()["endpoint"], response.json()["region"]) == ("", "us-east-1")


def test_get_and_delete_without_storage_are_404(api, organization) -> None:
    assert api.get(URL).status_code == 404
    assert api.delete(URL).status_code == 404


def test_delete_removes_it(api, organization) -> None:
    api.put(URL, body(), format="json")

    assert api.delete(URL).status_code == 204
    assert RecordingStorage.objects.count() == 0
    assert api.delete(URL).status_code == 404


def test_another_organizations_storage_is_invisible(api, outsider_api, organization) -> None:
    api.put(URL, body(), format="json")

    assert outsider_api.get(URL).status_code == 404
    assert outsider_api.delete(URL).status_code == 404
    assert RecordingStorage.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"bucket": "A_Bad_Bucket"}, [("bucket", "invalid")]),
        ({"bucket": "ab"}, [("bucket", "invalid")]),
        ({"region": "EU WEST"}, [("region", "invalid")]),
        ({"endpoint": "ftp://s3.example.com"}, [("endpoint", "invalid")]),
        # Hosts an S3 client refuses: every later link and deletion would fail.
        ({"endpoint": "https://minio_1.example.com"}, [("endpoint", "invalid")]),
        ({"endpoint": "https://exaémple.com"}, [("endpoint", "invalid")]),
        # Regions an S3 client refuses, for the same reason.
        ({"region": "eu-west-"}, [("region", "invalid")]),
        ({"region": "1"}, [("region", "invalid")]),
        ({"access_key_id": ""}, [("access_key_id", "blank")]),
        ({"secret_access_key": 12345678}, [("secret_access_key", "invalid")]),
        ({"secret_access_key": "tab\there"}, [("secret_access_key", "invalid_characters")]),
        ({"bucket": None}, [("bucket", "null")]),
    ],
)
def test_bad_input_is_400_naming_the_field(api, organization, overrides, expected) -> None:
    response = api.put(URL, body(**overrides), format="json")

    assert response.status_code == 400
    assert errors(response) == expected
    assert RecordingStorage.objects.count() == 0


@pytest.mark.parametrize(
    "bucket",
    [
        "acme..recordings",  # adjacent periods
        "192.168.5.4",  # formatted as an IP address
        "acme.-recordings",  # a label ending or starting with a hyphen
        "acme-.recordings",
        "xn--acme-recordings",  # S3's reserved prefixes
        "sthree-acme",
        "amzn-s3-demo-acme",
        "acme-s3alias",  # and suffixes
        "acme--ol-s3",
        "acme.mrap",
        "acme--x-s3",
        "acme--table-s3",
    ],
)
def test_a_bucket_name_s3_forbids_is_400_not_stored_to_fail_every_recording(
    api, organization, bucket: str
) -> None:
    """Such a name passed the API's pattern and was stored, though S3 has no bucket by
    it (it refuses to create one): every egress upload, link and deletion failed later."""
    response = api.put(URL, body(bucket=bucket), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "errors": [
            {
                "code": "invalid",
                "detail": "S3 does not allow this bucket name (see its bucket naming rules).",
                "attr": "bucket",
            }
        ],
    }
    assert RecordingStorage.objects.count() == 0


@pytest.mark.parametrize("bucket", ["acme-recordings", "acme.recordings.eu", "a1b", "9" * 63])
def test_a_bucket_name_s3_allows_is_stored(api, organization, bucket: str) -> None:
    response = api.put(URL, body(bucket=bucket), format="json")

    assert response.status_code == 200, response.content
    assert RecordingStorage.objects.get().bucket == bucket


def test_a_private_endpoint_is_refused_outside_local_development(
    api, organization, settings
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False

    response = api.put(URL, body(endpoint="https://169.254.169.254"), format="json")

    assert response.status_code == 400
    assert errors(response) == [("endpoint", "invalid")]


def test_the_secret_is_never_echoed_in_errors_or_logs(
    api, organization, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        bad = api.put(URL, body(bucket="No", secret_access_key=SECRET + "\x01"), format="json")
        good = api.put(URL, body(), format="json")

    assert bad.status_code == 400
    for text in (bad.content.decode(), good.content.decode(), caplog.text):
        assert SECRET not in text
        assert KEY_ID not in text


def test_the_schema_states_the_credentials_write_only(api) -> None:
    schema = api.get("/api/schema/?format=json").json()
    write = schema["components"]["schemas"]["RecordingStorageWriteRequest"]["properties"]
    read = schema["components"]["schemas"]["RecordingStorage"]["properties"]

    assert {"access_key_id", "secret_access_key"} <= set(write)
    assert not {"access_key_id", "secret_access_key"} & set(read)


@pytest.mark.parametrize("endpoint", ["https://s3.example.com/?x-id=1", "https://s3.example.com?x"])
def test_an_endpoint_with_a_query_or_fragment_is_refused_not_stored_to_break_every_deletion(
    api, organization, endpoint
) -> None:
    """Like a host with an underscore (refused), such an endpoint is one botocore cannot
    resolve: stored, every download link is null and every file deletion fails, so
    that organization's retention fails every pass and its erasures never complete."""
    response = api.put(
        "/api/v1/organization/recording-storage",
        {
            "endpoint": endpoint,
            "bucket": "acme-recordings",
            "access_key_id": "AKIAORGANIZATION0042",
            "secret_access_key": "org-secret-2bq9Vx7LmT4pWz1K",
        },
        format="json",
    )
    if response.status_code == 200:  # what happens to what it records
        recording = RecordingFactory(
            call=CallFactory(organization=organization, completed=True),
            storage="organization",
            endpoint=response.json()["endpoint"],
            bucket="acme-recordings",
        )
        with pytest.raises(storage.StorageError, match="EndpointResolutionError"):
            recording_delete(call_id=recording.call_id)
    assert response.status_code == 400, response.json()


def test_storage_whose_credentials_no_key_opens_is_shown_and_replaced_not_a_500(
    api, organization, settings
) -> None:
    """A key rotation gone wrong leaves the credentials unreadable: the call is then
    not recorded (logged), and the organization's way out is to set them again. GET and
    PUT read the stored ciphertext and answered 500, so only DELETE could get out."""
    api.put(URL, body(), format="json")
    settings.CRYPTOGRAPHY_KEY = "a-key-that-did-not-encrypt-it"
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    shown = api.get(URL)
    replaced = api.put(URL, body(bucket="acme-new", secret_access_key="new-secret"), format="json")

    assert shown.status_code == 200
    assert shown.json()["masked_access_key_id"] == "••••0042"
    assert replaced.status_code == 200
    assert replaced.json()["bucket"] == "acme-new"
    storage_row = RecordingStorage.objects.get()
    assert (storage_row.bucket, storage_row.secret_access_key) == ("acme-new", "new-secret")
    assert storage_row.access_key_id == KEY_ID
