"""A long call's requests to the model: the instructions and the newest conversation
that fits, not the whole call (agent/context.py)."""

from __future__ import annotations

import pytest
from livekit.agents import llm

from agent.context import MAX_CONTEXT_CHARS, recent_context
from agent.tests.conftest import Web
from agent.tests.harness import TextProviders, call_job, live_job
from agent.tests.scripted_llm import ScriptedLLM, call


def conversation(*items: llm.ChatItem) -> llm.ChatContext:
    return llm.ChatContext([llm.ChatMessage(role="system", content=["Be kind."]), *items])


def said(role: str, text: str) -> llm.ChatMessage:
    return llm.ChatMessage(role=role, content=[text])


def test_a_conversation_within_the_bound_is_sent_as_it_is() -> None:
    chat_ctx = conversation(said("user", "a" * 40), said("assistant", "b" * 60))

    assert recent_context(chat_ctx, max_chars=100) is chat_ctx


def test_a_longer_one_keeps_its_instructions_and_its_newest_items_that_fit() -> None:
    chat_ctx = conversation(
        said("user", "first " * 10),
        said("assistant", "b" * 30),
        said("user", "c" * 30),
        said("assistant", "d" * 30),
    )

    sent = recent_context(chat_ctx, max_chars=70)

    assert [(item.role, item.text_content) for item in sent.items] == [
        ("system", "Be kind."),
        ("user", "c" * 30),
        ("assistant", "d" * 30),
    ]
    assert len(chat_ctx.items) == 5  # the agent's own context keeps everything


def lookup(call_id: str, answer: str) -> list[llm.ChatItem]:
    return [
        llm.FunctionCall(call_id=call_id, name="lookup", arguments='{"q": "' + "x" * 40 + '"}'),
        llm.FunctionCallOutput(call_id=call_id, name="lookup", output=answer, is_error=False),
    ]


def test_a_cut_tool_call_goes_back_to_the_line_it_answered_never_starts_on_an_answer() -> None:
    chat_ctx = conversation(
        said("user", "a" * 50),
        said("user", "look it up"),
        *lookup("c1", "y" * 30),
        said("assistant", "z" * 30),
    )

    sent = recent_context(chat_ctx, max_chars=65)

    assert [item.type for item in sent.items] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert sent.items[1].text_content == "look it up"


def test_a_turn_of_tool_answers_over_the_bound_keeps_the_line_they_answer() -> None:
    chat_ctx = conversation(
        said("user", "a" * 500),
        said("user", "check all three"),
        *lookup("c1", "1" * 60),
        *lookup("c2", "2" * 60),
        *lookup("c3", "3" * 60),
    )

    sent = recent_context(chat_ctx, max_chars=100)

    assert [item.type for item in sent.items][:2] == ["message", "message"]
    assert sent.items[1].text_content == "check all three"
    assert [item.call_id for item in sent.items[2:]] == ["c1", "c1", "c2", "c2", "c3", "c3"]


def test_a_newest_item_alone_over_the_bound_is_still_sent() -> None:
    chat_ctx = conversation(said("user", "a" * 10), said("user", "b" * 500))

    sent = recent_context(chat_ctx, max_chars=100)

    assert [item.text_content for item in sent.items] == ["Be kind.", "b" * 500]


@pytest.mark.api
async def test_hours_of_conversation_reach_the_model_as_its_newest_part(web: Web) -> None:
    """Each request used to carry the whole call: past the model's context window the
    provider refused it and the call failed `agent_error`."""
    created = web.create_call(user_data={"name": "Ada"})
    scripted = ScriptedLLM([], after="I see.")
    providers = TextProviders(llm=scripted)
    async with live_job(room_name=created["room_name"], call_id=created["call_id"]) as live:
        job = call_job(web, live, created["call_id"], providers)
        runtime = await job.prepare()
        session = job.session(runtime, vad=None, turn_detection="stt")
        await job.start(runtime, session)
        turns = MAX_CONTEXT_CHARS // 20_000 + 3
        for turn in range(turns):
            await session.run(user_input=f"story {turn}: " + "and then " * 2_200)

        (system, instructions), *rest = scripted.requests[-1].messages
        assert system == "system" and "check-in call to Ada" in instructions
        assert sum(len(text) for _role, text in rest) <= MAX_CONTEXT_CHARS
        assert rest[-1][1].startswith(f"story {turns - 1}: ")
        assert not any(text.startswith("story 0: ") for _role, text in rest)
        # The session's history, which handoffs pass on, still has the whole call.
        assert any(
            (item.text_content or "").startswith("story 0: ")
            for item in session.history.items
            if item.type == "message"
        )
        scripted.add(["Goodbye Ada!", call("end_call")])
        await session.run(user_input="That's all, bye")
        assert await live.finish() == "session closed: user_initiated"
