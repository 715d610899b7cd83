"""An agent dispatched again mid-call (its worker died) goes on with the conversation
the API kept, against the real API (a live server, see conftest)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web as aiohttp_web
from google.genai import types as genai_types
from livekit.plugins import google

from agent.api import AgentAPI
from agent.reporter import EventReporter
from agent.resume import _sign_for_gemini, chat_items
from agent.tests.conftest import Web
from agent.tests.harness import (
    NUMBER,
    Providers,
    Room,
    TextProviders,
    call_job,
    live_job,
    wait_until,
)
from agent.tests.scripted_llm import ScriptedLLM, call
from agent.tests.voice import SilentMic
from agent.workflow import WorkflowAgent

GREETING = "Hello again, {{ user.name }}!"


def test_the_lines_keep_the_transcripts_order_whatever_the_clocks() -> None:
    """Lines stamped ahead of this worker's clock come before what it adds; a tool
    line's call and answer pair up; a line with nothing said (or an erased tool call)
    is left out."""
    now = 1_000.0
    items = chat_items(
        [
            {"role": "user", "content": "Hi", "timestamp": "1970-01-01T00:16:00Z"},
            {"role": "assistant", "content": "", "timestamp": "1970-01-01T00:16:10Z"},
            {"role": "tool", "content": "[erased]", "timestamp": "1970-01-01T00:16:20Z"},
            {
                "role": "tool",
                "content": "ok",
                "sequence": 7,
                "tool_call": {"name": "save_meal", "arguments": {"meal_type": "lunch"}},
                "timestamp": "1970-01-01T00:20:00Z",  # ahead of `now`
            },
            {"role": "assistant", "content": "Saved", "timestamp": "1970-01-01T00:16:40Z"},
        ],
        now=now,
    )

    assert [(item.type, item.created_at) for item in items] == [
        ("message", 960.0),
        ("function_call", now),
        ("function_call_output", now),
        ("message", now),
    ]
    assert (items[1].call_id, items[1].name, items[1].arguments) == (
        "resumed_7",
        "save_meal",
        '{"meal_type": "lunch"}',
    )
    assert (items[2].call_id, items[2].output, items[2].is_error) == ("resumed_7", "ok", False)


def test_a_failed_tool_line_is_an_error_answer_again() -> None:
    """The model was told that answer was an error on the run before: so it is now."""
    failed, answered = chat_items(
        [
            {
                "role": "tool",
                "content": "save_meal failed (HTTP 500).",
                "sequence": 8,
                "tool_call": {"name": "save_meal", "arguments": {}, "is_error": True},
                "timestamp": "2026-01-01T10:00:00Z",
            },
            {
                "role": "tool",
                "content": '{"status": "recorded"}',
                "sequence": 9,
                "tool_call": {"name": "save_meal", "arguments": {}},
                "timestamp": "2026-01-01T10:00:01Z",
            },
        ]
    )[1::2]

    assert (failed.output, failed.is_error) == ("save_meal failed (HTTP 500).", True)
    assert (answered.output, answered.is_error) == ('{"status": "recorded"}', False)


@pytest.fixture(scope="module")
def greeting_workflow(web: Web) -> str:
    """The demo workflow with a fixed greeting on every agent, the meal agent's too."""
    web.create_workflow("resume-greets", greeting=GREETING)
    return "resume-greets"


async def first_run_dies_with_the_meal_agent(web: Web, call_id: str) -> None:
    """What the first worker reported before it died: the greeter's hello and the
    handoff to the meal agent, which saved a meal and was cut off asking for the next."""
    reporter = EventReporter(AgentAPI(web.base_url, web.agent_key), call_id)
    said = time.time() - 60
    reporter.status("active")
    reporter.transcript(
        role="assistant", content="Hello again, Ada!", agent_name="greeter-agent", timestamp=said
    )
    reporter.transcript(
        role="user", content="I'm fine, thanks", agent_name="greeter-agent", timestamp=said + 2
    )
    reporter.transcript(
        role="tool",
        content="",
        agent_name="greeter-agent",
        tool_call={"name": "transfer_to_meal-agent", "arguments": {}},
        timestamp=said + 3,
    )
    reporter.handoff(from_agent="greeter-agent", to_agent="meal-agent", timestamp=said + 3)
    reporter.transcript(
        role="assistant",
        content="What did you eat today?",
        agent_name="meal-agent",
        interrupted=False,
        timestamp=said + 4,
    )
    reporter.transcript(
        role="user", content="Pasta for lunch", agent_name="meal-agent", timestamp=said + 6
    )
    reporter.transcript(
        role="tool",
        content='{"status": "recorded"}',
        agent_name="meal-agent",
        tool_call={
            "name": "save_meal",
            "arguments": {"meal_type": "lunch", "description": "pasta"},
        },
        timestamp=said + 7,
    )
    reporter.transcript(
        role="assistant",
        content="Noted. And for din",
        agent_name="meal-agent",
        interrupted=True,
        timestamp=said + 8,
    )
    await reporter.aclose()
    assert reporter.dropped == []


