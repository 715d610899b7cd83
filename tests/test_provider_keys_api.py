from __future__ import annotations

import json
import logging
import threading
import uuid

import pytest
import yaml
from django.conf import settings
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.fields import DateTimeField
from rest_framework.test import APIClient

from accounts.models import Organization
from providerkeys.models import ProviderKey
from providerkeys.services import MAX_KEYS_PER_ORGANIZATION
from tests.factories import ProviderKeyFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/provider-keys"
SECRET = "dg_live_9f8e7d6c5b4a3210"


def detail_url(key_id: object) -> str:
    return f"{URL}/{key_id}"


def masked_item(key: ProviderKey) -> dict:
    return {
        "id": str(key.id),
        "provider_type": key.provider_type,
        "provider_name": key.provider_name,
        "is_default": key.is_default,
        "created_at": DateTimeField().to_representation(key.created_at),
        "masked_key": "••••" + key.api_key[-4:],
    }


def validation_error(attr: str, code: str, detail: str) -> dict:
    return {"type": "validation_error", "errors": [{"code": code, "detail": detail, "attr": attr}]}


# --- the seed's shapes ----------------------------------------------------------------


def test_create_answers_201_with_the_masked_item(api: APIClient) -> None:
    response = api.post(
        URL,
        {
            "provider_type": "stt",
            "provider_name": "deepgram",
            "api_key": SECRET,
            "is_default": True,
        },
    )

    assert response.status_code == 201
    key = ProviderKey.objects.get()
    assert response.json() == {
        "id": str(key.id),
        "provider_type": "stt",
        "provider_name": "deepgram",
        "is_default": True,
        "created_at": DateTimeField().to_representation(key.created_at),
        "masked_key": "••••3210",
    }
    assert key.api_key == SECRET
    assert key.last4 == "3210"


def test_is_default_defaults_to_false(api: APIClient) -> None:
    response = api.post(
        URL, {"provider_type": "llm", "provider_name": "anthropic", "api_key": SECRET}
    )

    assert response.status_code == 201
    assert response.json()["is_default"] is False
    assert ProviderKey.objects.get().is_default is False


def test_list_shows_the_organizations_keys_newest_first_masked(
    api: APIClient, organization: Organization, outsider: Organization
) -> None:
    older = ProviderKeyFactory(organization=organization, is_default=True)
    newer = ProviderKeyFactory(
        organization=organization, provider_type="tts", provider_name="cartesia"
    )
    ProviderKeyFactory(organization=outsider)

    response = api.get(URL)

    assert response.status_code == 200
    assert response.json() == {"items": [masked_item(newer), masked_item(older)]}


def test_list_is_empty_without_keys(api: APIClient) -> None:
    assert api.get(URL).json() == {"items": []}


def test_list_query_count_does_not_grow_with_keys(
    api: APIClient, organization: Organization, django_assert_num_queries
) -> None:
    ProviderKeyFactory(organization=organization)
    with django_assert_num_queries(2):  # authentication, the page of keys
        assert len(api.get(URL).json()["items"]) == 1

    ProviderKeyFactory.create_batch(20, organization=organization)
    with django_assert_num_queries(2):
        assert len(api.get(URL).json()["items"]) == 21


def test_list_never_decrypts(api: APIClient, organization: Organization, settings) -> None:
    """Masking uses the stored last 4 characters: a key the service cannot decrypt
    (say, a rotation half done) still lists."""
    ProviderKeyFactory(organization=organization)
    settings.CRYPTOGRAPHY_KEY = "a-key-that-did-not-encrypt-it"
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    response = api.get(URL)

    assert response.status_code == 200
    assert len(response.json()["items"]) == 1


# --- one default per (organization, provider_type) --------------------------------------


def test_a_new_default_unsets_the_previous_one_of_its_type_only(
    api: APIClient, organization: Organization
) -> None:
    old_stt = ProviderKeyFactory(organization=organization, is_default=True)
    llm = ProviderKeyFactory(
        organization=organization, provider_type="llm", provider_name="openai", is_default=True
    )

    response = api.post(
        URL,
        {
            "provider_type": "stt",
            "provider_name": "assemblyai",
            "api_key": SECRET,
            "is_default": True,
        },
    )

    assert response.status_code == 201
    defaults = set(ProviderKey.objects.filter(is_default=True).values_list("id", flat=True))
    assert defaults == {uuid.UUID(response.json()["id"]), llm.id}
    old_stt.refresh_from_db()
    assert old_stt.is_default is False


