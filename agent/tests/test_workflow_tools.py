"""Tools from JSON Schema: argument validation, url tools, the SSRF guard, names."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from livekit.agents import AgentSession, ToolError

from agent.api import AgentAPI
from agent.call import CallRuntime
from agent.providers import ComponentCache
from agent.reporter import EventReporter
from agent.tests.scripted_llm import ScriptedLLM, call
from agent.tool_http import UnsafeToolURL, check_tool_url
from agent.tool_schema import checked_parameters, tool_parameters, validation_error
from agent.workflow import (
    MAX_HANDOFFS_IN_A_ROW,
    ToolRunner,
    handoff_tool_name,
    workflow_tool,
)

SAVE_MEAL = {
    "name": "save_meal",
    "description": "Record a meal the user had today.",
    "parameters": {
        "type": "object",
        "properties": {
            "meal_type": {"type": "string", "enum": ["breakfast", "lunch", "dinner", "snack"]},
            "description": {"type": "string"},
        },
        "required": ["meal_type"],
    },
}


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"meal_type": "lunch"}, None),
        ({"meal_type": "lunch", "description": "soup"}, None),
        ({}, '"meal_type" is a required property'),
        ({"meal_type": "brunch"}, '"brunch" is not one of'),
        ({"meal_type": "lunch", "description": 3}, '3 is not of type "string" (at /description)'),
    ],
)
def test_arguments_are_checked_against_the_tool_schema(arguments: dict, problem: str | None):
    found = validation_error(checked_parameters(SAVE_MEAL), arguments)
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_a_pattern_that_backtracks_forever_in_python_is_checked_at_once():
    """Python's `re` takes hours on these forty a's and a "!"; the worker's loop (and
    every call on it) would stall while the LLM's arguments were checked."""
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "integer"}},
    }
    started = time.monotonic()

    problem = validation_error(schema, {"code": "a" * 40 + "!", "b" * 40 + "!": "x"})

    assert problem is not None and "does not match" in problem
    assert time.monotonic() - started < 5


def test_formats_are_annotations_and_an_unknown_meta_schema_is_draft_2020_12():
    """As jsonschema read them before: zod-to-json-schema's draft-07 output had its
    `format` asserted, and a `$schema` no validator knows refused to compile."""
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"email": {"type": "string", "format": "email"}},
        "required": ["email"],
    }
    unknown = {**draft7, "$schema": "https://example.com/schemas/lead"}

    for schema in (draft7, unknown):
        assert validation_error(schema, {"email": "ada at example dot com"}) is None
        assert validation_error(schema, {}) == '"email" is a required property'


def test_a_remote_reference_is_never_fetched_and_checks_nothing():
    schema = {"type": "object", "properties": {"x": {"$ref": "http://169.254.169.254/x"}}}

    assert validation_error(schema, {"x": 1}) is None


def test_a_tool_without_parameters_gets_an_empty_object_schema():
    assert tool_parameters({"name": "ping"}) == {"type": "object", "properties": {}}


async def test_a_tool_without_url_is_recorded_and_acknowledged():
    runner = ToolRunner(call_id="c1")
    assert json.loads(await runner.run(SAVE_MEAL, {"meal_type": "lunch"}, agent_name="a")) == {
        "status": "recorded"
    }
    with pytest.raises(ToolError, match="Invalid arguments for save_meal"):
        await runner.run(SAVE_MEAL, {"meal_type": "brunch"}, agent_name="a")
    await runner.aclose()


def url_runner(handler) -> ToolRunner:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ToolRunner(call_id="c1", http=http, allow_private_urls=True)


