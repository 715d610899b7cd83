"""A stand-in for an LLM provider's OpenAI-compatible chat-completions API, on loopback
(stdlib http.server in a thread). Not a provider: tests point `ANALYSIS_LLM_BASE_URL`
at it.

It answers from a script of planned outcomes, then `default`, and records every request
so tests can assert what was sent (the rendered prompt, the transcript, the key).

Stand-in behaviour, as OpenAI's own check of a request's schema does (with `strict`
false too): a `response_format` schema with an array schema without `items` is refused
with a 400 naming where, before any answer is made.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Outcome:
    """One answer: `content` as the assistant message (HTTP 200), or an error `status`."""

    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # An error message quoting the request's Authorization header, as careless APIs do.
    echo_authorization: bool = False
    # The error's message, when not the default one.
    message: str | None = None
    # Seconds between each tenth of the body: an answer trickling in (a slow gateway).
    drip: float = 0.0
    # The error body in a one-item list, as Gemini's OpenAI-compatible endpoint sends it.
    error_in_list: bool = False
    # The error's `code`, and what the model wrote, as Groq's 400 `json_validate_failed`
    # (an answer its own check found not matching the schema) carries it.
    error_code: str | None = None
    failed_generation: str | None = None
    # An answer's `usage`, as the provider reports it (OpenAI: prompt_tokens,
    # completion_tokens, prompt_tokens_details.cached_tokens); none when None.
    usage: object = None
    # The model the answer names, when not the one asked (OpenAI names a dated snapshot).
    model: str | None = None
    # A streamed answer (a request with `"stream": true`, as voice agents send) ends
    # after this many of its chunks with the connection dropped: no end, no usage.
    drop_after: int | None = None

    @classmethod
    def answer(cls, value: object, delay: float = 0.0, **kwargs: object) -> Outcome:
        return cls(content=json.dumps(value), delay=delay, **kwargs)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: dict

    @property
    def messages(self) -> list[dict]:
        return self.body["messages"]

    @property
    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)


_SUBSCHEMA_KEYS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_SUBSCHEMA_LIST_KEYS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_SUBSCHEMA_MAP_KEYS = ("properties", "$defs", "definitions", "patternProperties")


def _schema_refusal(body: dict) -> str | None:
    """OpenAI's refusal of the request's response schema, or None."""
    response_format = body.get("response_format") or {}
    spec = response_format.get("json_schema") or {}
    context = _array_without_items(spec.get("schema"), ())
    if context is None:
        return None
    return (
        f"Invalid schema for response_format '{spec.get('name')}': In context={context}, "
        "array schema missing items."
    )


def _array_without_items(schema: object, context: tuple) -> tuple | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if (kind == "array" or isinstance(kind, list) and "array" in kind) and "items" not in schema:
        return context
    children = [((key,), schema.get(key)) for key in _SUBSCHEMA_KEYS]
    for key in _SUBSCHEMA_LIST_KEYS:
        if isinstance(schema.get(key), list):
            children += [((key, str(i)), child) for i, child in enumerate(schema[key])]
    for key in _SUBSCHEMA_MAP_KEYS:
        if isinstance(schema.get(key), dict):
            children += [((key, name), child) for name, child in schema[key].items()]
    for path, child in children:
        found = _array_without_items(child, context + path)
        if found is not None:
            return found
    return None


PROMPT_TOKENS, COMPLETION_TOKENS = 40, 7


def _stream(handler: BaseHTTPRequestHandler, outcome: Outcome, *, model: str | None) -> None:
    """The answer as OpenAI streams it: server-sent events in a chunked body, a chunk a
    word, the finish, the usage, `[DONE]`; or cut off after `drop_after` chunks."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
    words = outcome.content.split(" ")
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": w + " " * (i < len(words) - 1)}}]}
        for i, w in enumerate(words)
    ]
    chunks += [
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        },
    ]
    events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks]
    events.append(b"data: [DONE]\n\n")
    if outcome.drop_after is not None:
        events = events[: outcome.drop_after]
    handler.protocol_version = "HTTP/1.1"
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for event in events:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            handler.wfile.flush()
            time.sleep(outcome.drip)
        if outcome.drop_after is None:
            handler.wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


class FakeLLM:
    def __init__(self, outcomes: list[Outcome] | None = None, default: Outcome | None = None):
        self.outcomes = list(outcomes or [])
        self.default = default or Outcome.answer({"summary": "(default)"})
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake._lock:
                    fake.requests.append(
                        Request(
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=json.loads(body),
                        )
                    )
                    refusal = _schema_refusal(json.loads(body))
                    if refusal:
                        outcome = Outcome(status=400, message=refusal)
                    else:
                        outcome = fake.outcomes.pop(0) if fake.outcomes else fake.default
                if outcome.delay:
                    time.sleep(outcome.delay)
                if outcome.status == 200 and json.loads(body).get("stream"):
                    _stream(self, outcome, model=json.loads(body).get("model"))
                    return
                if outcome.status == 200:
                    payload = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "model": outcome.model or json.loads(body).get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": outcome.content},
                            }
                        ],
                    }
                    if outcome.usage is not None:
                        payload["usage"] = outcome.usage
                else:
                    message = outcome.message or f"fake error {outcome.status}"
                    if outcome.echo_authorization:
                        message = self.headers.get("Authorization", "")
                    payload = {"error": {"message": message}}
                    if outcome.error_code:
                        payload["error"]["code"] = outcome.error_code
                    if outcome.failed_generation is not None:
                        payload["error"]["failed_generation"] = outcome.failed_generation
                    if outcome.error_in_list:
                        payload = [{"error": {"code": outcome.status, "message": message}}]
                data = json.dumps(payload).encode()
                try:
                    self.send_response(outcome.status)
                    for name, value in outcome.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if outcome.drip:
                        step = max(1, len(data) // 10)
                        for start in range(0, len(data), step):
                            self.wfile.write(data[start : start + step])
                            self.wfile.flush()
                            time.sleep(outcome.drip)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLM:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