def test_another_organizations_default_is_left_alone(
    api: APIClient, outsider: Organization
) -> None:
    theirs = ProviderKeyFactory(organization=outsider, is_default=True)

    api.post(
        URL,
        {
            "provider_type": "stt",
            "provider_name": "deepgram",
            "api_key": SECRET,
            "is_default": True,
        },
    )

    theirs.refresh_from_db()
    assert theirs.is_default is True


def test_patch_makes_a_key_the_default(api: APIClient, organization: Organization) -> None:
    old = ProviderKeyFactory(organization=organization, is_default=True)
    new = ProviderKeyFactory(organization=organization, provider_name="groq")

    response = api.patch(detail_url(new.id), {"is_default": True})

    assert response.status_code == 200
    new.refresh_from_db()
    old.refresh_from_db()
    assert response.json() == masked_item(new)
    assert (new.is_default, old.is_default) == (True, False)


def test_patch_can_unset_the_default(api: APIClient, organization: Organization) -> None:
    key = ProviderKeyFactory(organization=organization, is_default=True)

    response = api.patch(detail_url(key.id), {"is_default": False})

    assert response.status_code == 200
    assert response.json()["is_default"] is False
    assert not ProviderKey.objects.filter(is_default=True).exists()


def test_patch_without_fields_changes_nothing(api: APIClient, organization: Organization) -> None:
    key = ProviderKeyFactory(organization=organization, is_default=True)

    response = api.patch(detail_url(key.id), {"unknown": 1})

    assert response.status_code == 200
    assert response.json() == masked_item(key)


@pytest.mark.parametrize(
    "body",
    [
        {"api_key": "sk-replacement-key-0123"},
        {"api_key": "sk-replacement-key-0123", "is_default": False},
        {"provider_name": "assemblyai"},
        {"provider_type": "tts", "api_key": 12},
    ],
)
def test_patch_refuses_to_change_the_key_or_its_provider(
    api: APIClient, organization: Organization, body: dict
) -> None:
    key = ProviderKeyFactory(organization=organization, is_default=True)
    before = (key.provider_type, key.provider_name, key.api_key, key.is_default)

    response = api.patch(detail_url(key.id), body)

    message = "Cannot be changed: delete this provider key and create a new one."
    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "errors": [
            {"code": "immutable", "detail": message, "attr": name}
            for name in ("provider_type", "provider_name", "api_key")
            if name in body
        ],
    }
    key.refresh_from_db()
    assert (key.provider_type, key.provider_name, key.api_key, key.is_default) == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("operation", ["create", "patch"])
