"""What schema fuzzing found, pinned: JSON types as the schema states them, values the
database cannot store, blank or out-of-range query parameters, and every error
documented in openapi.yaml in the one shape."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings

from calls.models import Call
from tests.factories import CallFactory
from tests.test_workflows_api import DEFAULT_SETTINGS
from workflows.models import Workflow

# --- JSON types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body", "attr"),
    [
        ("/api/v1/calls", {"workflow_slug": "daily-call", "user_id": 5}, "user_id"),
        ("/api/v1/calls", {"workflow_slug": 5}, "workflow_slug"),
        ("/api/v1/calls", {"workflow_slug": "daily-call", "direction": 1}, "direction"),
        (
            "/api/v1/provider-keys",
            {"provider_type": "stt", "provider_name": 1, "api_key": "k" * 10},
            "provider_name",
        ),
        (
            "/api/v1/webhook-endpoints",
            {"url": "https://example.com/h", "enabled": "yes"},
            "enabled",
        ),
        ("/api/v1/webhook-endpoints", {"url": "https://example.com/h", "events": "x"}, "events"),
    ],
)
def test_values_of_the_wrong_json_type_are_refused_not_coerced(api, workflow, url, body, attr):
    response = api.post(url, body)
    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == [attr]


@pytest.mark.parametrize(
    ("field", "value", "attr"),
    [
        ("name", 5, "name"),
        ("settings", {"connect_timeout_seconds": "60"}, "settings.connect_timeout_seconds"),
        ("settings", {"max_duration_seconds": 60.0}, "settings.max_duration_seconds"),
        ("agents", [{"name": "solo", "handoffs": [1]}], "agents.0.handoffs.0"),
    ],
)
def test_workflow_fields_keep_their_json_types(api, workflow, field, value, attr):
    response = api.patch(f"/api/v1/workflows/{workflow.pk}", {field: value})
    assert response.status_code == 400
    assert attr in [e["attr"] for e in response.json()["errors"]]


def test_an_agent_event_id_must_be_a_string(agent_api, workflow):
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    event = {"id": 5, "type": "metrics", "timestamp": "2026-01-01T00:00:00Z", "tokens": 1}
    response = agent_api.post(f"/api/v1/agent/calls/{call.pk}/events", {"events": [event]})
    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["events.0.id"]


def test_settings_null_means_every_default(api, workflow):
    response = api.patch(f"/api/v1/workflows/{workflow.pk}", {"settings": None})
    assert response.status_code == 200
    assert response.json()["settings"] == DEFAULT_SETTINGS


# --- What PostgreSQL cannot store -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_data", {"name": "a\x00b"}),
        ("user_data", {"a\x00": 1}),
        ("metadata", {"list": [["\x00"]]}),
    ],
)
def test_a_null_character_in_json_is_refused(api, workflow, field, value):
    response = api.post("/api/v1/calls", {"workflow_slug": "daily-call", field: value})
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "code": "null_characters_not_allowed",
        "detail": "Null characters are not allowed.",
        "attr": field,
    }
    assert Call.objects.count() == 0


def test_a_null_character_in_tool_parameters_is_refused(api, workflow):
    agents = api.get(f"/api/v1/workflows/{workflow.pk}").json()["agents"]
    agents[0]["tools"] = [{"name": "t", "parameters": {"type": "object", "title": "\x00"}}]
    response = api.patch(f"/api/v1/workflows/{workflow.pk}", {"agents": agents})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "null_characters_not_allowed"
    assert Workflow.objects.get(pk=workflow.pk).current_version.number == 1


# --- Query parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "attr"),
    [
        ("workflow_id=", "workflow_id"),
        # Blanks alone: UUIDField strips them to nothing, and the filter was left out
        # (every workflow's calls listed as if they were the one asked for).
        ("workflow_id=%20", "workflow_id"),
        ("workflow_id=%09%20", "workflow_id"),
        # An empty user id (a client's unset variable) returned every user's calls.
        ("user_id=", "user_id"),
        # A blank status matched every call; `,` none; `completed,` ignored its blank.
        ("status=", "status"),
        ("status=,", "status"),
        ("status=completed,", "status"),
        ("analysis_status=", "analysis_status"),
        ("started_after=", "started_after"),
        ("started_before=", "started_before"),
        ("page=", "page"),
        ("page_size=", "page_size"),
        # PostgreSQL stores offsets up to ±15:59; this one leaves the calendar in UTC.
        ("started_after=0001-01-01T00:00:00%2B18:49", "started_after"),
        ("started_before=9999-12-31T23:59:00-18:00", "started_before"),
    ],
)
def test_blank_or_out_of_range_query_parameters_are_400(api, query, attr):
    response = api.get(f"/api/v1/calls?{query}")
    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == [attr]


def test_a_blank_workflow_slug_filter_is_400(api):
    response = api.get("/api/v1/workflows?slug=")
    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["slug"]


def test_an_offset_beyond_the_databases_range_is_compared_in_utc(api, workflow):
    CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    response = api.get("/api/v1/calls?started_after=2000-01-01T00:00:00%2B18:49")
    assert response.status_code == 200
    assert response.json()["total"] == 1


def test_a_blank_limit_on_active_calls_is_400(api):
    response = api.get("/api/v1/calls/active?limit=")
    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "limit"


@pytest.mark.parametrize("path", ["/api/v1/calls", "/api/v1/calls/active", "/api/v1/provider-keys"])
def test_more_query_parameters_than_django_parses_is_a_400_not_a_500(api, path):
    """Django refuses a query string of more than DATA_UPLOAD_MAX_NUMBER_FIELDS (1000)
    parameters with TooManyFieldsSent (a SuspiciousOperation, its own 400 outside DRF);
    inside a DRF view it reached drf-standardized-errors as an unknown exception: a 500.
    `?&&…&` (1000 ampersands, a 1 KB URL that gunicorn takes) is such a query string."""
    api.raise_request_exception = False
    query = "&" * 1000

    response = api.get(f"{path}?{query}")

    assert response.status_code == 400, response.content
    assert response.json()["type"] == "client_error"


@pytest.mark.parametrize("value", ["xml", "api", "csv"])
def test_a_format_query_parameter_does_not_turn_a_seed_path_into_a_404(api, workflow, value):
    """The API speaks JSON only. DRF's URL_FORMAT_OVERRIDE read `?format=` and answered
    any format without a renderer 404 "Not found." on a path that exists, before the
    view ran: a list looked missing and a create was refused as if the path were wrong."""
    listed = api.get(f"/api/v1/calls?format={value}")
    created = api.post(
        f"/api/v1/calls?format={value}", {"workflow_slug": "daily-call"}, format="json"
    )

    assert listed.status_code == 200, listed.content
    assert created.status_code == 201, created.content


# --- Unknown paths and the LiveKit webhook --------------------------------------------------


@pytest.mark.parametrize("method", ["post", "patch", "delete"])
def test_unknown_api_paths_are_json_404_for_every_method(api, method):
    response = getattr(api, method)("/api/v1/provider-keys/null,null")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_an_unsigned_livekit_webhook_is_a_401_in_the_error_shape(anonymous_api):
    response = anonymous_api.post(
        "/api/v1/webhooks/livekit", data=b"{}", content_type="application/webhook+json"
    )
    assert response.status_code == 401
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "authentication_failed",
                "detail": "Invalid or missing webhook signature.",
                "attr": None,
            }
        ],
    }


# --- The schema documents every error -------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load((Path(settings.BASE_DIR) / "openapi.yaml").read_text())


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def test_every_path_parameter_is_a_uuid_to_sdks(schema):
    """The seed types a call's `id` as a uuid; the routers' segments were plain text
    with a pattern, which SDKs typed as strings. (A webhook delivery's id is an
    integer, as the deliveries list answers it.)"""
    uuid = {"type": "string", "format": "uuid"}
    untyped = [
        (path, method, parameter["name"], parameter["schema"])
        for path, method, operation in _operations(schema)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
        and parameter["schema"] != uuid
        and (parameter["name"], parameter["schema"]) != ("delivery_id", {"type": "integer"})
    ]
    assert untyped == []


def test_every_error_response_uses_the_one_error_shape(schema):
    shapes = set()
    for _, _, operation in _operations(schema):
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                shapes.add(response["content"]["application/json"]["schema"]["$ref"])
    assert shapes == {
        "#/components/schemas/ErrorResponse",
        "#/components/schemas/LimitErrorResponse",
        "#/components/schemas/RotationLimitErrorResponse",
        "#/components/schemas/StreamLimitErrorResponse",
    }
    # The 429s' shapes are the one shape with their `meta` typed.
    names = ("LimitErrorResponse", "RotationLimitErrorResponse", "StreamLimitErrorResponse")
    for name in ("ErrorResponse", *names):
        error = schema["components"]["schemas"][name]
        assert error["required"] == ["errors", "type"], name
        assert set(error["properties"]) == {"type", "errors", "meta"}, name
        assert (
            error["properties"]["errors"]
            == schema["components"]["schemas"]["ErrorResponse"]["properties"]["errors"]
        )


def _json_schema(node: object) -> object:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable` becomes a null alternative."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _json_schema(v) for k, v in node.items() if k not in {"nullable", "example"}}
    if node.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        if {"allOf", "$ref", "oneOf", "anyOf"} & set(converted):
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def test_every_example_is_valid_by_its_own_schema(schema):
    """SDK docs show the examples: each must be a body the schema takes (the call's
    examples lacked `channel` and the phone fields the schema requires)."""
    components = _json_schema(schema["components"])
    invalid = []
    for path, method, operation in _operations(schema):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += [(code, response) for code, response in operation["responses"].items()]
        for where, body in bodies:
            media = (body.get("content") or {}).get("application/json")
            if not media:
                continue
            validator = jsonschema.Draft7Validator(
                {**_json_schema(media["schema"]), "components": components}
            )
            for name, example in (media.get("examples") or {}).items():
                invalid += [
                    f"{method} {path} {where} {name}: {error.message}"
                    for error in validator.iter_errors(example["value"])
                ]
    assert invalid == []


def test_every_operation_documents_the_errors_it_can_answer(schema):
    for path, method, operation in _operations(schema):
        codes = set(operation["responses"])
        where = f"{method.upper()} {path}"
        assert {"400", "405", "500"} <= codes, where
        if path not in {"/api/v1/webhooks/livekit", "/api/v1/"}:  # no API key on these two
            assert {"401", "403"} <= codes, where
        if "{" in path:
            assert "404" in codes, where
        if method in {"post", "put", "patch"}:
            assert {"413", "415"} <= codes, where
        # The create rate counts no agent key (nor LiveKit's webhooks): the agent's
        # inbound call session, a create, is never throttled.
        is_create = method == "post" and "{" not in path and path != "/api/v1/webhooks/livekit"
        is_create = is_create and not path.startswith("/api/v1/agent/")
        # A transfer dials too: it counts against the outbound calls per minute. Live
        # streams count against the organization's open streams. Workflow writes keep
        # a version each: they count against the workflow write rate. A webhook test
        # event or replay queues a send: it counts as a create. A secret's rotation
        # past the secrets still signing is refused (rotation_limit_reached).
        limited = operation["operationId"] in {
            "webhook_endpoints_rotate_secret",
            "webhook_endpoints_test",
            "webhook_endpoints_replay_delivery",
            "calls_transfer",
            "agent_calls_transfer",
            "calls_stream",
            "workflows_update",
            "workflows_partial_update",
        }
        assert ("429" in codes) == (is_create or limited), where


@pytest.mark.parametrize(
    ("operation_id", "codes"),
    [
        ("calls_create", {"409", "422", "429"}),
        ("calls_token", {"409"}),
        ("calls_end", {"502"}),
        ("calls_stream", {"400", "404", "429"}),
        ("calls_transfer", {"409", "429", "502"}),
        ("agent_calls_transfer", {"409", "429", "502"}),
        ("livekit_webhook", {"401"}),
        ("workflows_create", {"429"}),
        ("workflows_update", {"429"}),
        ("workflows_partial_update", {"429"}),
        # 404s of paths without a parameter: documented only while `?format=` could 404.
        ("recording_storage_retrieve", {"404"}),
        ("recording_storage_destroy", {"404"}),
        ("agent_inbound_calls_session", {"404"}),
    ],
)
def test_operation_specific_errors_are_documented(schema, operation_id, codes):
    [operation] = [op for _, _, op in _operations(schema) if op["operationId"] == operation_id]
    assert codes <= set(operation["responses"])


def test_every_operation_that_reads_the_database_documents_503_with_retry_after(schema):
    """While the database refuses connections, times out or is overloaded, any operation
    answers 503 `service_unavailable` with Retry-After (voicecalls.errors): only the
    live stream documented a 503, so SDKs had no type for it and clients no hint to
    retry. (The API index reads no database: test_the_api_index_reads_no_database.)"""
    undocumented = []
    for path, method, operation in _operations(schema):
        if operation["operationId"] == "api_index":
            continue
        response = operation["responses"].get("503", {})
        media = response.get("content", {}).get("application/json", {})
        retry_after = response.get("headers", {}).get("Retry-After", {})
        if (
            media.get("schema") != {"$ref": "#/components/schemas/ErrorResponse"}
            or retry_after.get("schema", {}).get("type") != "integer"
            or "service_unavailable" not in response.get("description", "")
        ):
            undocumented.append(f"{method.upper()} {path}")
    assert undocumented == []


@pytest.mark.django_db
def test_the_api_index_reads_no_database(anonymous_api, django_assert_num_queries):
    """So it cannot answer the database's 503, and its schema does not say it may."""
    with django_assert_num_queries(0):
        assert anonymous_api.get("/api/v1/").status_code == 200


