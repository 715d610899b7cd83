"""What a call's providers' errors were: how a fatal one is described, which ones a
retry would mend, and the ones the call got past (retried, or an answer asked again),
each kind said once in the transcript. A caller who hung up while the model or the
voice was being retried ended the call as their hang-up, and nothing anywhere said the
provider had been failing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from livekit.agents import APIConnectionError, APIStatusError

from agent.providers import STT_CONN_OPTIONS
from agent.redact import log_secrets_add, redacted

MAX_ERROR_CHARS = 1000
# An STT error this soon after the one before it continues a run of failures: a stream
# that timed out connecting fails again after the connect timeout and a retry interval.
STT_RUN_GAP = STT_CONN_OPTIONS.timeout + STT_CONN_OPTIONS.retry_interval + 1.0


def cut_off_answer(error: Any) -> bool:
    """An LLM error a retry would have mended (the connection lost or timed out, the
    provider overloaded), not retried only because part of the answer was already out:
    the plugin marks it not retryable, so the caller does not hear that part twice."""
    cause = getattr(error, "error", None)
    if getattr(error, "type", None) != "llm_error" or getattr(cause, "retryable", True):
        return False
    if isinstance(cause, APIStatusError):
        return cause.status_code >= 500 or cause.status_code in (408, 429)
    return isinstance(cause, APIConnectionError)


def describe_error(error: Any) -> str:
    cause = getattr(error, "error", error)
    return f"{getattr(error, 'type', 'error')} in {getattr(error, 'label', '?')}: {cause!r}"


def fallbacks_failed(error: Any, failures: list[str]) -> str:
    """A FallbackAdapter's error (every choice failed, it says, and not why) with why
    each choice did; any other error as `describe_error` has it."""
    if not failures or not str(getattr(error, "label", "")).endswith("FallbackAdapter"):
        return describe_error(error)
    return f"{getattr(error, 'type', 'error')}, every choice failed: " + "; ".join(failures)


def error_kind(cause: Any) -> str:
    """What tells one failure from another: its type and HTTP status, not its message
    (which may carry a request id)."""
    status = getattr(cause, "status_code", None)
    return f"{type(cause).__name__} {status}" if status is not None else type(cause).__name__


class ProviderErrors:
    """The errors of one call's providers that did not end it."""

    def __init__(
        self, reporter: Any, *, secrets: Iterable[str], agent_name: Callable[[], str | None]
    ) -> None:
        self._reporter = reporter
        self._secrets = set(secrets)
        self._agent_name = agent_name
        self._seen: set[tuple[str, str, str]] = set()
        self._stt_run: list[float] = []

    def record(self, component: str, provider: str, error: Any) -> None:
        """A system line (`provider_error: tts deepgram aura-2: APITimeoutError(...)`) at
        the first error of its kind from `provider`'s `component`; no more of that kind."""
        cause = getattr(error, "error", error)
        key = (component, provider, error_kind(cause))
        if key in self._seen:
            return
        self._seen.add(key)
        # A provider's error may quote the key it was sent (an "incorrect API key" body).
        log_secrets_add(self._secrets)
        detail = redacted(f"{component} {provider}: {cause!r}")[:MAX_ERROR_CHARS]
        self._reporter.transcript(
            role="system",
            content=f"provider_error: {detail}",
            agent_name=self._agent_name(),
            timestamp=getattr(error, "timestamp", None) or time.time(),
        )

    def stt_gave_up(self, error: Any) -> bool:
        """True once the STT has failed as often in a row as its retries allow: an STT
        stream starts its retries over after an attempt that outlived the connect
        timeout (it had connected, livekit-agents takes it), and one that timed out
        connecting did, so a provider that never answers was retried all call long."""
        at = getattr(error, "timestamp", None) or time.time()
        if self._stt_run and at - self._stt_run[-1] > STT_RUN_GAP:
            self._stt_run.clear()
        self._stt_run.append(at)
        return len(self._stt_run) > STT_CONN_OPTIONS.max_retry