async def test_a_url_tool_posts_the_arguments_and_returns_the_json_result():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"saved": True, "id": 7})

    runner = url_runner(handler)
    spec = {**SAVE_MEAL, "url": "https://tools.example.com/meals"}
    result = await runner.run(spec, {"meal_type": "dinner"}, agent_name="meal-agent")
    assert json.loads(result) == {"saved": True, "id": 7}
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://tools.example.com/meals"
    assert json.loads(request.content) == {"meal_type": "dinner"}
    assert request.headers["X-Voicecalls-Call-Id"] == "c1"
    assert request.headers["X-Voicecalls-Tool"] == "save_meal"
    assert request.headers["X-Voicecalls-Agent"] == "meal-agent"


@pytest.mark.parametrize(
    ("answer", "result"),
    [
        (httpx.Response(204), {"status": "ok"}),
        (httpx.Response(200, text=""), {"status": "ok"}),
        (httpx.Response(200, text="Saved, id 7."), {"result": "Saved, id 7."}),  # text/plain
    ],
)
async def test_a_url_tool_answering_done_without_json_succeeds(answer, result):
    """A 204, or a plain "Saved": the action ran. Told as an error, the model would call
    the tool again and the action would run twice."""
    runner = url_runner(lambda request: answer)
    spec = {**SAVE_MEAL, "url": "https://tools.example.com/meals"}

    assert json.loads(await runner.run(spec, {"meal_type": "dinner"}, agent_name="a")) == result


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(500, json={}), "failed (HTTP 500)"),
        (httpx.Response(200, html="<html>"), "did not return JSON"),
        (httpx.ReadTimeout("slow"), "did not answer in time"),
        # Down, not slow: the customer reading the transcript looks for the right fault.
        (httpx.ConnectError("[Errno 111] Connection refused"), "could not be reached"),
        (httpx.RemoteProtocolError("Server disconnected"), "closed the connection unanswered"),
    ],
)
async def test_a_failing_url_tool_tells_the_model(answer, message):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    runner = url_runner(handler)
    spec = {**SAVE_MEAL, "url": "https://tools.example.com/meals"}
    with pytest.raises(ToolError, match=re.escape(message)):
        await runner.run(spec, {"meal_type": "dinner"}, agent_name="a")


