"""An agent dispatched again mid-call (its worker died) goes on with the conversation.

The session carries the conversation so far (`conversation`: the most recent lines of
the call's transcript, as the API stored them). Its user and assistant lines become
chat messages, its tool lines a function call with its output (an error where the
line's `tool_call` says `is_error`), in the transcript's order; they seed the chat
context of the agent the call was with (which keeps only the calls of its own tools, as
a handoff would) and the session's history (which later handoffs pass on). That agent
then picks up where the call stopped instead of greeting again.

Nothing of it is reported again: the lines are the API's already, and a seeded chat
context emits no `conversation_item_added`.

Gemini 3 answers 400 to a request whose current turn holds a function call without the
thought signature the model gave it, and the seeded calls have none (the run that made
them took its signatures along, or another provider made them). Google documents a
stand-in signature for history the model did not produce; the google plugin sends
what its LLM keeps by call id, so the seeded calls are kept there with that stand-in.
"""

from __future__ import annotations

import base64
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

# The stand-in as Google's documentation spells it in the request's JSON, where the
# field is base64: the SDK encodes these bytes back to exactly that string.
SKIP_THOUGHT_SIGNATURE = base64.urlsafe_b64decode("skip_thought_signature_validator")

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
            call_id=call_id,
            name=name,
            output=output,
            # A failed call's line says so (one an older worker reported does not:
            # taken as answered, as before).
            is_error=tool_call.get("is_error") is True,
            created_at=at,
        ),
    ]


def _epoch(timestamp: object, default: float) -> float:
    try:
        return datetime.datetime.fromisoformat(str(timestamp)).timestamp()
    except ValueError:
        return default


def _sign_for_gemini(instances: list, items: list[llm.ChatItem]) -> None:
    """The seeded function calls get the stand-in signature in every Gemini 3 (or
    later) LLM of the call, fallbacks and other agents' models too: a handoff passes
    the history on. Other providers, and older Gemini models (which do not check a
    signature), are left as they are."""
    from livekit.plugins import google
    from livekit.plugins.google.llm import _is_gemini_3_or_newer

    call_ids = [item.call_id for item in items if item.type == "function_call"]
    for instance in instances:
        # The plugin's own store (livekit-plugins-google 1.8.9, pinned): its stream
        # sends a call's signature from `_thought_signatures` (for Gemini 2.5 and later);
        # Gemini 3 is the one that checks, and the stand-in is documented for it.
        if isinstance(instance, google.LLM) and _is_gemini_3_or_newer(instance.model):
            for call_id in call_ids:
                instance._thought_signatures.setdefault(call_id, SKIP_THOUGHT_SIGNATURE)


async def resume(runtime: CallRuntime, session: AgentSession, agent: WorkflowAgent) -> bool:
    """Before the session starts: when somebody already spoke on the call, `agent` (the
    one the call is with) and the session's history hold what was said, and the agent
    goes on from it rather than greeting. True when the call is resumed."""
    lines = runtime.data.get("conversation") or []
    items = chat_items(lines)
    if not any(item.type == "message" for item in items):
        return False  # nobody spoke yet (or nothing said was kept): a first greeting
    _sign_for_gemini(runtime.components.instances("llm"), items)
    await agent.update_chat_ctx(llm.ChatContext(list(items)))
    session.history.insert(items)
    agent.resume_instructions = RESUME_INSTRUCTIONS
    if runtime.phone is not None:
        runtime.phone.screened_before()
    logger.info("call %s resumes with %s after %d lines", runtime.call_id, agent.name, len(lines))
    return True
