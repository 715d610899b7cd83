"""Every field of every request body has a bound; over it is a 400 naming the field,
in the one error shape, and nothing is written."""

from __future__ import annotations

import copy
import http.client
import json
import uuid
from collections.abc import Callable

import pytest
from django.utils import timezone

from calls.models import Call, TranscriptEntry
from providerkeys.models import ProviderKey
from tests.factories import CallFactory, ProviderKeyFactory
from workflows.models import Workflow


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _set(body: dict, path: str, value: object) -> dict:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


def _assert_refused(response, attr: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["type"] == "validation_error"
    assert attr in [error["attr"] for error in body["errors"]], body
    assert all(set(error) == {"code", "detail", "attr"} for error in body["errors"])


# --- POST /api/v1/calls --------------------------------------------------------------------

CALL = {"workflow_slug": "daily-call", "user_id": "u", "user_data": {}, "metadata": {}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workflow_slug", "s" * 101),
        ("user_id", "u" * 256),
        ("user_data", {"blob": "x" * (32 * 1024)}),
        ("user_data", nested(9)),
        ("user_data", ["not", "an", "object"]),
        ("metadata", {"blob": "x" * (16 * 1024)}),
        ("metadata", nested(9)),
        ("direction", "sideways"),
    ],
)
def test_call_fields_over_their_bounds_are_refused(api, workflow, field, value):
    _assert_refused(api.post("/api/v1/calls", _set(CALL, field, value)), field)
    assert Call.objects.count() == 0


@pytest.mark.parametrize("field", ["user_data", "metadata"])
def test_call_json_nested_a_thousand_levels_is_refused_not_a_500(api, workflow, field):
    """orjson parses 1,000 levels; DRF's JSONField re-encoded them recursively (500)."""
    deep = '{"a":' * 1000 + "1" + "}" * 1000
    body = f'{{"workflow_slug": "{workflow.slug}", "{field}": {deep}}}'

    response = api.post("/api/v1/calls", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "errors": [
            {"code": "too_deep", "detail": "Must be nested at most 8 levels deep.", "attr": field}
        ],
    }
    assert Call.objects.count() == 0