def test_429_documents_retry_after_and_the_limit_meta(schema):
    [create] = [op for _, _, op in _operations(schema) if op["operationId"] == "calls_create"]
    response = create["responses"]["429"]
    assert "Retry-After" in response["headers"]
    meta = schema["components"]["schemas"]["LimitMeta"]
    # The concurrency limit's numbers, or (a phone call) the outbound rate's or cap's.
    assert set(meta["properties"]) == {
        "active_calls",
        "concurrency_limit",
        "limit",
        "outbound_calls_per_minute",
        "outbound_calls_per_day",
    }
    assert "required" not in meta


def _operation(schema: dict, operation_id: str) -> dict:
    return next(op for _, _, op in _operations(schema) if op["operationId"] == operation_id)


def _validator(schema: dict, media: dict) -> jsonschema.Draft7Validator:
    components = _json_schema(schema["components"])
    return jsonschema.Draft7Validator({**_json_schema(media["schema"]), "components": components})


@pytest.mark.django_db(transaction=True)
def test_a_phone_calls_429_over_the_outbound_rate_is_what_the_schema_says(
    schema, api, organization, workflow, sip_fake
):
    """Its `meta` (which limit, and its value) was not the concurrency limit's the
    schema required."""
    from accounts.models import Organization
    from tests.phone import CALLEE, phone_ready

    phone_ready(organization)
    Organization.objects.filter(pk=organization.pk).update(outbound_calls_per_minute=1)
    body = {"workflow_slug": "daily-call", "phone_number": CALLEE}
    assert api.post("/api/v1/calls", body, format="json").status_code == 201

    refused = api.post("/api/v1/calls", body, format="json")

    assert refused.status_code == 429
    media = _operation(schema, "calls_create")["responses"]["429"]["content"]["application/json"]
    assert list(_validator(schema, media).iter_errors(refused.json())) == []


