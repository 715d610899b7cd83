"""An agent dispatched again mid-call (`GET /api/v1/agent/calls/{id}/session` of an
active call) resumes it: the session says when the call started, which agent it is
with, and carries the conversation so far, its most recent lines within a bound of
lines and characters, in the same queries whatever its length."""

from __future__ import annotations

import datetime
import json
from typing import Any

from rest_framework.test import APIClient

from accounts.models import Organization
from calls.agent_session import CONVERSATION_MAX_CHARS, CONVERSATION_MAX_LINES
from calls.models import Call, TranscriptEntry
from tests import sessions
from tests.factories import (
    CallFactory,
    TranscriptEntryFactory,
)
from tests.sessions import session_url

# The shared fixture (tests/sessions.py), bound here for pytest to find.
call = sessions.call


def test_an_active_calls_session_says_when_it_started(agent_api: APIClient, call: Call) -> None:
    """An agent dispatched again mid-call times the maximum duration from it."""
    started = datetime.datetime(2026, 3, 1, 9, 30, 15, 250000, tzinfo=datetime.UTC)
    Call.objects.filter(pk=call.pk).update(status="active", started_at=started)

    body = agent_api.get(session_url(call)).json()

    assert (body["status"], body["started_at"]) == ("active", "2026-03-01T09:30:15.250000Z")


def test_an_active_calls_session_names_the_agent_it_is_with(
    agent_api: APIClient, call: Call
) -> None:
    """An agent dispatched again mid-call resumes with it, not the start agent."""
    Call.objects.filter(pk=call.pk).update(
        status="active", started_at=datetime.datetime.now(datetime.UTC), current_agent="meal-agent"
    )

    body = agent_api.get(session_url(call)).json()

    assert (body["status"], body["current_agent"]) == ("active", "meal-agent")


AT = datetime.datetime(2026, 3, 1, 9, 30, tzinfo=datetime.UTC)


def said_at(seconds: float) -> datetime.datetime:
    return AT + datetime.timedelta(seconds=seconds)


def test_an_active_calls_session_carries_the_conversation_so_far(
    agent_api: APIClient, call: Call
) -> None:
    """An agent dispatched again mid-call goes on from it: its lines in the
    transcript's order (a line that arrived late sits where it was said), each as the
    transcript gives it, tool calls as stored; the system's notes are left out."""
    Call.objects.filter(pk=call.pk).update(
        status="active", started_at=AT, current_agent="meal-agent"
    )
    greeting = TranscriptEntryFactory(
        call=call, role="assistant", content="Hello Ada!", timestamp=said_at(1)
    )
    answer = TranscriptEntryFactory(
        call=call, role="user", content="Fine, thanks", timestamp=said_at(3)
    )
    TranscriptEntryFactory(
        call=call, role="system", content="agent_error: llm_error", timestamp=said_at(4)
    )
    saved = TranscriptEntryFactory(
        call=call,
        role="tool",
        content='{"status": "recorded"}',
        agent_name="meal-agent",
        tool_call={"name": "save_meal", "arguments": {"meal_type": "lunch"}},
        timestamp=said_at(6),
    )
    cut_off = TranscriptEntryFactory(
        call=call,
        role="assistant",
        content="Noted. And for din",
        agent_name="meal-agent",
        interrupted=True,
        timestamp=said_at(7),
    )
    # Reported after the tool's line (a later batch), said before it.
    late = TranscriptEntryFactory(
        call=call,
        role="user",
        content="A salad for lunch",
        agent_name="meal-agent",
        timestamp=said_at(5),
    )

    body = agent_api.get(session_url(call)).json()

    assert body["conversation"] == [
        {
            "role": "assistant",
            "content": "Hello Ada!",
            "timestamp": "2026-03-01T09:30:01Z",
            "agent_name": "greeter-agent",
            "sequence": greeting.id,
            "interrupted": False,
        },
        {
            "role": "user",
            "content": "Fine, thanks",
            "timestamp": "2026-03-01T09:30:03Z",
            "agent_name": "greeter-agent",
            "sequence": answer.id,
        },
        {
            "role": "user",
            "content": "A salad for lunch",
            "timestamp": "2026-03-01T09:30:05Z",
            "agent_name": "meal-agent",
            "sequence": late.id,
        },
        {
            "role": "tool",
            "content": '{"status": "recorded"}',
            "timestamp": "2026-03-01T09:30:06Z",
            "agent_name": "meal-agent",
            "sequence": saved.id,
            "tool_call": {"name": "save_meal", "arguments": {"meal_type": "lunch"}},
        },
        {
            "role": "assistant",
            "content": "Noted. And for din",
            "timestamp": "2026-03-01T09:30:07Z",
            "agent_name": "meal-agent",
            "sequence": cut_off.id,
            "interrupted": True,
        },
    ]
    assert body["conversation_truncated"] is False


