"""A call's workflow as livekit-agents `Agent`s: rendered instructions, a greeting on
enter, tools from JSON Schema, one `transfer_to_<agent>` tool per allowed handoff and a
built-in `end_call` that lets the goodbye play out before it hangs up. Phone calls add
transfer tools and, outbound, `send_dtmf` and `voicemail_detected` (agent/telephony.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from typing import Any, Protocol

import httpx
from livekit.agents import (
    NOT_GIVEN,
    Agent,
    APIConnectOptions,
    RunContext,
    StopResponse,
    ToolError,
    function_tool,
)

from agent.context import recent_context
from agent.events import json_safe
from agent.providers import LLM_CONN_OPTIONS, ComponentCache, llm_connect_options
from agent.telephony import PhoneLine, transfer_tool
from agent.tool_http import (
    ACCEPT_ENCODING,
    AnswerTooLarge,
    PublicOnlyTransport,
    UnsafeToolURL,
    answer_read,
    check_tool_url,
)
from agent.tool_schema import checked_parameters, offered_parameters, validation_error

# Standard Webhooks signing, shared with the web service's deliveries (standard library).
from webhooks.signing import signed_headers

logger = logging.getLogger("voicecalls.agent.workflow")

HANDOFF_PREFIX = "transfer_to_"
MAX_TOOL_NAME = 64  # what LLM providers accept for a function name
END_CALL_TOOL = "end_call"
# Handoffs in a row without the caller speaking between them: past it the model is told
# to answer itself. Agents each answering their entry with a handoff back ran the model
# without end, the caller in silence, until the call's maximum duration.
MAX_HANDOFFS_IN_A_ROW = 3
TOOL_TIMEOUT_SECONDS = 10.0
MAX_TOOL_RESULT_CHARS = 16_000
# The most of a tool's answer the worker reads (it is cut to MAX_TOOL_RESULT_CHARS).
MAX_TOOL_RESPONSE_BYTES = 1024 * 1024
EMPTY_OBJECT_SCHEMA = {"type": "object", "properties": {}}
# Said first when the caller waited in silence for the call's session (agent/worker.py).
LATE_INSTRUCTIONS = (
    "The caller has been waiting in silence for a few seconds. Apologise for the wait in "
    "one short sentence, in the language of your instructions, and say nothing else."
)


class CallControl(Protocol):
    """What the agents need from the call they run in (agent/call.py's CallRuntime)."""

    @property
    def hanging_up(self) -> bool: ...

    def take_late_apology(self) -> bool: ...

    async def screen(self, llm: Any) -> bool: ...

    def answered_by_greeting(self, message: Any) -> bool: ...

    def said(self, item: Any) -> None: ...

    async def hang_up(self, context: RunContext | None = None, *, reason: str = ...) -> None: ...


class WorkflowAgent(Agent):
    """One workflow agent. A subclass, so livekit-agents keeps our `id` (a bare `Agent`
    is always "default_agent") and handoff items carry the workflow's agent names."""

    def __init__(
        self,
        *,
        name: str,
        instructions: str,
        greeting: str,
        tools: list,
        components: dict[str, Any],
        call: CallControl,
        llm_options: APIConnectOptions = LLM_CONN_OPTIONS,
    ) -> None:
        super().__init__(id=name, instructions=instructions, tools=tools, **components)
        self.name = name
        self._llm_options = llm_options
        self.greeting = greeting
        self._call = call
        # Set on the agent a call dispatched again mid-call resumes with (agent/resume.py):
        # what it is told as it enters, in place of the greeting.
        self.resume_instructions: str | None = None

    async def on_enter(self) -> None:
        if self.resume_instructions is not None:
            instructions, self.resume_instructions = self.resume_instructions, None
            # The caller heard the greeting from the run before; the resumed words
            # own up to the wait, so no late apology besides.
            self._call.take_late_apology()
            self.session.generate_reply(instructions=instructions)
            return
        if not await self._call.screen(self.llm):
            return  # an answering machine or a phone menu: not for the greeting
        if self._call.take_late_apology():
            self.session.generate_reply(instructions=LATE_INSTRUCTIONS, tool_choice="none")
        if self.greeting:
            self.session.say(self.greeting)
        else:
            # No fixed greeting (typically after a handoff): let the model continue.
            self.session.generate_reply()

    async def llm_node(self, chat_ctx: Any, tools: list, model_settings: Any) -> Any:
        """Agent.default.llm_node on the newest part of a long call only (its whole
        would outgrow the model's context window: agent/context.py), with this agent's
        wait on its model: livekit-agents gives every agent the session's one."""
        tool_choice = model_settings.tool_choice if model_settings else NOT_GIVEN
        async with self.llm.chat(
            chat_ctx=recent_context(chat_ctx),
            tools=tools,
            tool_choice=tool_choice,
            conn_options=self._llm_options,
        ) as stream:
            async for chunk in stream:
                yield chunk

    async def on_user_turn_completed(self, turn_ctx: Any, new_message: Any) -> None:
        # The agent said goodbye (or hands the caller over): it answers nothing more; or
        # the greeting answers it. livekit-agents keeps no turn a StopResponse ends, so
        # what the caller said goes to the transcript here.
        if self._call.hanging_up or self._call.answered_by_greeting(new_message):
            self._call.said(new_message)
            raise StopResponse()


class ToolRunner:
    """Runs a workflow tool call: validate, then POST to its url or acknowledge."""

    def __init__(
        self,
        *,
        call_id: str,
        http: httpx.AsyncClient | None = None,
        allow_private_urls: bool = False,
    ) -> None:
        self.call_id = call_id
        if http is None:
            transport = None if allow_private_urls else PublicOnlyTransport()
            http = httpx.AsyncClient(timeout=TOOL_TIMEOUT_SECONDS, transport=transport)
        self._http = http
        self._allow_private = allow_private_urls
        # The organization's tool signing secrets, from the call's session (none: the
        # requests go unsigned, as from a web service too old to send them).
        self.signing_secrets: list[str] = []

    def _headers(self, spec: dict, agent_name: str, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "X-Voicecalls-Call-Id": self.call_id,
            "X-Voicecalls-Tool": spec["name"],
            "X-Voicecalls-Agent": agent_name,
        }
        if self.signing_secrets:
            # A new id each request: a receiver deduplicating on it must not drop a
            # second call of the same tool (the model's call ids are not unique).
            headers |= signed_headers(
                secrets=self.signing_secrets,
                msg_id=f"tool_{uuid.uuid4().hex}",
                timestamp=int(time.time()),
                body=body,
            )
        return headers

    async def run(self, spec: dict, arguments: dict, *, agent_name: str) -> str:
        problem = validation_error(checked_parameters(spec), arguments)
        if problem is not None:
            raise ToolError(f"Invalid arguments for {spec['name']}: {problem}")
        url = spec.get("url")
        if not url:
            return json.dumps({"status": "recorded"})
        # The bytes signed are the bytes sent (encoded as httpx's `json=` does).
        body = json.dumps(
            arguments, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
        try:
            # httpx's timeout bounds each read; this bounds the whole answer, the URL's
            # check included (a name server that does not answer takes its own time).
            async with asyncio.timeout(TOOL_TIMEOUT_SECONDS):
                await check_tool_url(url, allow_private=self._allow_private)
                async with self._http.stream(
                    "POST",
                    url,
                    content=body,
                    headers=self._headers(spec, agent_name, body),
                    timeout=TOOL_TIMEOUT_SECONDS,
                    follow_redirects=False,
                ) as response:
                    # A redirect is not followed (its target is unchecked): no answer.
                    if not response.is_success:
                        raise ToolError(f"{spec['name']} failed (HTTP {response.status_code}).")
                    answer = await answer_read(response, MAX_TOOL_RESPONSE_BYTES)
                    # Media types are case-insensitive; text comes in its charset (a
                    # Java servlet's is ISO-8859-1), UTF-8 when it names none it knows.
                    content_type = response.headers.get("Content-Type", "").lower()
                    plain = content_type.startswith("text/plain")
                    charset = response.encoding or "utf-8"
        except UnsafeToolURL as exc:
            logger.warning("call %s: tool %s not called: %s", self.call_id, spec["name"], exc)
            raise ToolError(f"{spec['name']} is unavailable.") from exc
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.warning("call %s: tool %s failed: %r", self.call_id, spec["name"], exc)
            raise ToolError(f"{spec['name']} {_no_answer(exc)}.") from exc
        except AnswerTooLarge as exc:
            logger.warning("call %s: tool %s answered too much", self.call_id, spec["name"])
            raise ToolError(f"{spec['name']}'s answer was too large.") from exc
        result = tool_result(spec["name"], answer, plain=plain, charset=charset)
        return result[:MAX_TOOL_RESULT_CHARS]

    async def aclose(self) -> None:
        await self._http.aclose()


def _no_answer(exc: Exception) -> str:
    """Why a tool's endpoint gave no answer, as the model and the transcript tell it: a
    refused connection said "did not answer in time" had its owner look for a slow
    endpoint, not a down one."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "could not be reached"
    if isinstance(exc, httpx.DecodingError):
        return "answered in an encoding that cannot be read"
    return "closed the connection unanswered"


def tool_result(name: str, body: bytes, *, plain: bool, charset: str = "utf-8") -> str:
    """A tool's 2xx answer for the model: its JSON, or its plain text (in `charset`). An
    empty one (204) means done: told as an error, the model would call the tool, and run
    its action, again."""
    if not body.strip():
        return json.dumps({"status": "ok"})
    try:
        # As written (the transcript shows it), a lone surrogate made U+FFFD: no
        # provider could encode it.
        return json.dumps(json_safe(json.loads(body)), ensure_ascii=False)
    except (ValueError, RecursionError) as exc:
        if plain:
            return json.dumps({"result": body.decode(charset, "replace")}, ensure_ascii=False)
        raise ToolError(f"{name} did not return JSON.") from exc


def workflow_tool(spec: dict, runner: ToolRunner, agent_name: str):
    async def _call(raw_arguments: dict, context: RunContext) -> str:
        return await runner.run(spec, raw_arguments, agent_name=agent_name)

    return function_tool(
        _call,
        raw_schema={
            "name": spec["name"],
            "description": spec.get("description") or spec["name"],
            "parameters": offered_parameters(spec),
        },
    )


def handoff_tool_name(target: str) -> str:
    """`transfer_to_<agent>`; an agent name too long for that is cut and made unique."""
    name = f"{HANDOFF_PREFIX}{target}"
    if len(name) <= MAX_TOOL_NAME:
        return name
    digest = hashlib.sha256(target.encode()).hexdigest()[:8]
    return f"{name[: MAX_TOOL_NAME - len(digest) - 1]}_{digest}"


def handoffs_since_caller_spoke(history: Any) -> int:
    """The handoffs since the caller's last words (the session's start is none)."""
    count = 0
    for item in reversed(history.items):
        if item.type == "message" and item.role == "user":
            break
        if item.type == "agent_handoff" and item.old_agent_id is not None:
            count += 1
    return count


def handoff_tool(target: str, agents: dict[str, WorkflowAgent]):
    async def _transfer(raw_arguments: dict, context: RunContext) -> Agent:
        if handoffs_since_caller_spoke(context.session.history) >= MAX_HANDOFFS_IN_A_ROW:
            raise ToolError("Too many handoffs in a row: answer the caller yourself.")
        agent = agents[target]
        # The next agent hears the conversation so far, without the previous agent's
        # instructions and tool calls (its tools are not the next agent's).
        await agent.update_chat_ctx(
            context.session.history.copy(
                exclude_instructions=True, exclude_function_call=True, exclude_handoff=True
            )
        )
        # Returning the agent hands the conversation over; its on_enter speaks next.
        return agent

    return function_tool(
        _transfer,
        raw_schema={
            "name": handoff_tool_name(target),
            "description": f"Hand the conversation over to {target}.",
            "parameters": EMPTY_OBJECT_SCHEMA,
        },
    )


def end_call_tool(call: CallControl):
    async def _end_call(raw_arguments: dict, context: RunContext) -> None:
        # Returns once the goodbye said before this call has played out.
        await call.hang_up(context)
        raise StopResponse()  # nothing more to say: the goodbye was already spoken

    return function_tool(
        _end_call,
        raw_schema={
            "name": END_CALL_TOOL,
            "description": (
                "Hang up. Say goodbye first; use it only when the conversation is over."
            ),
            "parameters": EMPTY_OBJECT_SCHEMA,
        },
    )


def agent_tools(spec: dict, runner: ToolRunner, phone: PhoneLine | None) -> tuple[list, list]:
    """The agent's own tools, and the names of transfer tools left out: they hand a
    phone caller over, so a web call has none."""
    tools, left_out = [], []
    for tool in spec.get("tools") or []:
        if tool.get("type", "function") != "transfer":
            tools.append(workflow_tool(tool, runner, spec["name"]))
        elif phone is not None:
            tools.append(transfer_tool(tool, phone))
        else:
            left_out.append(tool["name"])
    return tools, left_out


def build_agents(
    workflow: dict,
    *,
    components: ComponentCache,
    runner: ToolRunner,
    call: CallControl,
    phone: PhoneLine | None = None,
) -> dict[str, WorkflowAgent]:
    """Every agent of the workflow by name. Raises ComponentError (from `components`)
    when a provider is unknown or its key is missing."""
    agents: dict[str, WorkflowAgent] = {}
    left_out: list[str] = []
    for spec in workflow["agents"]:
        name = spec["name"]
        tools, skipped = agent_tools(spec, runner, phone)
        left_out += skipped
        tools += [handoff_tool(target, agents) for target in spec.get("handoffs") or []]
        defined = {tool["name"] for tool in spec.get("tools") or []}
        if END_CALL_TOOL not in defined:
            tools.append(end_call_tool(call))
        if phone is not None:
            tools += phone.tools(defined)
        agents[name] = WorkflowAgent(
            name=name,
            instructions=spec.get("instructions") or "",
            greeting=spec.get("greeting") or "",
            tools=tools,
            components={c: components.get(c, spec[c]) for c in ("stt", "llm", "tts")},
            call=call,
            llm_options=llm_connect_options(spec["llm"]),
        )
    if left_out:
        logger.info("transfer tools left out of a web call: %s", ", ".join(left_out))
    return agents