@pytest.mark.parametrize("operation_id", ["calls_transfer", "agent_calls_transfer"])
def test_a_transfers_429_types_the_outbound_limits_meta(schema, operation_id):
    """A transfer to a number counts against the outbound calls per minute and per day:
    its 429 is `outbound_rate_limited` with `meta` (which limit, and its value), as a
    phone call's creation answers it. The schema gave it the generic error, whose `meta`
    SDKs read as an untyped map, and said only "too many requests"."""
    response = _operation(schema, operation_id)["responses"]["429"]

    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LimitErrorResponse"
    }
    assert "`outbound_rate_limited`" in response["description"]


def test_a_streams_429_types_its_limits_meta(schema):
    """`stream_limit_reached` answers `meta: {open_streams, stream_limit}`: the generic
    error's `meta` left it an untyped map to SDKs."""
    media = _operation(schema, "calls_stream")["responses"]["429"]["content"]["application/json"]
    shape = schema["components"]["schemas"][media["schema"]["$ref"].rsplit("/", 1)[1]]
    meta = schema["components"]["schemas"][shape["properties"]["meta"]["allOf"][0]["$ref"][21:]]

    assert meta["required"] == ["open_streams", "stream_limit"]
    assert {name: field["type"] for name, field in meta["properties"].items()} == {
        "open_streams": "integer",
        "stream_limit": "integer",
    }


