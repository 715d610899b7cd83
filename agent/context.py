"""What of a long call's conversation the model is sent.

livekit-agents sends an agent's whole chat context with every request, and the context
only grows: an hour or more of talk, or a few large tool answers (16,000 characters
each), and the request outgrows the model's context window. The provider then refuses
it (400, not retried) and the call ends `failed`/`agent_error` mid-sentence; before
that, every turn costs the whole conversation's tokens again. So a request carries the
agent's instructions and, of the conversation, only the newest items that fit in
MAX_CONTEXT_CHARS. The chat context itself keeps everything (handoffs pass it on).
"""

from __future__ import annotations

from livekit.agents import llm

# About 20,000 tokens of English: within a 32k-token window beside the instructions
# and the tools' schemas, and some 45 minutes of conversation.
MAX_CONTEXT_CHARS = 80_000


def item_chars(item: llm.ChatItem) -> int:
    """What an item of the conversation adds to a request, in characters (its text, a
    call's arguments, a tool's answer). Instructions count nothing (they are always
    sent), nor do items that carry no words (a handoff)."""
    if item.type == "message":
        return 0 if item.role in ("system", "developer") else len(item.text_content or "")
    if item.type == "function_call":
        return len(item.name) + len(item.arguments)
    if item.type == "function_call_output":
        return len(item.output)
    return 0


def recent_context(
    chat_ctx: llm.ChatContext, *, max_chars: int = MAX_CONTEXT_CHARS
) -> llm.ChatContext:
    """`chat_ctx` itself when its conversation fits in `max_chars`; else a copy with
    its leading instructions and the newest items that fit (at least the newest one),
    starting on something said: never on a tool's answer whose call was left out."""
    items = chat_ctx.items
    if sum(item_chars(item) for item in items) <= max_chars:
        return chat_ctx
    kept, used = 0, 0
    for item in reversed(items):
        used += item_chars(item)
        if used > max_chars and kept:
            break
        kept += 1
    # Back to the line the cut tool run answered (truncate would drop the run instead,
    # and a turn of large tool answers would leave the model nothing to answer).
    while kept < len(items) and not _said(items[-kept]):
        kept += 1
    return chat_ctx.copy().truncate(max_items=kept)


def _said(item: llm.ChatItem) -> bool:
    return item.type == "message" and item.role in ("user", "assistant")