@pytest.mark.parametrize(("field", "limit"), [("user_data", 32 * 1024), ("metadata", 16 * 1024)])
def test_call_json_is_measured_in_the_utf8_bytes_it_takes_not_escaped(api, workflow, field, limit):
    """Each CJK character counted 6 bytes (its \\uXXXX escape) instead of its 3 in UTF-8:
    objects well under the limit were refused at about half of it."""
    fits = {"note": "日" * ((limit - 20) // 3)}  # 3 bytes a character: just under
    over = {"note": "日" * ((limit + 3) // 3)}

    def post(value: dict):
        body = json.dumps({"workflow_slug": workflow.slug, field: value}, ensure_ascii=False)
        return api.post("/api/v1/calls", body.encode(), content_type="application/json")

    assert post(fits).status_code == 201
    _assert_refused(post(over), field)


def test_an_idempotency_key_over_255_characters_is_refused(api, workflow):
    response = api.post("/api/v1/calls", CALL, HTTP_IDEMPOTENCY_KEY="k" * 256)
    _assert_refused(response, "Idempotency-Key")


def test_call_fields_at_their_bounds_are_accepted(api, workflow):
    body = {
        "workflow_slug": "daily-call",
        "user_id": "u" * 255,
        "user_data": nested(8),
        "metadata": {"blob": "x" * (16 * 1024 - 20)},
    }
    assert api.post("/api/v1/calls", body).status_code == 201


# --- Provider keys ---------------------------------------------------------------------------

PROVIDER_KEY = {
    "provider_type": "stt",
    "provider_name": "deepgram",
    "api_key": "dg_secret_1",
    "is_default": False,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider_type", "video"),
        ("provider_name", "p" * 51),
        ("api_key", "k" * 7),
        ("api_key", "k" * 513),
        ("api_key", "tab\tinside"),
        ("is_default", "yes"),
    ],
)
def test_provider_key_fields_over_their_bounds_are_refused(api, field, value):
    _assert_refused(api.post("/api/v1/provider-keys", _set(PROVIDER_KEY, field, value)), field)
    assert ProviderKey.objects.count() == 0


def test_provider_key_patch_takes_only_a_boolean(api, organization):
    key = ProviderKeyFactory(organization=organization)
    response = api.patch(f"/api/v1/provider-keys/{key.pk}", {"is_default": "x" * 10})
    _assert_refused(response, "is_default")


# --- Workflows ------------------------------------------------------------------------------

AGENT = {
    "name": "solo",
    "instructions": "Talk.",
    "greeting": "",
    "tools": [{"name": "save", "description": "", "parameters": {"type": "object"}}],
    "handoffs": [],
    "stt": {"provider": "deepgram", "model": "nova-3"},
    "llm": {"provider": "openai", "model": "gpt-4o-mini"},
    "tts": {"provider": "cartesia", "model": "sonic-2", "voice": None},
}
WORKFLOW = {
    "slug": "flow",
    "name": "Flow",
    "start_agent": "solo",
    "agents": [AGENT],
    "settings": {"connect_timeout_seconds": 60, "max_duration_seconds": 1800},
}


def _many_agents(count: int) -> list[dict]:
    return [{**AGENT, "name": f"agent-{i}"} for i in range(count)]


@pytest.mark.parametrize(
    ("where", "attr"),
    [
        (("agents", 0, "tools", 0, "parameters"), "agents.0.tools.0.parameters"),
        (("analysis", "structured_data_schema"), "analysis.structured_data_schema"),
    ],
)
def test_a_workflow_json_schema_nested_a_thousand_levels_is_refused_not_a_500(
    api, organization, where, attr
):
    """orjson parses 1,000 levels; DRF's JSONField re-encoded them recursively (500)
    before the schema field's own depth check."""
    body = copy.deepcopy(WORKFLOW)
    body.setdefault("analysis", {"summary_prompt": "Summarize."})
    *parents, last = where
    node = body
    for part in parents:
        node = node[part]
    node[last] = "DEEP"
    deep = '{"a":' * 1000 + "1" + "}" * 1000
    text = json.dumps(body).replace('"DEEP"', deep)

    response = api.post("/api/v1/workflows", text, content_type="application/json")

    assert response.status_code == 400
    assert (response.json()["errors"][0]["code"], response.json()["errors"][0]["attr"]) == (
        "too_deep",
        attr,
    )
    assert Workflow.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value", "attr"),
    [
        ("slug", "s" * 101, "slug"),
        ("slug", "not a slug", "slug"),
        ("name", "n" * 201, "name"),
        ("start_agent", "a" * 65, "start_agent"),
        ("agents", [], "agents"),
        ("agents", _many_agents(21), "agents"),
        ("agents.0.name", "a" * 65, "agents.0.name"),
        ("agents.0.instructions", "i" * 20_001, "agents.0.instructions"),
        ("agents.0.greeting", "g" * 2_001, "agents.0.greeting"),
        ("agents.0.tools", [{"name": f"t{i}"} for i in range(33)], "agents.0.tools"),
        ("agents.0.tools.0.name", "t" * 65, "agents.0.tools.0.name"),
        ("agents.0.tools.0.description", "d" * 1_025, "agents.0.tools.0.description"),
        (
            "agents.0.tools.0.parameters",
            {"type": "object", "description": "d" * 16 * 1024},
            "agents.0.tools.0.parameters",
        ),
        (
            "agents.0.tools.0.parameters",
            {"type": "object", "properties": nested(40)},
            "agents.0.tools.0.parameters",
        ),
        ("agents.0.tools.0.url", "https://e.com/" + "p" * 2_000, "agents.0.tools.0.url"),
        ("agents.0.handoffs", [f"a{i}" for i in range(21)], "agents.0.handoffs"),
        ("agents.0.handoffs", ["h" * 65], "agents.0.handoffs.0"),
        ("agents.0.stt.provider", "p" * 51, "agents.0.stt.provider"),
        ("agents.0.llm.model", "m" * 101, "agents.0.llm.model"),
        ("agents.0.tts.voice", "v" * 201, "agents.0.tts.voice"),
        ("settings.connect_timeout_seconds", 4, "settings.connect_timeout_seconds"),
        ("settings.connect_timeout_seconds", 601, "settings.connect_timeout_seconds"),
        ("settings.max_duration_seconds", 29, "settings.max_duration_seconds"),
        ("settings.max_duration_seconds", 4 * 3600 + 1, "settings.max_duration_seconds"),
    ],
)
@pytest.mark.parametrize("method", ["create", "replace", "patch"])
def test_workflow_fields_over_their_bounds_are_refused(
    api, organization, method, field, value, attr
):
    body = _set(WORKFLOW, field, value)
    if method == "create":
        response = api.post("/api/v1/workflows", body)
        assert Workflow.objects.count() == 0
        _assert_refused(response, attr)
        return
    created = api.post("/api/v1/workflows", WORKFLOW).json()
    url = f"/api/v1/workflows/{created['id']}"
    if method == "replace":
        response = api.put(url, body)
    else:
        top = attr.split(".")[0]
        response = api.patch(url, {top: body[top]})
    _assert_refused(response, attr)
    assert api.get(url).json()["version"] == 1


# --- Agent events ---------------------------------------------------------------------------


def _event(**fields: object) -> dict:
    return {"id": str(uuid.uuid4()), "timestamp": timezone.now().isoformat(), **fields}


TRANSCRIPT = {"type": "transcript", "role": "assistant", "content": "Hi", "agent_name": "a"}
METRICS = {"type": "metrics", "tokens": 1, "agent_name": "a", "turn_index": 0}
HANDOFF = {"type": "agent_handoff", "from_agent": "a", "to_agent": "b"}
STATUS = {"type": "status", "status": "completed", "reason": "agent_hangup"}
TOOL_CALL = {"name": "save", "arguments": {}}

EVENT_CASES: list[tuple[dict, str, Callable[[], object]]] = [
    (TRANSCRIPT, "content", lambda: "c" * 65_537),
    (TRANSCRIPT, "agent_name", lambda: "a" * 101),
    (TRANSCRIPT, "role", lambda: "narrator"),
    (TRANSCRIPT, "tool_call", lambda: {"name": "n" * 65, "arguments": {}}),
    (TRANSCRIPT, "tool_call", lambda: {"name": "n", "arguments": {"b": "x" * 16 * 1024}}),
    (TRANSCRIPT, "tool_call", lambda: {"name": "n", "arguments": nested(9)}),
    (TRANSCRIPT, "tool_call", lambda: {"name": "n", "arguments": []}),
    (METRICS, "tokens", lambda: 10_000_001),
    (METRICS, "tokens", lambda: -1),
    (METRICS, "stt_latency_ms", lambda: 600_001),
    (METRICS, "turn_index", lambda: 1_000_001),
    (METRICS, "agent_name", lambda: "a" * 101),
    (HANDOFF, "from_agent", lambda: "a" * 101),
    (HANDOFF, "to_agent", lambda: "a" * 101),
    (STATUS, "status", lambda: "connecting"),
    (STATUS, "reason", lambda: "r" * 51),
    (STATUS, "id", lambda: "not-a-uuid"),
    (STATUS, "timestamp", lambda: "yesterday"),
]


@pytest.mark.parametrize(
    ("base", "field", "value"),
    EVENT_CASES,
    ids=[f"{base['type']}-{field}-{i}" for i, (base, field, _) in enumerate(EVENT_CASES)],
)
def test_agent_event_fields_over_their_bounds_are_refused(agent_api, workflow, base, field, value):
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    events = [_event(**TRANSCRIPT), _event(**{**base, field: value()})]
    response = agent_api.post(f"/api/v1/agent/calls/{call.pk}/events", {"events": events})
    assert response.status_code == 400, response.content
    attrs = [error["attr"] for error in response.json()["errors"]]
    assert any(attr.startswith(f"events.1.{field}") for attr in attrs), attrs
    assert TranscriptEntry.objects.count() == 0


def test_a_batch_over_500_events_is_refused(agent_api, workflow):
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    events = [_event(**TRANSCRIPT) for _ in range(501)]
    response = agent_api.post(f"/api/v1/agent/calls/{call.pk}/events", {"events": events})
    _assert_refused(response, "events")


# --- Chunked request bodies, as gunicorn hands them over -------------------------------------


def post_chunked(live, path: str, chunks: list[bytes]) -> tuple[int, dict]:
    """A POST whose body goes in chunks (Transfer-Encoding: chunked, no Content-Length)."""
    host, port = live.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(
            "POST",
            path,
            body=iter(chunks),
            headers={
                "Authorization": f"Bearer {live.client_key}",
                "Content-Type": "application/json",
            },
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_body_is_read(live_server_gunicorn) -> None:
    body = json.dumps(
        {"provider_type": "stt", "provider_name": "deepgram", "api_key": "dg-chunked-0123"}
    ).encode()

    status, answer = post_chunked(
        live_server_gunicorn, "/api/v1/provider-keys", [body[:10], body[10:30], body[30:]]
    )

    assert status == 201, answer
    assert {k: answer[k] for k in ("provider_type", "provider_name", "masked_key")} == {
        "provider_type": "stt",
        "provider_name": "deepgram",
        "masked_key": "••••0123",
    }


def test_a_chunked_body_over_the_limit_is_413(live_server_gunicorn) -> None:
    chunk = b" " * 65536
    chunks = [b'{"provider_type": "stt"', *[chunk] * 16, b"}"]  # 1 MiB and 25 bytes

    status, answer = post_chunked(live_server_gunicorn, "/api/v1/provider-keys", chunks)

    assert status == 413
    assert answer == {
        "type": "client_error",
        "errors": [
            {
                "code": "request_too_large",
                "detail": "Request body exceeds 1048576 bytes.",
                "attr": None,
            }
        ],
    }