def test_a_failed_tools_line_comes_saying_it_failed(agent_api: APIClient, call: Call) -> None:
    """The agent's model is told that answer was an error, as on the run before."""
    Call.objects.filter(pk=call.pk).update(status="active", started_at=AT)
    failed = {"name": "save_meal", "arguments": {"meal_type": "lunch"}, "is_error": True}
    TranscriptEntryFactory(call=call, role="user", content="Pasta", timestamp=said_at(1))
    TranscriptEntryFactory(
        call=call,
        role="tool",
        content="save_meal failed (HTTP 500).",
        tool_call=failed,
        timestamp=said_at(2),
    )

    body = agent_api.get(session_url(call)).json()

    assert [line.get("tool_call") for line in body["conversation"]] == [None, failed]


def test_a_long_conversation_comes_as_its_most_recent_lines(
    agent_api: APIClient, call: Call
) -> None:
    Call.objects.filter(pk=call.pk).update(status="active", started_at=AT)
    TranscriptEntry.objects.bulk_create(
        TranscriptEntry(
            call=call, role="user", content=f"line {i}", agent_name="a", timestamp=said_at(i)
        )
        for i in range(CONVERSATION_MAX_LINES + 20)
    )

    body = agent_api.get(session_url(call)).json()

    assert [line["content"] for line in body["conversation"]] == [
        f"line {i}" for i in range(20, CONVERSATION_MAX_LINES + 20)
    ]
    assert body["conversation_truncated"] is True


def test_the_conversation_keeps_only_the_recent_lines_that_fit_its_characters(
    agent_api: APIClient, call: Call
) -> None:
    """Counted back from the newest, tool calls included: what is kept is the unbroken
    end of the conversation, never a line from before a gap."""
    Call.objects.filter(pk=call.pk).update(status="active", started_at=AT)
    third = CONVERSATION_MAX_CHARS // 3
    TranscriptEntryFactory(call=call, role="user", content="short", timestamp=said_at(0))
    TranscriptEntryFactory(call=call, role="assistant", content="x" * third, timestamp=said_at(1))
    arguments = {"description": "y" * (third - 100)}
    TranscriptEntryFactory(
        call=call,
        role="tool",
        content="z" * 50,
        tool_call={"name": "save_meal", "arguments": arguments},
        timestamp=said_at(2),
    )
    TranscriptEntryFactory(call=call, role="user", content="w" * third, timestamp=said_at(3))
    TranscriptEntryFactory(call=call, role="assistant", content="ok", timestamp=said_at(4))

    body = agent_api.get(session_url(call)).json()

    kept = [(line["role"], line["content"][:1]) for line in body["conversation"]]
    assert kept == [("tool", "z"), ("user", "w"), ("assistant", "o")]
    assert body["conversation_truncated"] is True


def test_a_newest_line_longer_than_the_bound_still_leaves_a_conversation(
    agent_api: APIClient, call: Call
) -> None:
    """A tool's longest answer (16,000 characters) with arguments of 16 KiB, or a long
    monologue: the newest line alone over the bound left the conversation empty, and
    the agent dispatched again greeted the caller as if the call had just begun (and
    screened an outbound call for a machine again). It is kept, its content cut."""
    Call.objects.filter(pk=call.pk).update(status="active", started_at=AT)
    TranscriptEntryFactory(call=call, role="user", content="hello", timestamp=said_at(0))
    arguments = {"text": "y" * 10_000}
    TranscriptEntryFactory(
        call=call,
        role="tool",
        content="z" * 16_000,
        tool_call={"name": "save_meal", "arguments": arguments},
        timestamp=said_at(1),
    )

    body = agent_api.get(session_url(call)).json()

    [line] = body["conversation"]
    assert line["role"] == "tool" and line["tool_call"]["arguments"] == arguments
    assert len(line["content"]) + len(json.dumps(line["tool_call"])) <= CONVERSATION_MAX_CHARS
    assert line["content"] and body["conversation_truncated"] is True


def test_the_session_is_the_same_queries_whatever_the_conversations_length(
    agent_api: APIClient, organization: Organization, django_assert_num_queries: Any
) -> None:
    quiet = CallFactory(organization=organization, active=True)
    talkative = CallFactory(organization=organization, active=True)
    TranscriptEntry.objects.bulk_create(
        TranscriptEntry(call=talkative, role=role, content="words", timestamp=said_at(i))
        for i, role in enumerate(["user", "assistant"] * CONVERSATION_MAX_LINES)
    )

    with django_assert_num_queries(7):
        assert agent_api.get(session_url(quiet)).json()["conversation"] == []
    with django_assert_num_queries(7):
        body = agent_api.get(session_url(talkative)).json()
    assert len(body["conversation"]) == CONVERSATION_MAX_LINES


def test_another_organizations_conversation_is_out_of_reach(
    org_agent_api: APIClient, call: Call, outsider: Organization
) -> None:
    """Its call is 404 to an organization's own worker, and its lines never join
    another call's conversation."""
    foreign = CallFactory(organization=outsider, active=True)
    TranscriptEntryFactory(call=foreign, role="user", content="my card is 4242")
    Call.objects.filter(pk=call.pk).update(status="active", started_at=AT)
    TranscriptEntryFactory(call=call, role="user", content="hello", timestamp=said_at(1))

    refused = org_agent_api.get(session_url(foreign))
    own = org_agent_api.get(session_url(call)).json()

    assert refused.status_code == 404
    assert "4242" not in refused.content.decode()
    assert [line["content"] for line in own["conversation"]] == ["hello"]