async def test_a_redirect_is_not_followed_and_its_body_is_no_result():
    """Redirects are not followed (the new location is unchecked): the tool did not
    run there, so a redirect's own JSON body must not reach the model as its result."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        location = {"Location": "https://tools.example.com/v2/meals"}
        return httpx.Response(308, json={"saved": True}, headers=location)

    runner = url_runner(handler)
    spec = {**SAVE_MEAL, "url": "https://tools.example.com/meals"}
    with pytest.raises(ToolError, match=re.escape("failed (HTTP 308)")):
        await runner.run(spec, {"meal_type": "dinner"}, agent_name="a")
    assert len(seen) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://tools.example.com/x",
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "ftp://tools.example.com/x",
        # Internal IPv4 inside IPv6 transition forms, and blocks Python calls global.
        "https://[2002:7f00:1::]/x",
        "https://[2002:a9fe:a9fe::]/x",
        "https://[64:ff9b::a00:1]/x",
        "https://[64:ff9b:1::808:808]/x",
        "https://[::ffff:0:127.0.0.1]/x",
        "https://[::127.0.0.1]/x",
        "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x",
        "https://[fec0::1]/x",
        "https://192.88.99.1/x",
        "https://example.com:99999/x",  # saved before the API refused such a port
    ],
)
async def test_tool_urls_must_be_public_https(url):
    with pytest.raises(UnsafeToolURL):
        await check_tool_url(url, allow_private=False)


async def test_local_development_may_allow_private_http_tool_urls():
    await check_tool_url("http://127.0.0.1:9000/x", allow_private=True)


async def test_a_refused_tool_url_is_not_called():
    called: list[httpx.Request] = []
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: called.append(r)))
    runner = ToolRunner(call_id="c1", http=http)
    spec = {**SAVE_MEAL, "url": "https://127.0.0.1/x"}
    with pytest.raises(ToolError, match="unavailable"):
        await runner.run(spec, {"meal_type": "lunch"}, agent_name="a")
    assert called == []


def test_handoff_tool_names_fit_the_providers_limit():
    assert handoff_tool_name("meal-agent") == "transfer_to_meal-agent"
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    assert len(handoff_tool_name(long_a)) == 64
    assert handoff_tool_name(long_a) != handoff_tool_name(long_b)


def _arrays_without_items(schema: object, path: str = "") -> list[str]:
    """OpenAI's rule for a function's parameters: every array schema says its `items`
    (else 400 "array schema missing items" on every request that offers the tool)."""
    found = []
    if isinstance(schema, dict):
        kind = schema.get("type")
        if (kind == "array" or isinstance(kind, list) and "array" in kind) and (
            "items" not in schema
        ):
            found.append(path or "/")
        for key, value in schema.items():
            if key not in ("enum", "const", "default", "examples"):
                found += _arrays_without_items(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += _arrays_without_items(value, f"{path}/{index}")
    return found


TAG_MEAL = {
    "name": "tag_meal",
    "parameters": {
        "type": "object",
        "properties": {
            "tags": {"type": "array"},
            "notes": {"type": ["array", "null"], "maxItems": 3},
            "courses": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "sides": {"anyOf": [{"type": "array"}, {"type": "string"}]},
                    },
                },
            },
            "pair": {"type": "array", "prefixItems": [{"type": "string"}]},
            "kind": {"const": {"type": "array"}},
        },
        "$defs": {"list": {"type": "array"}},
    },
}


def test_array_schemas_without_items_get_any_items_for_the_llm():
    """The API takes `{"type": "array"}` (valid JSON Schema); OpenAI refuses the whole
    request that offers it, so the agent could not answer at all."""
    tool = workflow_tool(TAG_MEAL, ToolRunner(call_id="c"), "a")
    offered = tool.info.raw_schema["parameters"]

    assert _arrays_without_items(offered) == []
    assert offered["properties"]["tags"] == {"type": "array", "items": {}}
    # A value (`const`) is data, not a schema: left as it is.
    assert offered["properties"]["kind"] == {"const": {"type": "array"}}
    assert TAG_MEAL["parameters"]["properties"]["tags"] == {"type": "array"}  # not changed


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"tags": [1, "x"], "notes": None, "pair": ["a", 2, 3]}, None),
        ({"notes": [1, 2, 3, 4]}, "has more than 3 items"),
        ({"courses": [{"sides": 3}]}, "anyOf"),
        ({"kind": {"type": "array", "items": {}}}, "was expected"),
    ],
)
def test_arguments_are_checked_as_the_customer_schema_says(arguments: dict, problem: str | None):
    found = validation_error(checked_parameters(TAG_MEAL), arguments)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# Either a phone or an email; a discount needs a code. Valid JSON Schema, which the API
# takes; OpenAI refuses a function whose parameters have `oneOf`, `anyOf`, `allOf`,
# `enum` or `not` at the top level, Anthropic one with the first three.
BOOK = {
    "name": "book",
    "parameters": {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "anyOf": [
            {"properties": {"phone": {"type": "string"}}, "required": ["phone"]},
            {"properties": {"email": {"type": "string"}}, "required": ["email"]},
        ],
        "allOf": [{"properties": {"code": {"type": "string"}}, "required": ["code"]}],
        "oneOf": [{"properties": {"name": {"type": "integer"}}}, {"required": ["name"]}],
        "not": {"required": ["spam"]},
    },
}


def test_top_level_combinators_are_not_offered_to_the_llm_but_still_checked():
    offered = workflow_tool(BOOK, ToolRunner(call_id="c"), "a").info.raw_schema["parameters"]

    assert not {"oneOf", "anyOf", "allOf", "enum", "not"} & set(offered)
    # What the branches name is offered as properties; the top level's own come first.
    assert offered["properties"] == {
        "name": {"type": "string"},
        "phone": {"type": "string"},
        "email": {"type": "string"},
        "code": {"type": "string"},
    }
    assert offered["required"] == ["name", "code"]  # what every branch of allOf requires
    assert "anyOf" in BOOK["parameters"]  # the workflow's own schema is left as it is

    checked = checked_parameters(BOOK)
    assert validation_error(checked, {"name": "Ada", "phone": "1", "code": "x"}) is None
    assert validation_error(checked, {"name": "Ada", "code": "x"}) is not None
    assert validation_error(checked, {"name": "Ada", "phone": "1"}) is not None
    assert validation_error(checked, {"name": "Ada", "phone": "1", "code": "x", "spam": 1})


def accept_events(request: httpx.Request) -> httpx.Response:
    events = json.loads(request.content)["events"]
    return httpx.Response(200, json={"accepted": len(events), "duplicates": 0})


def _component() -> dict:
    return {"provider": "openai", "model": "m", "api_key": "k", "fallbacks": []}


def _agent(name: str, handoffs: list[str]) -> dict:
    # No greeting: on entering, each agent lets the model go on.
    voice = {c: _component() for c in ("stt", "llm", "tts")}
    return {"name": name, "instructions": name, "tools": [], "handoffs": handoffs, **voice}


async def test_agents_handing_the_call_back_and_forth_stop_and_answer():
    """Each agent answering its entry with a handoff ran the model without end (the
    caller in silence, the organization's key billed) until the call's maximum duration."""
    # The front desk hands over to b; b and c then hand the call to each other.
    back_and_forth = [call("transfer_to_b"), call("transfer_to_c"), call("transfer_to_b")]
    fourth, answer = call("transfer_to_c"), "How can I help?"
    scripted = ScriptedLLM([*back_and_forth, fourth, answer, call("transfer_to_c"), "Hi"])
    front = {**_agent("a", ["b"]), "greeting": "Hello"}
    workflow = {"start_agent": "a", "agents": [front, _agent("b", ["c"]), _agent("c", ["b"])]}
    api = AgentAPI("http://api.invalid", "k", transport=httpx.MockTransport(accept_events))
    runtime = CallRuntime(
        {"call_id": "c1", "workflow": workflow},
        EventReporter(api, "c1"),
        components=ComponentCache(build=lambda kind, config, language: {"llm": scripted}.get(kind)),
        runner=ToolRunner(call_id="c1"),
    )
    async with AgentSession() as session:
        await session.start(runtime.build())
        await session.run(user_input="hello")
        items = list(session.history.items)
        # The caller spoke: handing off is fine again.
        await session.run(user_input="the other one, please")
        current = session.current_agent.id
    await runtime.reporter.aclose()

    handoffs = [i for i in items if i.type == "agent_handoff" and i.old_agent_id]
    refused = [i for i in items if i.type == "function_call_output" and i.is_error]
    assert len(handoffs) == MAX_HANDOFFS_IN_A_ROW
    assert [i.output for i in refused] == [
        "Too many handoffs in a row: answer the caller yourself."
    ]
    assert items[-1].type == "message" and items[-1].text_content == "How can I help?"
    assert current == "c"


async def test_arguments_are_checked_against_the_schema_as_written_not_as_offered():
    """The LLM is offered `"items": {}` where an array has none; beside `unevaluatedItems`
    that lets every item through. Checked against the offered schema, a second item the
    customer's schema refuses reached the tool."""
    spec = {
        "name": "pick",
        "parameters": {
            "type": "object",
            "properties": {
                "pair": {
                    "type": "array",
                    "prefixItems": [{"type": "string"}],
                    "unevaluatedItems": False,
                }
            },
        },
    }
    runner = ToolRunner(call_id="c")

    assert await runner.run(spec, {"pair": ["a"]}, agent_name="a") == '{"status": "recorded"}'
    with pytest.raises(ToolError, match="Invalid arguments for pick"):
        await runner.run(spec, {"pair": ["a", "b"]}, agent_name="a")
