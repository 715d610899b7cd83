"""Prompt templates: Jinja2 in a sandbox, for text an organization writes and its end
users' data fills.

- `{{ user.* }}` is the call's `user_data`, `{{ metadata.* }}` its metadata, `{{ call.id }}`
  its id. Values are data, never templates: `{{ 7*7 }}` inside user_data stays verbatim.
- A missing value renders empty, at any depth (`{{ user.address.city }}`), so
  `{{ user.name | default("there") }}` works; a null prints empty too. Printed, a key
  shows rather than a dict method of its name (`{{ user.items }}`), which stays callable
  (`metadata.items()`); no other method or function prints.
- The sandbox blocks Python internals (`__class__`, `__globals__`, ...). A template that
  still trips it, or fails at runtime for any other reason, renders empty: a call must
  start, and an attacker must learn nothing from the result.
- Operators, filters and methods that could build huge values from a short template
  (`'a' * 10**9`, `9 ** 9 ** 9`, a number squared again and again, `'%999999999d' % 1`,
  `center(10**9)`, `tojson(indent=10**5)`, `(1).to_bytes(10**9, "big")`, `lipsum`) are
  refused or size-checked; loop iterations, calls and filters share a work budget per
  render (nested loops, exponential macros, sorting a large list again and again: a
  filter or method costs by the size of what it takes and makes); output is cut at
  `MAX_RENDERED_CHARS`.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

logger = logging.getLogger(__name__)

MAX_TEMPLATE_CHARS = 20_000
MAX_RENDERED_CHARS = 64 * 1024
# Bounds so a short template cannot make the service allocate or compute without
# limit: the longest string or list an expression may build, the largest power, and
# the work units (loop iterations plus calls) one render may spend.
_MAX_VALUE_LEN = 100_000
_MAX_POWER_BITS = 4096
_MAX_WORK = 20_000
# Filters whose arguments can build huge values or loop a given number of times.
_REMOVED_FILTERS = ("center", "indent", "wordwrap", "format", "xmlattr", "slice", "batch")
# str methods a prompt may call; the others (ljust, zfill, expandtabs, format, ...) can
# pad or multiply without bound.
_SAFE_STR_METHODS = frozenset(
    "capitalize casefold count endswith find index isalnum isalpha isdecimal isdigit "
    "islower isnumeric isspace istitle isupper lower lstrip partition removeprefix "
    "removesuffix rfind rindex rpartition rsplit rstrip split splitlines startswith "
    "strip swapcase title upper replace join".split()
)

_budget: ContextVar[list[int] | None] = ContextVar("prompt_work_budget", default=None)


def _spend(units: int = 1) -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget[0] -= units
    if budget[0] < 0:
        raise SecurityError("the template does too much work")


def _check_len(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > _MAX_VALUE_LEN:
        raise SecurityError("value too large")
    return value


def _loop_budget(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _spend()
        yield item


def _shown(value: Any) -> Any:
    """What a value prints as: a null as nothing, a dict method a key of the same name
    shadows (`{{ user.items }}`: Jinja finds the method first, and calling it,
    `metadata.items()`, must still work) as that key's value, other callables as
    nothing."""
    if value is None:
        return ""
    if callable(value):
        owner = getattr(value, "__self__", None)
        name = getattr(value, "__name__", None)
        if isinstance(owner, Mapping) and name in owner:
            return owner[name]
        return ""  # a method or function printed: a Python repr, never prompt text
    return value


def _bounded_concat(values: list) -> str:
    return _check_len("".join(str(_shown(value)) for value in values))


class _Bounded(NodeTransformer):
    """Rewrites a parsed template so every loop iteration spends the work budget and
    every `~` concatenation is size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_loop_budget", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(items, "_bounded_concat", [], [], None, None, lineno=node.lineno)


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox (no internals, no mutating lists/dicts) plus bounded operators,
    filters, string methods, loops and calls."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Bounded().visit(super()._parse(source, name, filename))

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
                    if len(seq) * times > _MAX_VALUE_LEN:
                        raise SecurityError("repetition too large")
            if isinstance(left, int) and isinstance(right, int):
                # Squaring a number again and again reaches any size a power would.
                if left.bit_length() + right.bit_length() > _MAX_POWER_BITS:
                    raise SecurityError("product too large")
            return operator.mul(left, right)
        if op == "+":
            return _check_len(operator.add(left, right))
        if op == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting is not available in prompts")
            return operator.mod(left, right)
        return super().call_binop(context, op, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        _spend(1 + _work_of(owner))
        if isinstance(owner, int | float | bytes):
            # (1).to_bytes(10**9, "big") and the like build values without bound.
            raise SecurityError("number methods are not available in prompts")
        if isinstance(owner, str):
            method = getattr(__obj, "__name__", "")
            if method not in _SAFE_STR_METHODS:
                raise SecurityError("this string method is not available in prompts")
            if method == "join" and args:
                args = (list(args[0]), *args[1:])
                _check_join(owner, args[0])
            if method == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
        result = _check_len(super().call(__context, __obj, *args, **kwargs))
        _spend(_work_of(result))
        return result

    def wrap_str_format(self, value: Any) -> Any:
        # str.format/format_map can pad to any width; the sandbox allows them otherwise.
        if super().wrap_str_format(value) is None:
            return None

        def refuse(*args: Any, **kwargs: Any) -> str:
            raise SecurityError("string formatting is not available in prompts")

        return refuse


def _bounded_filter(original: Any) -> Any:
    # functools.wraps keeps Jinja's pass_context/pass_eval_context marker.
    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        return _check_len(original(*args, **kwargs))

    return bounded


def _check_join(separator: Any, items: list) -> None:
    size = len(str(separator)) * max(len(items) - 1, 0) + sum(len(str(item)) for item in items)
    if size > _MAX_VALUE_LEN:
        raise SecurityError("value too large")


def _check_replace(text: Any, old: Any, new: Any) -> None:
    text, old, new = str(text), str(old), str(new)
    count = text.count(old) if old else len(text) + 1
    if len(text) + count * len(new) > _MAX_VALUE_LEN:
        raise SecurityError("value too large")


def _join_filter(original: Any) -> Any:
    @functools.wraps(original)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(value)
        if attribute is None:
            _check_join(d, items)
        return _check_len(original(eval_ctx, items, d, attribute))

    return join


def _replace_filter(original: Any) -> Any:
    @functools.wraps(original)
    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        _check_replace(s, old, new)
        return original(eval_ctx, s, old, new, count)

    return replace


def _tojson_filter(original: Any) -> Any:
    @functools.wraps(original)
    def tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
        if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 8):
            raise SecurityError("tojson indents by 8 at most in prompts")
        return _check_len(original(eval_ctx, value, indent))

    return tojson


