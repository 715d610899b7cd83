"""The one module that calls LLM providers: OpenAI-compatible chat completions over
HTTP (urllib3), with a JSON Schema `response_format`.

The API key goes only into the Authorization header: every message this module
raises has it scrubbed, so it cannot reach a stored error, a log line or the admin.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import time
from dataclasses import dataclass

import urllib3
from django.conf import settings
from django.utils import timezone

from calls.usage_items import MAX_USAGE_TOKENS
from providerkeys.catalog import OPENAI_COMPATIBLE_LLM
from voicecalls.text import storable

USER_AGENT = "voicecalls-analysis/1"
MAX_MESSAGE_CHARS = 300
MAX_RESPONSE_BYTES = 4 * 1024 * 1024

_http = urllib3.PoolManager(retries=False, headers={"User-Agent": USER_AGENT})


class ProviderError(Exception):
    """The provider gave no usable answer. `retryable`: 429, 5xx, timeouts, connection
    failures; `retry_after`: seconds the provider asked us to wait, if it said."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Completion:
    content: str
    model: str
    # The tokens the provider says the request used (`_usage`); None when it said none.
    usage: dict[str, int] | None = None


def _count(value: object) -> int:
    """A token count as reported, or 0 when it is none (not an integer, out of bounds)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value if 0 <= value <= MAX_USAGE_TOKENS else 0


def _usage(answer: dict) -> dict[str, int] | None:
    """The answer's `usage` (OpenAI's shape, which the compatible APIs follow):
    {prompt_tokens, completion_tokens, cached_tokens}; cached tokens are some of the
    prompt's, never more. None when it reports no token."""
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    counts = {
        "prompt_tokens": prompt,
        "completion_tokens": _count(usage.get("completion_tokens")),
        "cached_tokens": min(cached, prompt),
    }
    return counts if any(counts.values()) else None


def base_url(provider: str) -> str:
    """Where `provider`'s OpenAI-compatible API lives; `ANALYSIS_LLM_BASE_URL` points
    every provider elsewhere (a gateway, or the test suite's stand-in)."""
    return (settings.ANALYSIS_LLM_BASE_URL or OPENAI_COMPATIBLE_LLM[provider]).rstrip("/")


def scrub(text: str, secret: str) -> str:
    """`text` without the secret, cut to a length fit for a stored error."""
    if secret:
        text = text.replace(secret, "••••")
    return storable(text[:MAX_MESSAGE_CHARS])


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # neither seconds nor an HTTP date: ignored, the backoff applies
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return max(0.0, (parsed - timezone.now()).total_seconds())


def _provider_error(body: bytes) -> object:
    """The error an error answer's body carries (a dict, a string), or None."""
    try:
        answer = json.loads(body)
        if isinstance(answer, list) and answer:
            answer = answer[0]  # Gemini's OpenAI-compatible endpoint: `[{"error": ...}]`
        return answer.get("error")
    except (ValueError, AttributeError, RecursionError):
        return None


def _provider_message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or "")
    return str(error or "")


def _failed_generation(status: int, error: object) -> str | None:
    """What the model wrote when the provider's own check refused it (Groq, best-effort
    mode: 400 `json_validate_failed`): an invalid answer, retried as ours are."""
    if status != 400 or not isinstance(error, dict):
        return None
    if error.get("code") != "json_validate_failed":
        return None
    return str(error.get("failed_generation") or "")


def _body_read(response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
    """The body, up to MAX_RESPONSE_BYTES + 1, by the deadline: the socket's timeout
    bounds each read only, so an answer trickling in would hold the attempt for as long
    as the provider kept sending."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_RESPONSE_BYTES:
        if time.monotonic() > deadline:
            raise urllib3.exceptions.TimeoutError("the answer took longer than the timeout")
        chunk = response.read1(MAX_RESPONSE_BYTES + 1 - size, decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def chat_completion(
    *, provider: str, model: str, api_key: str, messages: list[dict], schema: dict
) -> Completion:
    """One chat completion asking for JSON matching `schema`; ProviderError otherwise."""
    body = {
        "model": model,
        "messages": messages,
        "response_format": {
            "type": "json_schema",
            # Not strict: customers' schemas need not close every object.
            "json_schema": {"name": "call_analysis", "schema": schema, "strict": False},
        },
    }
    deadline = time.monotonic() + settings.ANALYSIS_TIMEOUT_SECONDS
    try:
        response = _http.request(
            "POST",
            f"{base_url(provider)}/chat/completions",
            body=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=urllib3.Timeout(total=settings.ANALYSIS_TIMEOUT_SECONDS),
            redirect=False,
            preload_content=False,
        )
        try:
            raw = _body_read(response, deadline)
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        kind = "timed out" if isinstance(exc, urllib3.exceptions.TimeoutError) else "failed"
        raise ProviderError(
            f"The request to {provider} {kind} ({type(exc).__name__}).", retryable=True
        ) from None
    status = response.status
    if status != 200:
        error = _provider_error(raw)
        if (generated := _failed_generation(status, error)) is not None:
            return Completion(content=generated, model=storable(model[:100]))
        message = scrub(_provider_message(error), api_key)
        raise ProviderError(
            f"{provider} answered HTTP {status}" + (f": {message}" if message else "."),
            retryable=status == 429 or status >= 500,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    try:
        answer = json.loads(raw)
        content = answer["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError, RecursionError):
        raise ProviderError(
            f"{provider} answered something that is not a chat completion.", retryable=True
        ) from None
    if not isinstance(content, str):
        content = ""
    return Completion(
        content=content,
        model=storable(str(answer.get("model") or model)[:100]),
        usage=_usage(answer),
    )
