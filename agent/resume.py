"""An agent dispatched again mid-call (its worker died) goes on with the conversation.

The session carries the conversation so far (`conversation`: the most recent lines of
the call's transcript, as the API stored them). Its user and assistant lines become
chat messages, its tool lines a function call with its output, in the transcript's
order; they seed the chat context of the agent the call was with (which keeps only the
calls of its own tools, as a handoff would) and the session's history (which later
handoffs pass on). That agent then picks up where the call stopped instead of greeting
again.

Nothing of it is reported again: the lines are the API's already, and a seeded chat
context emits no `conversation_item_added`.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from typing import TYPE_CHECKING

from livekit.agents import AgentSession, llm

from agent.workflow import WorkflowAgent

if TYPE_CHECKING:
    from agent.call import CallRuntime

logger = logging.getLogger("voicecalls.agent.resume")

RESUME_INSTRUCTIONS = (
    "The call was cut off for a moment by a technical problem, and you are back. Do not "
    "greet the caller again or start over. If their last words went unanswered, answer "
    "them now; otherwise say in one short sentence that you are back and go on from "
    "where the conversation stopped."
)


def chat_items(lines: list[dict], *, now: float | None = None) -> list[llm.ChatItem]:
    """The session's `conversation` as chat items, in its order. A line's time becomes
    its item's (never later than `now`, never earlier than the line before: the order
    is the transcript's, whatever the clocks), so what this run adds comes after."""
    now = time.time() if now is None else now
    items: list[llm.ChatItem] = []
    previous = 0.0
    for line in lines:
        at = previous = min(now, max(previous, _epoch(line.get("timestamp"), now)))
        role, content = line.get("role"), line.get("content") or ""
        if role in ("user", "assistant") and content:
            items.append(
                llm.ChatMessage(
                    role=role,
                    content=[content],
                    interrupted=bool(line.get("interrupted")),
                    created_at=at,
                )
            )
        elif role == "tool" and isinstance(line.get("tool_call"), dict):
            items += _tool_items(line["tool_call"], content, line.get("sequence"), at)
    return items


def _tool_items(tool_call: dict, output: str, sequence: object, at: float) -> list[llm.ChatItem]:
    # The stored line is one tool call with its answer; the call id only pairs them.
    call_id = f"resumed_{sequence}"
    name = str(tool_call.get("name") or "")
    return [
        llm.FunctionCall(
            call_id=call_id,
            name=name,
            arguments=json.dumps(tool_call.get("arguments") or {}, ensure_ascii=False),
            created_at=at,
        ),
        llm.FunctionCallOutput(
            call_id=call_id, name=name, output=output, is_error=False, created_at=at
        ),
    ]


def _epoch(timestamp: object, default: float) -> float:
    try:
        return datetime.datetime.fromisoformat(str(timestamp)).timestamp()
    except ValueError:
        return default


async def resume(runtime: CallRuntime, session: AgentSession, agent: WorkflowAgent) -> bool:
    """Before the session starts: when somebody already spoke on the call, `agent` (the
    one the call is with) and the session's history hold what was said, and the agent
    goes on from it rather than greeting. True when the call is resumed."""
    lines = runtime.data.get("conversation") or []
    items = chat_items(lines)
    if not any(item.type == "message" for item in items):
        return False  # nobody spoke yet (or nothing said was kept): a first greeting
    await agent.update_chat_ctx(llm.ChatContext(list(items)))
    session.history.insert(items)
    agent.resume_instructions = RESUME_INSTRUCTIONS
    if runtime.phone is not None:
        runtime.phone.screened_before()
    logger.info("call %s resumes with %s after %d lines", runtime.call_id, agent.name, len(lines))
    return True