# Work a value costs to go through a filter or method: a unit per this many items or
# characters, so a loop of sorts over a large list runs out of budget, not for hours.
_ITEMS_PER_UNIT = 100
_SIZED = (str, list, tuple, dict, set, frozenset, range)


def _work_of(value: Any) -> int:
    return len(value) // _ITEMS_PER_UNIT if isinstance(value, _SIZED) else 0


# Filters that look at a value without walking it: a unit each, whatever its size.
_CONSTANT_TIME_FILTERS = frozenset(
    "length count first default d int float abs round bool e escape safe attr".split()
)


def _costed_filter(original: Any) -> Any:
    """`original`, spending a unit plus the size of its value and of its result."""
    # Marked by Jinja's pass_context (and the like), it takes that first, then the value.
    value_at = 1 if getattr(original, "jinja_pass_arg", None) else 0

    @functools.wraps(original)
    def costed(*args: Any, **kwargs: Any) -> Any:
        _spend(1 + (_work_of(args[value_at]) if len(args) > value_at else 0))
        result = original(*args, **kwargs)
        _spend(_work_of(result))
        return result

    return costed


def _make_environment() -> PromptEnvironment:
    env = PromptEnvironment(
        undefined=ChainableUndefined,
        autoescape=False,  # prompts are plain text for an LLM, not HTML
        keep_trailing_newline=True,
        cache_size=400,
        finalize=_shown,
    )
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    # Lorem ipsum loops over a word count it is given before any bound applies.
    env.globals.pop("lipsum", None)
    env.filters["tojson"] = _tojson_filter(env.filters["tojson"])
    env.filters["list"] = _bounded_filter(env.filters["list"])
    env.filters["join"] = _join_filter(env.filters["join"])
    env.filters["replace"] = _replace_filter(env.filters["replace"])
    for name, original in list(env.filters.items()):
        if name not in _CONSTANT_TIME_FILTERS:
            env.filters[name] = _costed_filter(original)
    env.filters["_loop_budget"] = _loop_budget
    env.filters["_bounded_concat"] = _bounded_concat
    return env


_env = _make_environment()


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    # Compiling costs far more than rendering; a session renders the same few prompts.
    return _env.from_string(source)


def template_error(source: str) -> str | None:
    """Why `source` is not a valid prompt template (syntax, unknown filter), or None."""
    try:
        _env.from_string(source)
    except TemplateSyntaxError as exc:
        return f"Template syntax error on line {exc.lineno}: {exc.message}"
    except TemplateError as exc:
        return f"Template error: {exc.message}"
    except (SyntaxError, RecursionError, ValueError, OverflowError, MemoryError):
        # Jinja compiles a template to Python: what Python refuses to compile (a repeated
        # argument, blocks nested too deep, a number too long) is the template's error.
        return "Template error: it cannot be compiled (nested too deep, a repeated argument?)."
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
    token = _budget.set([_MAX_WORK])
    try:
        template = _compiled(source)
        parts: list[str] = []
        size = 0
        # Streamed so a loop cannot pile up more than the bound before we stop it.
        for chunk in template.generate(context):
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                break
        return "".join(parts)[:MAX_RENDERED_CHARS]
    except Exception as exc:
        # Whatever a template does (sandbox violation, bad operand, exhausted budget), the
        # call must still start: the prompt renders empty. The message may quote user
        # data, so only the kind of failure is logged.
        logger.warning("prompt template failed to render: %s", type(exc).__name__)
        return ""
    finally:
        _budget.reset(token)


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