def test_concurrent_default_requests_leave_exactly_one_default(
    client_key: str, organization: Organization, operation: str
) -> None:
    """Without the row lock both requests clear the old default, then both set theirs,
    and the partial unique index turns the second into a 500."""
    threads_count = 6
    targets = [
        ProviderKeyFactory(organization=organization, provider_name="deepgram")
        for _ in range(threads_count)
    ]
    ProviderKeyFactory(organization=organization, is_default=True)
    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []

    def request(index: int) -> None:
        client = APIClient(raise_request_exception=False)  # a 500 is a status here
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {client_key}")
        try:
            barrier.wait(timeout=10)
            if operation == "create":
                body = {
                    "provider_type": "stt",
                    "provider_name": "deepgram",
                    "api_key": f"{SECRET}-{index}",
                    "is_default": True,
                }
                response = client.post(URL, body, format="json")
            else:
                response = client.patch(
                    detail_url(targets[index].id), {"is_default": True}, format="json"
                )
            statuses.append(response.status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    expected = 201 if operation == "create" else 200
    assert statuses == [expected] * threads_count
    assert ProviderKey.objects.filter(organization=organization, is_default=True).count() == 1


# --- delete ----------------------------------------------------------------------------


def test_an_organization_has_at_most_100_keys(
    api: APIClient, organization: Organization, outsider: Organization
) -> None:
    """The list has no pages: the keys an organization may hold are bounded."""
    ProviderKeyFactory.create_batch(MAX_KEYS_PER_ORGANIZATION, organization=organization)
    ProviderKeyFactory(organization=outsider)  # another organization's do not count

    refused = api.post(
        URL, {"provider_type": "stt", "provider_name": "deepgram", "api_key": "k" * 12}
    )
    api.delete(detail_url(ProviderKey.objects.filter(organization=organization).first().id))
    after_a_delete = api.post(
        URL, {"provider_type": "stt", "provider_name": "deepgram", "api_key": "k" * 12}
    )

    assert refused.status_code == 400
    assert refused.json() == {
        "type": "validation_error",
        "errors": [
            {
                "code": "limit_reached",
                "detail": "An organization can have at most 100 provider keys: delete one first.",
                "attr": None,
            }
        ],
    }
    assert after_a_delete.status_code == 201
    assert ProviderKey.objects.filter(organization=organization).count() == 100


def test_delete_answers_204_then_404(api: APIClient, organization: Organization) -> None:
    key = ProviderKeyFactory(organization=organization)

    first = api.delete(detail_url(key.id))
    second = api.delete(detail_url(key.id))

    assert first.status_code == 204
    assert first.content == b""
    assert second.status_code == 404
    assert second.json() == {
        "type": "client_error",
        "errors": [{"code": "not_found", "detail": "Not found.", "attr": None}],
    }
    assert ProviderKey.objects.count() == 0


def test_patch_of_a_deleted_key_is_404(api: APIClient, organization: Organization) -> None:
    key = ProviderKeyFactory(organization=organization)
    api.delete(detail_url(key.id))

    assert api.patch(detail_url(key.id), {"is_default": True}).status_code == 404


# --- tenancy and auth ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_another_organizations_key_is_not_found(
    api: APIClient, outsider: Organization, method: str
) -> None:
    theirs = ProviderKeyFactory(organization=outsider)

    response = getattr(api, method)(detail_url(theirs.id), {"is_default": True})

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.is_default is False


@pytest.mark.parametrize("key_id", ["not-a-uuid", "123", "0" * 33, uuid.uuid4()])
@pytest.mark.parametrize("method", ["patch", "delete"])
def test_a_bad_or_unknown_id_is_not_found(api: APIClient, method: str, key_id: object) -> None:
    response = getattr(api, method)(detail_url(key_id), {"is_default": True})

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


def test_paths_have_no_trailing_slash_and_never_redirect(api: APIClient) -> None:
    response = api.get(URL + "/")

    assert response.status_code == 404


@pytest.mark.parametrize("client_fixture", ["agent_api", "org_agent_api"])
def test_agent_keys_are_forbidden(
    request: pytest.FixtureRequest, organization: Organization, client_fixture: str
) -> None:
    client = request.getfixturevalue(client_fixture)
    key = ProviderKeyFactory(organization=organization)
    body = {"provider_type": "stt", "provider_name": "deepgram", "api_key": SECRET}

    assert client.get(URL).status_code == 403
    assert client.post(URL, body).status_code == 403
    assert client.patch(detail_url(key.id), {"is_default": True}).status_code == 403
    assert client.delete(detail_url(key.id)).status_code == 403
    assert ProviderKey.objects.count() == 1


def test_no_key_is_401(anonymous_api: APIClient, organization: Organization) -> None:
    key = ProviderKeyFactory(organization=organization)

    responses = [
        anonymous_api.get(URL),
        anonymous_api.post(URL, {"provider_type": "stt"}),
        anonymous_api.patch(detail_url(key.id), {"is_default": True}),
        anonymous_api.delete(detail_url(key.id)),
    ]

    assert [r.status_code for r in responses] == [401] * 4
    assert all(r.headers["WWW-Authenticate"] == "Bearer" for r in responses)
    assert ProviderKey.objects.count() == 1


# --- bad input -------------------------------------------------------------------------

VALID = {"provider_type": "stt", "provider_name": "deepgram", "api_key": SECRET}