def test_a_workflow_read_back_is_a_write_its_schema_takes(schema, api, workflow):
    """Blank texts (`greeting: ""`) matched both of drf-spectacular's `oneOf` branches
    (its rules, and an empty string), which refuses what matches two."""
    read = api.get(f"/api/v1/workflows/{workflow.pk}").json()
    body = {name: read[name] for name in ("slug", "name", "start_agent", "agents", "settings")}
    media = _operation(schema, "workflows_update")["requestBody"]["content"]["application/json"]

    assert api.put(f"/api/v1/workflows/{workflow.pk}", body, format="json").status_code == 200
    assert [error.message for error in _validator(schema, media).iter_errors(body)] == []


def test_a_comma_separated_parameter_says_it_takes_one_value_at_least(schema):
    """`status=` (an empty list) is a 400: the schema must not offer it."""
    [status] = [p for p in _operation(schema, "calls_list")["parameters"] if p["name"] == "status"]
    assert (status["style"], status["explode"], status["schema"]["minItems"]) == ("form", False, 1)


# --- OPTIONS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/calls", "/api/v1/workflows", "/api/v1/webhook-endpoints"]
)
def test_options_says_what_an_endpoint_speaks_without_describing_a_wrong_body(api, path) -> None:
    """DRF's `actions` listed the response serializer as the POST body (`id` required on
    POST /calls, no `workflow_slug`): the bodies are in openapi.yaml."""
    body = api.options(path).json()

    assert sorted(body) == ["description", "name", "parses", "renders"]
    assert (body["renders"], body["parses"]) == (["application/json"], ["application/json"])
