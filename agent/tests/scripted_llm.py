"""A scripted stand-in for the model: each LLM request takes the next scripted reply.

A reply is text, a tool call `call("save_meal", meal_type="lunch")`, a provider error
`fail(503)`, or a list of them. Every request is recorded (instructions, messages, tool
names) and reports token usage, so the session's usage and per-turn metrics fire as they
would with a real provider.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field

from livekit.agents import APIStatusError, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

PROMPT_TOKENS = 40
COMPLETION_TOKENS = 7


@dataclass(frozen=True)
class ToolCallStep:
    name: str
    arguments: dict = field(default_factory=dict)


def call(name: str, **arguments: object) -> ToolCallStep:
    return ToolCallStep(name, arguments)


@dataclass(frozen=True)
class FailStep:
    status_code: int
    retryable: bool


def fail(status_code: int = 503, *, retryable: bool = True) -> FailStep:
    """The provider answers with an HTTP error instead of a reply."""
    return FailStep(status_code, retryable)


@dataclass
class Request:
    messages: list[tuple[str, str]]
    tools: list[str]


class ScriptedLLM(llm.LLM):
    def __init__(
        self,
        replies: list,
        *,
        delay: float = 0.01,
        provider: str = "tests",
        model: str = "scripted",
        after: object = "(the script has ended)",
    ) -> None:
        super().__init__()
        self._replies = list(replies)
        self._after = after  # the reply to every request once the script is over
        self.delay = delay
        self._provider = provider
        self._model = model
        self.requests: list[Request] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        return self._provider

    def add(self, *replies: object) -> None:
        self._replies.extend(replies)

    @property
    def remaining(self) -> int:
        return len(self._replies)

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        **kwargs: object,
    ) -> llm.LLMStream:
        tools = tools or []
        self.requests.append(
            Request(
                messages=[
                    (item.role, item.text_content or "")
                    for item in chat_ctx.items
                    if item.type == "message"
                ],
                tools=sorted(getattr(t, "id", getattr(t, "name", "?")) for t in tools),
            )
        )
        reply = self._replies.pop(0) if self._replies else self._after
        return _ScriptedStream(
            self, reply, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    def __init__(self, owner: ScriptedLLM, reply: object, **kwargs: object) -> None:
        super().__init__(owner, **kwargs)
        self._reply = reply
        self._delay = owner.delay

    async def _run(self) -> None:
        await asyncio.sleep(self._delay)  # a measurable time to first token
        request_id = f"req_{uuid.uuid4().hex[:8]}"
        steps = self._reply if isinstance(self._reply, list) else [self._reply]
        for step in steps:
            if isinstance(step, FailStep):
                raise APIStatusError(
                    f"scripted provider error {step.status_code}",
                    status_code=step.status_code,
                    retryable=step.retryable,
                )
            if isinstance(step, ToolCallStep):
                delta = llm.ChoiceDelta(
                    role="assistant",
                    tool_calls=[
                        llm.FunctionToolCall(
                            name=step.name,
                            arguments=json.dumps(step.arguments),
                            call_id=f"call_{uuid.uuid4().hex[:8]}",
                        )
                    ],
                )
            else:
                delta = llm.ChoiceDelta(role="assistant", content=str(step))
            self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=COMPLETION_TOKENS,
                    prompt_tokens=PROMPT_TOKENS,
                    total_tokens=PROMPT_TOKENS + COMPLETION_TOKENS,
                ),
            )
        )
