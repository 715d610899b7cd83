"""Prompt templates: Jinja2 in a sandbox, for text an organization writes and its end
users' data fills.

- `{{ user.* }}` is the call's `user_data`, `{{ metadata.* }}` its metadata, `{{ call.id }}`
  its id. Values are data, never templates: `{{ 7*7 }}` inside user_data stays verbatim.
- A missing value renders empty, at any depth (`{{ user.address.city }}`), called
  (`{{ user.email.lower() }}`, `{{ now() }}`) or in arithmetic; compared, it is neither
  more nor less than anything (`{% if user.age > 17 %}` is false). So
  `{{ user.name | default("there") }}` works; a null prints empty too. Printed, a key
  shows rather than a dict method of its name (`{{ user.items }}`), which stays callable
  (`metadata.items()`); no other method or function prints.
- A value of another type than the template expects (`"age": "20"` compared with 18, a
  loop over null, `"9.5" | round`, a division by a zero count) is missing where it is
  used, as an absent value is: the rest of the prompt renders.
- The sandbox blocks Python internals (`__class__`, `__globals__`, ...). A template that
  still trips it, or fails at runtime for any other reason, renders empty: a call must
  start, and an attacker must learn nothing from the result.
- Operators, filters and methods that could build huge values from a short template
  (`'a' * 10**9`, `9 ** 9 ** 9`, a number squared again and again, `'%999999999d' % 1`,
  `center(10**9)`, `tojson(indent=10**5)`, `(1).to_bytes(10**9, "big")`, `lipsum`) are
  refused or size-checked, nested values by all they hold (`[a] * 1000` of a long `a`
  prints as a huge string); loop iterations, calls, filters and `*`/`+` share a work
  budget per render (nested loops, exponential macros, sorting a large list again and
  again: a filter or method costs by the size of what it takes and makes), and a render
  stops after `MAX_RENDER_SECONDS` whatever it does (a session's renders all together
  after `MAX_SESSION_RENDER_SECONDS`); output is cut at
  `MAX_RENDERED_CHARS`, and what a block or macro captures at the value bound.
- Compiling is bounded before it starts: a template holds at most `MAX_TEMPLATE_TOKENS`
  tokens nested at most `MAX_TEMPLATE_DEPTH` deep (a 400 at save time; one saved before
  the bounds renders empty).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.lexer import ignored_tokens

from workflows.template_bounds import render_budget, renders_within
from workflows.template_sandbox import environment

logger = logging.getLogger(__name__)

MAX_TEMPLATE_CHARS = 20_000
# Compiling a template cannot be interrupted, and it costs by the template's tokens
# (names, operators, literals, tag delimiters; the text between two tags is one) and,
# for some blocks, by the square of how deep they nest. Both are bounded before anything
# is compiled, so the forty-odd templates of a workflow compile in about a second at
# worst. Real prompts hold a few dozen tokens (a hundred variables, or forty
# conditions, are some 500), nested a few levels.
MAX_TEMPLATE_TOKENS = 500
MAX_TEMPLATE_DEPTH = 32
# All of a workflow's templates together (its agents' instructions and greetings, its
# voicemail message, its analysis prompt): forty-two at the bound above compile for a
# second, on every write. Ten at the bound is more than real workflows hold.
MAX_WORKFLOW_TEMPLATE_TOKENS = 5_000
# Whitespace and comments do not count above, but lexing them costs all the same: a
# template of empty comments counted three tokens and took 20 ms to lex, each time.
# Real templates lex fewer than two tokens per counted one.
MAX_LEXED_TOKENS = 4 * MAX_TEMPLATE_TOKENS
_OPENING = frozenset("([{")
_CLOSING = frozenset(")]}")

MAX_RENDERED_CHARS = 64 * 1024
# All the prompts of one session or preview (up to forty-one) together: real ones take
# milliseconds, and hostile ones must not hold a worker for forty times a render's bound.
MAX_SESSION_RENDER_SECONDS = 2.0


class TemplateTooComplex(TemplateError):
    """A template past the bounds compiling is allowed (`MAX_TEMPLATE_TOKENS`,
    `MAX_TEMPLATE_DEPTH`)."""


def _tokens(source: str, *, lexed_max: int | None) -> Iterator[tuple[int, str, str]]:
    """What compiling costs by: whitespace and comments aside, lexed as it is read, and
    no further than `lexed_max` in all (TemplateTooComplex)."""
    for lexed, token in enumerate(environment.lex(source), start=1):
        if lexed_max is not None and lexed > lexed_max:
            raise TemplateTooComplex(
                f"Template too complex: more than {MAX_LEXED_TOKENS:,} tokens counting "
                "whitespace and comments."
            )
        if token[1] not in ignored_tokens:
            yield token


@functools.lru_cache(maxsize=256)
def template_tokens(source: str) -> int:
    """How many tokens `source` holds, counted no further than MAX_TEMPLATE_TOKENS (one
    past a bound counts at it: `template_error` says what is wrong); what cannot be
    lexed ends the count."""
    count = 0
    try:
        for _ in islice(_tokens(source, lexed_max=MAX_LEXED_TOKENS), MAX_TEMPLATE_TOKENS):
            count += 1
    except TemplateTooComplex:
        return MAX_TEMPLATE_TOKENS
    except TemplateError:
        pass
    return count


def _parsed(source: str, *, lexed_max: int | None = None) -> nodes.Template:
    """`source` parsed, once its tokens (lexed no further than the bound) and then its
    nesting are known to be within what compiling is allowed. A write bounds lexing
    too (`lexed_max`); a render does not, so a template saved before that bound (which
    compiles quickly enough, and once per process) still renders."""
    tokens = _tokens(source, lexed_max=lexed_max)
    brackets = 0
    for _, kind, value in islice(tokens, MAX_TEMPLATE_TOKENS):
        # The parser recurses a dozen Python frames into each bracket, and parentheses
        # leave no node for the tree's check below: bounded here, where parsing does not
        # yet fail for a lack of stack (or pass or fail by how deep its caller's is).
        if kind == "operator" and value in _OPENING:
            brackets += 1
            if brackets > MAX_TEMPLATE_DEPTH:
                raise _too_deep()
        elif kind == "operator" and value in _CLOSING:
            brackets -= 1
    if next(tokens, None) is not None:
        raise TemplateTooComplex(
            f"Template too complex: more than {MAX_TEMPLATE_TOKENS:,} tokens (each name, "
            "operator, literal and tag delimiter counts; the text between tags counts once)."
        )
    tree = environment.parse(source)
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TEMPLATE_DEPTH:
            raise _too_deep()
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return tree


def _too_deep() -> TemplateTooComplex:
    return TemplateTooComplex(
        f"Template too complex: nested more than {MAX_TEMPLATE_DEPTH} levels deep "
        "(blocks within blocks, brackets, chains of filters, attributes or operators)."
    )


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    # Compiling costs far more than rendering; a session renders the same few prompts.
    # A template saved before the bounds existed and past them renders empty.
    return environment.from_string(_parsed(source))


_OTHER_TEMPLATES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


# The admin validates a definition twice (its form, then the service it calls), and a
# PATCH revalidates templates it did not change.
@functools.lru_cache(maxsize=256)
def template_error(source: str) -> str | None:
    """Why `source` is not a valid prompt template (syntax, unknown filter, too complex
    to compile), or None."""
    try:
        tree = _parsed(source, lexed_max=MAX_LEXED_TOKENS)
        if tree.find(_OTHER_TEMPLATES) is not None:
            # No other template exists: rendering would fail, and the prompt be empty.
            return "Template error: include, import and extends are not available in prompts."
        environment.compile(tree)
    except TemplateTooComplex as exc:
        return exc.message
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
    try:
        template = _compiled(source)  # (compiling, once per process, is not rendering)
        with render_budget():
            return _rendered(template, context)
    except Exception as exc:
        # Whatever a template does (sandbox violation, bad operand, exhausted budget), the
        # call must still start: the prompt renders empty. The message may quote user
        # data, so only the kind of failure is logged.
        logger.warning("prompt template failed to render: %s", type(exc).__name__)
        return ""


def _rendered(template: Template, context: Mapping[str, Any]) -> str:
    parts: list[str] = []
    size = 0
    # Streamed so a loop cannot pile up more than the bound before we stop it.
    for chunk in template.generate(context):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_RENDERED_CHARS:
            break
    return "".join(parts)[:MAX_RENDERED_CHARS]


def agents_rendered(*, definition: dict, context: Mapping[str, Any]) -> list[dict]:
    """A version's agents with `instructions` and `greeting` rendered for one call."""
    with renders_within(MAX_SESSION_RENDER_SECONDS):
        return [
            {
                **agent,
                "instructions": render(agent.get("instructions", ""), context),
                "greeting": render(agent.get("greeting", ""), context),
            }
            for agent in definition.get("agents", [])
        ]
