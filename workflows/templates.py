"""Prompt templates: Jinja2 in a sandbox, for text an organization writes and its end
users' data fills.

- `{{ user.* }}` is the call's `user_data`, `{{ metadata.* }}` its metadata, `{{ call.id }}`
  its id. Values are data, never templates: `{{ 7*7 }}` inside user_data stays verbatim.
- A missing value renders empty, at any depth (`{{ user.address.city }}`), so
  `{{ user.name | default("there") }}` works.
- The sandbox blocks Python internals (`__class__`, `__globals__`, ...). A template that
  still trips it, or fails at runtime for any other reason, renders empty: a call must
  start, and an attacker must learn nothing from the result.
- Operators and filters that could build huge values from a short template (`'a' * 10**9`,
  `9 ** 9 ** 9`, `'%999999999d' % 1`, `center(10**9)`) are refused, and output is cut at
  `MAX_RENDERED_CHARS`.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

logger = logging.getLogger(__name__)

MAX_TEMPLATE_CHARS = 20_000
MAX_RENDERED_CHARS = 64 * 1024
# Bounds for `*` and `**` so a short template cannot allocate or compute without limit.
_MAX_REPEAT_LEN = 10_000
_MAX_POWER_BITS = 4096
# Filters whose width/format arguments can build huge strings from a short template.
_REMOVED_FILTERS = ("center", "indent", "wordwrap", "format", "filesizeformat", "xmlattr")


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox (no internals, no mutating lists/dicts) plus bounded operators."""

    intercepted_binops = frozenset(["*", "**", "%"])

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            if isinstance(right, int | float) and isinstance(left, int | float):
                size = max(abs(int(left)), 2).bit_length() * abs(right)
                if size > _MAX_POWER_BITS:
                    raise SecurityError("power too large")
            return operator.pow(left, right)
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > _MAX_REPEAT_LEN:
                        raise SecurityError("repetition too large")
            return operator.mul(left, right)
        if op == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting is not available in prompts")
            return operator.mod(left, right)
        return super().call_binop(context, op, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        # str.format/format_map can pad to any width; the sandbox allows them otherwise.
        if super().wrap_str_format(value) is None:
            return None

        def refuse(*args: Any, **kwargs: Any) -> str:
            raise SecurityError("string formatting is not available in prompts")

        return refuse


def _make_environment() -> PromptEnvironment:
    env = PromptEnvironment(
        undefined=ChainableUndefined,
        autoescape=False,  # prompts are plain text for an LLM, not HTML
        keep_trailing_newline=True,
        cache_size=400,
    )
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    return env


_env = _make_environment()


def template_error(source: str) -> str | None:
    """Why `source` is not a valid prompt template (syntax, unknown filter), or None."""
    try:
        _env.from_string(source)
    except TemplateSyntaxError as exc:
        return f"Template syntax error on line {exc.lineno}: {exc.message}"
    except TemplateError as exc:
        return f"Template error: {exc.message}"
    return None


def template_context(*, user_data: Any, metadata: Any, call_id: str | None) -> dict:
    return {
        "user": user_data if isinstance(user_data, Mapping) else {},
        "metadata": metadata if isinstance(metadata, Mapping) else {},
        "call": {"id": call_id},
    }


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render a prompt template; any failure renders empty, output is bounded."""
    if not source:
        return ""
    try:
        template = _env.from_string(source)
        parts: list[str] = []
        size = 0
        # Streamed so a loop cannot pile up more than the bound before we stop it.
        for chunk in template.generate(context):
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                break
        return "".join(parts)[:MAX_RENDERED_CHARS]
    except (TemplateError, ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        # The message may quote user data: log only the kind of failure.
        logger.warning("prompt template failed to render: %s", type(exc).__name__)
        return ""


def agents_rendered(*, definition: dict, context: Mapping[str, Any]) -> list[dict]:
    """A version's agents with `instructions` and `greeting` rendered for one call."""
    return [
        {
            **agent,
            "instructions": render(agent.get("instructions", ""), context),
            "greeting": render(agent.get("greeting", ""), context),
        }
        for agent in definition.get("agents", [])
    ]