STT = "deepgram, assemblyai, openai, speechmatics, groq"
INVALID_CREATES = [
    ({"provider_type": "asr"}, "provider_type", "invalid_choice", "Must be one of: stt, llm, tts."),
    ({"provider_type": None}, "provider_type", "null", "This field may not be null."),
    (
        {"provider_type": ["stt"]},
        "provider_type",
        "invalid_choice",
        "Must be one of: stt, llm, tts.",
    ),
    (
        {"provider_name": "whisperx"},
        "provider_name",
        "invalid_choice",
        f"Unknown stt provider. Allowed: {STT}.",
    ),
    # A tts provider is not an stt provider.
    (
        {"provider_name": "elevenlabs"},
        "provider_name",
        "invalid_choice",
        f"Unknown stt provider. Allowed: {STT}.",
    ),
    ({"provider_name": ""}, "provider_name", "blank", "This field may not be blank."),
    ({"api_key": ""}, "api_key", "blank", "This field may not be blank."),
    ({"api_key": "        "}, "api_key", "blank", "This field may not be blank."),
    (
        {"api_key": "sk-1234"},
        "api_key",
        "min_length",
        "Ensure this field has at least 8 characters.",
    ),
    (
        {"api_key": "k" * 513},
        "api_key",
        "max_length",
        "Ensure this field has no more than 512 characters.",
    ),
    (
        {"api_key": "sk-abc\ndef-123"},
        "api_key",
        "invalid_characters",
        "Must contain only printable ASCII characters.",
    ),
    (
        {"api_key": "sk-\x07bell-123"},
        "api_key",
        "invalid_characters",
        "Must contain only printable ASCII characters.",
    ),
    (
        {"api_key": "sk-ключ-секрет"},
        "api_key",
        "invalid_characters",
        "Must contain only printable ASCII characters.",
    ),
    (
        {"api_key": "sk-nul\x00-123"},
        "api_key",
        "invalid_characters",
        "Must contain only printable ASCII characters.",
    ),
    ({"api_key": 123456789012}, "api_key", "invalid", "Not a valid string."),
    ({"api_key": None}, "api_key", "null", "This field may not be null."),
    ({"is_default": "true"}, "is_default", "invalid", "Must be a JSON boolean (true or false)."),
    ({"is_default": 1}, "is_default", "invalid", "Must be a JSON boolean (true or false)."),
    ({"is_default": "yes"}, "is_default", "invalid", "Must be a JSON boolean (true or false)."),
    ({"is_default": None}, "is_default", "null", "This field may not be null."),
]


@pytest.mark.parametrize(("change", "attr", "code", "detail"), INVALID_CREATES)
def test_create_rejects_bad_input_without_echoing_it(
    api: APIClient, change: dict, attr: str, code: str, detail: str
) -> None:
    body = {**VALID, **change}

    response = api.post(URL, body)

    assert response.status_code == 400
    assert response.json() == validation_error(attr, code, detail)
    assert ProviderKey.objects.count() == 0


@pytest.mark.parametrize("missing", ["provider_type", "provider_name", "api_key"])
def test_create_requires_type_name_and_key(api: APIClient, missing: str) -> None:
    body = {name: value for name, value in VALID.items() if name != missing}

    response = api.post(URL, body)

    assert response.json() == validation_error(missing, "required", "This field is required.")