@pytest.mark.api
async def test_a_resumed_agent_goes_on_from_the_conversation_without_greeting_again(
    web: Web, fake_livekit, greeting_workflow: str
) -> None:
    created = web.create_call(workflow_slug=greeting_workflow, user_data={"name": "Ada"})
    call_id = created["call_id"]
    await first_run_dies_with_the_meal_agent(web, call_id)
    before = web.transcript(call_id)

    scripted = ScriptedLLM(["Sorry, I lost you for a moment. What about dinner?"])
    providers = TextProviders(llm=scripted)
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime = await job.prepare()
        assert runtime is not None
        session = job.session(runtime, vad=None, turn_detection="stt")
        resumed = await job.start(runtime, session, capture_run=True)
        resumed.expect.next_event().is_agent_handoff(new_agent_type=WorkflowAgent)
        resumed.expect.next_event().is_message(role="assistant")
        resumed.expect.no_more_events()
        agent = session.current_agent
        assert agent.id == "meal-agent"
        said = [event.item.text_content for event in resumed.events if event.type == "message"]
        assert said == ["Sorry, I lost you for a moment. What about dinner?"]

        # The model heard the conversation so far, in order, under the meal agent's
        # instructions, and was asked to go on from it; nobody greeted again.
        heard = scripted.requests[0].messages
        assert heard[0][1].startswith("Ask Ada what they ate")
        assert [m for m in heard if m[0] in ("user", "assistant")] == [
            ("assistant", "Hello again, Ada!"),
            ("user", "I'm fine, thanks"),
            ("assistant", "What did you eat today?"),
            ("user", "Pasta for lunch"),
            ("assistant", "Noted. And for din"),
        ]
        assert any("Do not greet the caller again" in text for _, text in heard[1:])
        # Its own tool's call and answer as stored; the greeter's handoff call is not
        # the meal agent's tool, so it is left out as a handoff would.
        calls = [item for item in agent.chat_ctx.items if item.type == "function_call"]
        outputs = [i for i in agent.chat_ctx.items if i.type == "function_call_output"]
        assert [(c.name, c.arguments) for c in calls] == [
            ("save_meal", '{"meal_type": "lunch", "description": "pasta"}')
        ]
        assert [(o.call_id, o.output) for o in outputs] == [
            (calls[0].call_id, '{"status": "recorded"}')
        ]
        interrupted = [m for m in agent.chat_ctx.messages() if m.interrupted]
        assert [m.text_content for m in interrupted] == ["Noted. And for din"]
        # The session's history has it too: a handoff passes it on to the next agent.
        history = [m.text_content for m in session.history.messages()]
        assert history[:3] == ["Hello again, Ada!", "I'm fine, thanks", "What did you eat today?"]

        scripted.add(["Goodbye Ada!", call("end_call")])
        await session.run(user_input="Soup, bye")
        assert await live.finish() == "session closed: user_initiated"

    # The earlier lines are in the transcript once: this run reported only its own.
    lines = web.transcript(call_id)
    assert lines[: len(before)] == before
    assert [(line["role"], line["content"]) for line in lines[len(before) :]] == [
        ("assistant", "Sorry, I lost you for a moment. What about dinner?"),
        ("user", "Soup, bye"),
        ("assistant", "Goodbye Ada!"),
        ("tool", ""),  # end_call, after the goodbye it waited for
    ]
    ended = web.call(call_id)
    assert (ended["status"], ended["agent_history"]) == (
        "completed",
        ["greeter-agent", "meal-agent"],
    )


@pytest.mark.api
async def test_a_call_nobody_spoke_on_yet_is_greeted_as_it_starts(
    web: Web, fake_livekit, greeting_workflow: str
) -> None:
    """Active (the caller joined) with nothing said: a first dispatch, not a resumed one."""
    created = web.create_call(workflow_slug=greeting_workflow, user_data={"name": "Ada"})
    call_id = created["call_id"]
    reporter = EventReporter(AgentAPI(web.base_url, web.agent_key), call_id)
    reporter.status("active")
    await reporter.aclose()

    providers = TextProviders(llm=ScriptedLLM([]))
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime = await job.prepare()
        assert runtime is not None and runtime.data["conversation"] == []
        session = job.session(runtime, vad=None, turn_detection="stt")
        greeting = await job.start(runtime, session, capture_run=True)
        greeting.expect.next_event().is_agent_handoff(new_agent_type=WorkflowAgent)
        greeting.expect.next_event().is_message(role="assistant")
        assert session.history.items[-1].text_content == "Hello again, Ada!"
        await session.aclose()
        await live.finish()


