"""The worker's call logic against the real voicecalls API (a live server, see conftest).

The model is scripted and the session is text-only (no room, no audio: those need a
LiveKit server and real providers); everything between the AgentSession and the API —
session fetch, agents, tools, handoffs, the reporter and the events endpoint — is real.
"""

from __future__ import annotations

import json

import httpx
import pytest

from agent.api import AgentAPI, AgentAPIError
from agent.call import CallRuntime
from agent.events import MAX_RAW_ARGUMENTS_CHARS, tool_arguments
from agent.providers import ComponentCache, MissingKeyError
from agent.reporter import EventReporter
from agent.tests.conftest import Web, deleted_rooms
from agent.tests.harness import TextProviders, call_job, live_job
from agent.tests.scripted_llm import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM, call
from agent.worker import fetch_session
from agent.workflow import ToolRunner, WorkflowAgent

pytestmark = pytest.mark.api

TOKENS_PER_REQUEST = PROMPT_TOKENS + COMPLETION_TOKENS


class FlakyTransport(httpx.AsyncBaseTransport):
    """Real HTTP to the real server, except for scripted failures of `POST .../events`:
    `"503"` answers 503 without forwarding; `"lost"` forwards the batch (the server
    stores it) and then answers 503, as if the response were lost on the way back."""

    def __init__(self, plan: list[str]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._plan = list(plan)
        self.event_posts: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or not request.url.path.endswith("/events"):
            return await self._inner.handle_async_request(request)
        self.event_posts.append(request)
        action = self._plan.pop(0) if self._plan else "pass"
        if action == "503":
            return httpx.Response(503, json={"type": "server_error", "errors": []})
        response = await self._inner.handle_async_request(request)
        if action == "lost":
            await response.aread()
            return httpx.Response(503, json={"type": "server_error", "errors": []})
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_reporter(web: Web, call_id: str, **kwargs: object) -> EventReporter:
    transport = kwargs.pop("transport", None)
    api = AgentAPI(web.base_url, web.agent_key, transport=transport)
    return EventReporter(api, call_id, backoff_base=0.05, backoff_cap=0.2, **kwargs)


async def test_it_runs_the_daily_call_against_the_api(web: Web, fake_livekit) -> None:
    created = web.create_call(user_id="u-42", user_data={"name": "Ada"})
    call_id = created["call_id"]
    assert created["status"] == "connecting"

    scripted = ScriptedLLM(
        [
            call("transfer_to_meal-agent"),
            "What did you eat today?",
            call("save_meal", meal_type="brunch"),  # not in the schema's enum
            call("save_meal", meal_type="lunch", description="a salad"),
            "Lovely, I noted your lunch.",
        ]
    )
    providers = TextProviders(llm=scripted)
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime = await job.prepare()
        assert runtime is not None
        greeter = runtime.data["workflow"]["agents"][0]
        assert greeter["greeting"] == "Hello Ada! How are you today?"
        assert "check-in call to Ada" in greeter["instructions"]
        assert sorted(runtime.agents) == ["feedback-agent", "greeter-agent", "meal-agent"]
        # Each agent runs on the organization's key for its provider.
        assert ("llm", "openai", "test-openai-llm-key", None) in providers.builds

        # As in the worker, the session has no models of its own: each agent brings its own.
        session = job.session(runtime, vad=None, turn_detection="stt")
        greeting = await job.start(runtime, session, capture_run=True)
        greeting.expect.next_event().is_agent_handoff(new_agent_type=WorkflowAgent)
        greeting.expect.next_event().is_message(role="assistant")
        assert session.history.items[-1].text_content == "Hello Ada! How are you today?"

        result = await session.run(user_input="I'm fine, thanks")
        result.expect.next_event().is_function_call(name="transfer_to_meal-agent")
        result.expect.next_event().is_function_call_output()
        result.expect.next_event().is_agent_handoff(new_agent_type=WorkflowAgent)
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
        assert session.current_agent.id == "meal-agent"
        # The meal agent heard the conversation so far, under its own instructions.
        assert scripted.requests[1].messages[0][1].startswith("Ask Ada what they ate")
        assert ("user", "I'm fine, thanks") in scripted.requests[1].messages

        await job.reporter.flush()
        midway = web.call(call_id)
        assert midway["status"] == "active"
        assert midway["current_agent"] == "meal-agent"
        assert midway["agent_history"] == ["greeter-agent", "meal-agent"]

        result = await session.run(user_input="A salad for lunch")
        result.expect.next_event().is_function_call(
            name="save_meal", arguments={"meal_type": "brunch"}
        )
        result.expect.next_event().is_function_call_output(is_error=True)
        result.expect.next_event().is_function_call(
            name="save_meal", arguments={"meal_type": "lunch", "description": "a salad"}
        )
        result.expect.next_event().is_function_call_output(is_error=False)
        result.expect.next_event().is_message(role="assistant")

        scripted.add(["Goodbye Ada!", call("end_call")])
        result = await session.run(user_input="That's all, bye")
        result.expect.contains_message(role="assistant")
        result.expect.contains_function_call(name="end_call")
        assert await live.finish() == "session closed: user_initiated"

    assert job.reporter.dropped == []
    assert job.reporter.duplicates == 0
    assert deleted_rooms(fake_livekit, created["room_name"]) == 1
    ended = web.call(call_id)
    assert ended["status"] == "completed"
    assert ended["end_reason"] == "agent_hangup"
    assert ended["agent_history"] == ["greeter-agent", "meal-agent"]
    assert ended["current_agent"] is None

    lines = web.transcript(call_id)
    said = [(line["role"], line["agent_name"], line["content"]) for line in lines]
    assert said[:2] == [
        ("assistant", "greeter-agent", "Hello Ada! How are you today?"),
        ("user", "greeter-agent", "I'm fine, thanks"),
    ]
    assert ("assistant", "meal-agent", "What did you eat today?") in said
    assert ("assistant", "meal-agent", "Goodbye Ada!") in said
    assert {line.get("interrupted") for line in lines if line["role"] == "assistant"} == {False}
    assert all("interrupted" not in line for line in lines if line["role"] != "assistant")
    tool_lines = [line for line in lines if "tool_call" in line]
    assert [line["tool_call"]["name"] for line in tool_lines] == [
        "transfer_to_meal-agent",
        "save_meal",
        "save_meal",
        "end_call",
    ]
    saved = tool_lines[2]
    assert saved["role"] == "tool"
    assert saved["agent_name"] == "meal-agent"
    assert saved["tool_call"]["arguments"] == {"meal_type": "lunch", "description": "a salad"}
    assert saved["content"] == '{"status": "recorded"}'
    assert '"brunch" is not one of' in tool_lines[1]["content"]
    # The model was told the brunch was an error, and so will a run dispatched again.
    assert [line["tool_call"].get("is_error") for line in tool_lines] == [None, True, None, None]

    metrics = web.metrics(call_id)
    assert metrics["agent_handoffs"] == 1
    assert metrics["total_tokens"] == TOKENS_PER_REQUEST * len(scripted.requests)
    assert metrics["llm_latency_ms"] is not None and metrics["llm_latency_ms"] >= 0
    assert metrics["stt_latency_ms"] is None  # text input: nothing was transcribed
    assert {"component": "llm", "provider": "openai", "model": "scripted", "turns": 3} in (
        metrics["providers"]
    )


async def test_an_agent_dispatched_again_mid_call_resumes_with_the_agent_it_was_with(
    web: Web, fake_livekit
) -> None:
    """The first worker died after handing the caller to the meal agent: the next
    dispatch goes on with the meal agent, not the greeter's hello, and the call's
    history stays what it was."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    first_run = make_reporter(web, call_id)
    first_run.status("active")
    first_run.handoff(from_agent="greeter-agent", to_agent="meal-agent")
    await first_run.aclose()

    scripted = ScriptedLLM(["Where were we? What did you eat today?"])
    providers = TextProviders(llm=scripted)
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime = await job.prepare()
        assert runtime is not None
        session = job.session(runtime, vad=None, turn_detection="stt")
        resumed = await job.start(runtime, session, capture_run=True)
        resumed.expect.next_event().is_agent_handoff(new_agent_type=WorkflowAgent)
        resumed.expect.next_event().is_message(role="assistant")
        assert session.current_agent.id == "meal-agent"
        assert scripted.requests[0].messages[0][1].startswith("Ask Ada what they ate")
        await job.reporter.flush()

        midway = web.call(call_id)
        assert (midway["current_agent"], midway["agent_history"]) == (
            "meal-agent",
            ["greeter-agent", "meal-agent"],
        )
        scripted.add(["Goodbye Ada!", call("end_call")])
        await session.run(user_input="That's all, bye")
        assert await live.finish() == "session closed: user_initiated"


async def test_a_missing_llm_key_fails_the_call_with_a_clear_reason(web: Web) -> None:
    call_id = web.create_call(org="nollm", user_data={"name": "Bo"})["call_id"]
    reporter = make_reporter(web, call_id)
    reporter.start()
    data = await fetch_session(AgentAPI(web.base_url, web.agent_key), call_id)
    assert data["workflow"]["agents"][0]["llm"]["missing_key"] is True

    runtime = CallRuntime(
        data, reporter, components=ComponentCache(), runner=ToolRunner(call_id=call_id)
    )
    with pytest.raises(MissingKeyError) as raised:
        runtime.build()
    assert str(raised.value) == "missing key for llm"
    runtime.fail(str(raised.value))
    await reporter.aclose()

    assert reporter.dropped == []
    ended = web.call(call_id, org="nollm")
    assert ended["status"] == "failed"
    assert ended["end_reason"] == "agent_error"
    lines = web.transcript(call_id, org="nollm")
    assert [(line["role"], line["content"]) for line in lines] == [
        ("system", "agent_error: missing key for llm")
    ]


async def test_a_provider_error_quoting_the_calls_key_reaches_the_transcript_without_it(
    web: Web,
) -> None:
    """What some providers answer a refused key with: the key, quoted back. The
    `agent_error:` line is in the call's transcript, its webhooks and its analysis."""
    call_id = web.create_call(user_data={"name": "Bo"})["call_id"]
    reporter = make_reporter(web, call_id)
    data = await fetch_session(AgentAPI(web.base_url, web.agent_key), call_id)
    key = data["workflow"]["agents"][0]["llm"]["api_key"]
    runtime = CallRuntime(
        data, reporter, components=ComponentCache(), runner=ToolRunner(call_id=call_id)
    )

    runtime.fail(f"llm_error in openai.LLM: APIStatusError('Incorrect API key provided: {key}')")
    await reporter.aclose()

    assert key and [line["content"] for line in web.transcript(call_id)] == [
        "agent_error: llm_error in openai.LLM: APIStatusError('Incorrect API key provided: "
        "[redacted]')"
    ]


@pytest.mark.parametrize(
    ("raw", "arguments"),
    [
        (json.dumps({"description": "x" * 20_000}), {"_raw": ..., "_truncated": True}),
        ("[" * 9 + "]" * 9, {"_raw": "[" * 9 + "]" * 9}),  # deeper than the API takes
        ("{not json", {"_raw": "{not json"}),
        # Under 16 KiB as parsed (NaN: 3 bytes), over it as sent (null: 4).
        ("[" + ",".join(["NaN"] * 4000) + "]", {"_raw": ..., "_truncated": True}),
        ('{"meal": "soup"}', {"meal": "soup"}),
        # Beyond 64 bits: the API refused the whole batch (an integer) or the line (a
        # float its database would answer as an integer); sent as text instead.
        ('{"id": 123456789012345678901234567890}', {"id": "123456789012345678901234567890"}),
        ('{"amount": 1e20, "n": 1e18}', {"amount": "1e+20", "n": 1e18}),
        # 16 KiB as sent, far more as the database prints it (0.000…1).
        ("[" + ",".join(["1e-300"] * 2000) + "]", {"_raw": ..., "_truncated": True}),
    ],
)
async def test_a_tool_line_reaches_the_transcript_whatever_arguments_the_model_wrote(
    web: Web, raw: str, arguments: dict
) -> None:
    """The API takes arguments of at most 16 KiB and 8 levels; beyond, it refused the
    line, and the tool's result with it."""
    call_id = web.create_call()["call_id"]
    reporter = make_reporter(web, call_id)
    tool_call = {"name": "save_meal", "arguments": tool_arguments(raw)}
    reporter.transcript(
        role="tool",
        content='{"status": "recorded"}',
        agent_name="greeter-agent",
        tool_call=tool_call,
    )
    await reporter.aclose()

    assert reporter.dropped == []
    (line,) = web.transcript(call_id)
    if arguments.get("_raw") is ...:
        arguments = {**arguments, "_raw": raw[:MAX_RAW_ARGUMENTS_CHARS]}
    assert (line["content"], line["tool_call"]["arguments"]) == (
        '{"status": "recorded"}',
        arguments,
    )


async def test_a_tool_the_model_made_up_reaches_the_transcript_whatever_its_name(
    web: Web, fake_livekit
) -> None:
    """A model may call a tool nobody defined, under any name (livekit-agents answers
    it an error): the API takes names of 1 to 64 characters, and refused the line."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    made_up = "functions.lookup_the_customers_most_recent_order_and_its_delivery_date"
    scripted = ScriptedLLM([[call(made_up, order="A1"), call(" ")], "Sorry, one moment."])
    providers = TextProviders(llm=scripted)
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime = await job.prepare()
        assert runtime is not None
        session = job.session(runtime, vad=None, turn_detection="stt")
        await job.start(runtime, session, capture_run=True)
        await session.run(user_input="Where is my order?")
        scripted.add(["Goodbye Ada!", call("end_call")])
        await session.run(user_input="Never mind, bye")
        await live.finish()

    assert job.reporter.dropped == []
    tool_lines = [line for line in web.transcript(call_id) if line["role"] == "tool"]
    names = [line["tool_call"]["name"] for line in tool_lines]
    assert names == [made_up[:64], "unnamed", "end_call"]
    assert all(line["tool_call"].get("is_error") for line in tool_lines[:2])
    assert made_up in tool_lines[0]["content"]  # the error the model was told names it


async def test_replays_after_a_503_create_no_duplicates(web: Web) -> None:
    call_id = web.create_call(user_data={"name": "Cy"})["call_id"]
    # First POST: 503 before the server sees it. Second: the server stores the batch,
    # the answer is lost (503). Third: the same ids again, all duplicates.
    transport = FlakyTransport(plan=["503", "lost", "pass"])
    reporter = make_reporter(web, call_id, transport=transport)
    reporter.status("active")
    for n in range(3):
        reporter.transcript(role="user", content=f"line {n}", agent_name="greeter-agent")
    reporter.metrics(llm_latency_ms=120.0, tokens=50, agent_name="greeter-agent", turn_index=1)
    reporter.handoff(from_agent="greeter-agent", to_agent="meal-agent")
    await reporter.aclose()

    bodies = [request.content for request in transport.event_posts]
    assert len(bodies) == 3
    assert bodies[0] == bodies[1] == bodies[2]  # the very same events, ids included
    assert reporter.accepted == 0  # the batch that was stored never got its answer
    assert reporter.duplicates == 6
    assert reporter.dropped == []

    assert [line["content"] for line in web.transcript(call_id)] == ["line 0", "line 1", "line 2"]
    metrics = web.metrics(call_id)
    assert metrics["total_tokens"] == 50
    assert metrics["llm_latency_ms"] == 120
    assert metrics["agent_handoffs"] == 1
    detail = web.call(call_id)
    assert detail["status"] == "active"
    assert detail["agent_history"] == ["greeter-agent", "meal-agent"]


async def test_shutdown_flushes_everything_in_batches_of_at_most_500(web: Web) -> None:
    call_id = web.create_call()["call_id"]
    transport = FlakyTransport(plan=[])
    # A long interval: only the shutdown flush sends anything.
    reporter = make_reporter(web, call_id, transport=transport, flush_interval=60)
    reporter.start()
    for n in range(1201):
        reporter.metrics(tokens=1, agent_name="greeter-agent", turn_index=n)
    await reporter.aclose()

    assert reporter.accepted == 1201
    sizes = [len(json.loads(r.content)["events"]) for r in transport.event_posts]
    assert sizes == [500, 500, 201]
    assert web.metrics(call_id)["total_tokens"] == 1201


async def test_the_agent_api_refuses_a_client_key(web: Web) -> None:
    call_id = web.create_call()["call_id"]
    api = AgentAPI(web.base_url, web.orgs["demo"].client_key)
    with pytest.raises(AgentAPIError) as raised:
        await api.get_session(call_id)
    await api.aclose()
    assert raised.value.status_code == 403
    assert not raised.value.retryable


async def test_an_invalid_event_is_dropped_and_the_rest_of_its_batch_lands(web: Web) -> None:
    call_id = web.create_call()["call_id"]
    reporter = make_reporter(web, call_id)
    reporter.transcript(role="user", content="kept", agent_name="greeter-agent")
    bad = reporter.transcript(role="narrator", content="refused", agent_name="greeter-agent")
    reporter.transcript(role="assistant", content="also kept", agent_name="greeter-agent")
    await reporter.aclose()

    assert reporter.dropped == [{"id": bad["id"], "type": bad["type"]}]
    assert [line["content"] for line in web.transcript(call_id)] == ["kept", "also kept"]


async def test_while_the_api_is_down_the_oldest_lines_are_kept_and_new_ones_refused_loudly(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    call_id = web.create_call()["call_id"]
    transport = FlakyTransport(plan=["503", "503", "503"])  # down for three tries
    reporter = make_reporter(web, call_id, transport=transport, max_pending_events=5)
    for n in range(8):
        reporter.transcript(role="user", content=f"line {n}", agent_name="greeter-agent")
    reporter.status("active")  # the call's status always gets through

    assert (reporter.pending, reporter.refused) == (6, 3)
    refusals = [r for r in caplog.records if "refusing new events" in r.getMessage()]
    assert [r.levelname for r in refusals] == ["ERROR"]  # once, not per event

    await reporter.flush()
    reporter.transcript(role="user", content="after the outage", agent_name="greeter-agent")
    await reporter.aclose()

    assert "accepting events again; 3 refused in all" in caplog.text
    assert [line["content"] for line in web.transcript(call_id)] == [
        *(f"line {n}" for n in range(5)),
        "after the outage",
    ]
    assert web.call(call_id)["status"] == "active"