def test_create_refuses_a_body_over_1_mib(api: APIClient) -> None:
    body = json.dumps({**VALID, "api_key": SECRET + "x" * (1024 * 1024)})

    response = api.generic("POST", URL, body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "request_too_large"
    assert ProviderKey.objects.count() == 0


def test_create_speaks_json_only(api: APIClient) -> None:
    response = api.post(URL, VALID, format="multipart")

    assert response.status_code == 415
    assert ProviderKey.objects.count() == 0


@pytest.mark.parametrize("value", ["true", 1, None, [], {"x": True}])
def test_patch_rejects_a_non_boolean_is_default(
    api: APIClient, organization: Organization, value: object
) -> None:
    key = ProviderKeyFactory(organization=organization)

    response = api.patch(detail_url(key.id), {"is_default": value})

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "is_default"
    key.refresh_from_db()
    assert key.is_default is False


# --- the plaintext never leaves --------------------------------------------------------


def test_the_plaintext_is_in_no_response_error_or_log_record(
    api: APIClient,
    outsider_api: APIClient,
    agent_api: APIClient,
    anonymous_api: APIClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hostile requests carrying the real key, with SQL logging on (it logs parameters)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django")  # Django's own config stops at INFO
    bodies = [
        {**VALID, "is_default": True},
        {**VALID, "provider_name": "whisperx"},
        {**VALID, "provider_type": "asr"},
        {**VALID, "is_default": "maybe"},
        {**VALID, "api_key": SECRET + "\x07"},
        {**VALID, "api_key": SECRET * 40},
        {**VALID, "api_key": [SECRET]},
        {**VALID, "api_key": {"key": SECRET}},
    ]
    responses = []
    with CaptureQueriesContext(connection):
        for body in bodies:
            responses.append(api.post(URL, body))
        created = responses[0].json()["id"]
        responses += [
            api.get(URL),
            api.patch(detail_url(created), {"is_default": False, "api_key": SECRET}),
            outsider_api.patch(detail_url(created), {"api_key": SECRET}),
            outsider_api.get(URL),
            agent_api.post(URL, VALID),
            anonymous_api.post(URL, VALID),
            api.post(URL, json.dumps(VALID)[:-5], content_type="application/json"),
        ]

    assert responses[0].status_code == 201
    assert [r.status_code for r in responses[1:]] == [400] * 7 + [200, 400, 404, 200, 403, 401, 400]
    for response in responses:
        assert SECRET not in response.content.decode()
        assert SECRET[-8:] not in response.content.decode()
    records = caplog.records
    assert any(r.name == "django.db.backends" for r in records), "SQL logging was not captured"
    for record in records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.__dict__)


def test_the_schema_never_returns_the_key_and_gives_no_example_of_one() -> None:
    schema = yaml.safe_load((settings.BASE_DIR / "openapi.yaml").read_text())
    components = schema["components"]["schemas"]

    assert "api_key" not in components["ProviderKey"]["properties"]
    assert "api_key" not in components["ProviderKeyList"]["properties"]["items"]["items"].get(
        "properties", {}
    )
    assert components["ProviderKeyCreateRequest"]["properties"]["api_key"]["writeOnly"] is True
    assert "example" not in yaml.safe_dump(components["ProviderKeyCreateRequest"])
    assert "api_key" not in yaml.safe_dump(schema["paths"])  # no example carries one


@pytest.mark.parametrize(
    "api_key",
    [
        "sk-live-abc123",
        "sk ab cd ef",
        "sk-live-abc123\n",
        "\tsk-live-abc123\r\n",
        "sk-abc\tdef1",
        "sk-ключ-секрет",
        "sk-nul\x00-123",
        "   \t   \n",
    ],
)
def test_the_schemas_pattern_for_a_key_accepts_exactly_what_the_api_accepts(
    api: APIClient, api_key: str
) -> None:
    import re

    schema = yaml.safe_load((settings.BASE_DIR / "openapi.yaml").read_text())
    field = schema["components"]["schemas"]["ProviderKeyCreateRequest"]["properties"]["api_key"]

    response = api.post(
        URL,
        {"provider_type": "stt", "provider_name": "deepgram", "api_key": api_key},
        format="json",
    )

    assert (response.status_code == 201) == bool(re.fullmatch(field["pattern"], api_key))


# ECMA-262's \s, which JSON Schema validators and clients apply to a `pattern`: it has
# U+FEFF and lacks U+001C-U+001F, both of which Python's str.strip() treats otherwise.
_ECMA_SPACE = "[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


@pytest.mark.parametrize("api_key", ["\ufeffsk-live-abc123", "sk-live-abc123\x1c"])
def test_the_schemas_pattern_read_as_a_client_reads_it_accepts_what_the_api_accepts(
    api: APIClient, api_key: str
) -> None:
    import re

    schema = yaml.safe_load((settings.BASE_DIR / "openapi.yaml").read_text())
    field = schema["components"]["schemas"]["ProviderKeyCreateRequest"]["properties"]["api_key"]
    as_ecma = field["pattern"].replace(r"\s", _ECMA_SPACE)

    response = api.post(
        URL,
        {"provider_type": "stt", "provider_name": "deepgram", "api_key": api_key},
        format="json",
    )

    assert (response.status_code == 201) == bool(re.fullmatch(as_ecma, api_key))