@pytest.mark.api
async def test_a_resumed_phone_call_is_not_screened_for_a_machine_again(
    web: Web, fake_livekit, voicemail_workflows: dict[str, str]
) -> None:
    """The run before found a person on the line and greeted them: no answering
    machine detector listens again, nobody says hello again."""
    created = web.create_call(
        workflow_slug=voicemail_workflows["leave_message"],
        phone_number=NUMBER,
        user_data={"name": "Ada"},
    )
    call_id = created["call_id"]
    reporter = EventReporter(AgentAPI(web.base_url, web.agent_key), call_id)
    reporter.status("active")
    reporter.transcript(
        role="assistant", content="Hello Ada! How are you today?", agent_name="greeter-agent"
    )
    reporter.transcript(role="user", content="Fine, and you?", agent_name="greeter-agent")
    await reporter.aclose()

    providers = Providers(llm=ScriptedLLM(["Sorry, the line dropped. I'm well, thanks!"]))
    room = Room()
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        job.room = room
        runtime = await job.prepare()
        assert runtime is not None and runtime.channel == "phone"
        room.join(f"user-{call_id}", status="active")
        assert await job.wait_for_user(runtime, room)
        session = job.session(runtime, turn_detection="stt", vad=None)
        session.input.audio = SilentMic()
        session.output.audio = providers.speaker
        await job.start(runtime, session)
        await wait_until(lambda: "I'm well, thanks!" in providers.tts.spoken, timeout=15)
        job.ctx.shutdown(reason="test over")
        await live.finish()

    assert " ".join(providers.tts.spoken) == "Sorry, the line dropped. I'm well, thanks!"
    assert "save_prediction" not in providers.llm.requests[0].tools


@pytest.fixture
async def gemini() -> AsyncIterator[tuple[str, list[dict]]]:
    """A stand-in for the Gemini API's streamGenerateContent: each request's JSON body
    is kept, and the answer is one line of text."""
    bodies: list[dict] = []

    async def generate(request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
        bodies.append(await request.json())
        answer = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "Sorry, I lost you."}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 4,
                "totalTokenCount": 14,
            },
        }
        response = aiohttp_web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"data: {json.dumps(answer)}\r\n\r\n".encode())
        await response.write_eof()
        return response

    app = aiohttp_web.Application()
    app.router.add_post("/{path:.*}", generate)
    runner = aiohttp_web.AppRunner(app)
    await runner.setup()
    site = aiohttp_web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", bodies
    await runner.cleanup()


def gemini_llm(model: str, base_url: str = "http://127.0.0.1:9") -> google.LLM:
    return google.LLM(
        api_key="gemini-key",
        vertexai=False,
        model=model,
        http_options=genai_types.HttpOptions(base_url=base_url),
    )


@pytest.mark.api
async def test_gemini_3_is_sent_the_resumed_calls_with_the_documented_stand_in_signature(
    web: Web, fake_livekit, greeting_workflow: str, gemini: tuple[str, list[dict]]
) -> None:
    """Gemini 3 answers 400 to a turn whose function call has no thought signature; the
    run that made the seeded calls took their signatures along. The real google plugin
    sends them with the stand-in Google documents, spelled on the wire as documented."""
    base_url, bodies = gemini
    created = web.create_call(workflow_slug=greeting_workflow, user_data={"name": "Ada"})
    call_id = created["call_id"]
    await first_run_dies_with_the_meal_agent(web, call_id)

    providers = TextProviders(llm=gemini_llm("gemini-3-flash-preview", base_url))
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime = await job.prepare()
        assert runtime is not None
        session = job.session(runtime, vad=None, turn_detection="stt")
        resumed = await job.start(runtime, session, capture_run=True)
        resumed.expect.next_event().is_agent_handoff(new_agent_type=WorkflowAgent)
        resumed.expect.next_event().is_message(role="assistant")
        await session.aclose()
        await live.finish()

    calls = [
        part
        for content in bodies[0]["contents"]
        for part in content["parts"]
        if "functionCall" in part
    ]
    assert [(p["functionCall"]["name"], p.get("thoughtSignature")) for p in calls] == [
        ("save_meal", "skip_thought_signature_validator")
    ]


def test_only_gemini_3_and_later_models_keep_a_stand_in_signature() -> None:
    """Older Gemini models check no signature, and other providers have none."""
    items = chat_items(
        [
            {"role": "user", "content": "Lunch was pasta", "timestamp": "2026-01-01T10:00:00Z"},
            {
                "role": "tool",
                "content": "ok",
                "sequence": 3,
                "tool_call": {"name": "save_meal", "arguments": {}},
                "timestamp": "2026-01-01T10:00:01Z",
            },
        ]
    )
    gemini_3, gemini_2_5, other = (
        gemini_llm("gemini-3-flash-preview"),
        gemini_llm("gemini-2.5-flash"),
        ScriptedLLM([]),
    )
    _sign_for_gemini([gemini_3, gemini_2_5, other], items)
    assert list(gemini_3._thought_signatures) == ["resumed_3"]
    assert gemini_2_5._thought_signatures == {}
    assert not hasattr(other, "_thought_signatures")
