"""The bounds a prompt render works within (`workflows.template_sandbox` applies them):
how large a value may grow, the work units one render may spend, and its deadline
(`render_budget`), which the renders of one session share as well (`renders_within`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2.exceptions import SecurityError

# Bounds so a short template cannot make the service allocate or compute without
# limit: the longest string or list an expression may build, the largest power, and
# the work units (loop iterations plus calls) one render may spend.
MAX_VALUE_LEN = 100_000
MAX_POWER_BITS = 4096
_MAX_WORK = 20_000
# What no bound above foresaw still ends (and a session's renders share a deadline too,
# `renders_within`). Real prompts render in milliseconds; compiling (once per process)
# is not counted.
MAX_RENDER_SECONDS = 0.5

# The render's work units left, and its deadline (time.monotonic()).
_budget: ContextVar[list[float] | None] = ContextVar("prompt_work_budget", default=None)
# A deadline the renders of one session share (`renders_within`), so forty hostile
# prompts cannot hold a worker forty times MAX_RENDER_SECONDS.
_shared_deadline: ContextVar[float | None] = ContextVar("prompt_renders_deadline", default=None)


def spend(units: int = 1) -> None:
    """Spend work units of the current render (none outside one), and look at the clock."""
    budget = _budget.get()
    if budget is None:
        return
    budget[0] -= units
    if budget[0] < 0:
        raise SecurityError("the template does too much work")
    if time.monotonic() > budget[1]:
        raise SecurityError("the template takes too long")


def value_size(value: Any, limit: int = MAX_VALUE_LEN) -> int:
    """The characters and items in `value`, those nested in it included (what printing
    it walks), counted until past `limit`."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            total += len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, range):
            total += len(item)
    return total


def check_len(value: Any) -> Any:
    if value_size(value) > MAX_VALUE_LEN:
        raise SecurityError("value too large")
    return value


def check_walked(value: Any) -> Any:
    """A value about to be walked whole (printed, or given to a filter): a string is
    no larger walked than held, but a list may hold one long string many times."""
    return value if isinstance(value, str) else check_len(value)


def check_join(separator: Any, items: list) -> None:
    size = len(str(separator)) * max(len(items) - 1, 0) + sum(len(str(item)) for item in items)
    if size > MAX_VALUE_LEN:
        raise SecurityError("value too large")


def check_replace(text: Any, old: Any, new: Any) -> None:
    text, old, new = str(text), str(old), str(new)
    count = text.count(old) if old else len(text) + 1
    if len(text) + count * len(new) > MAX_VALUE_LEN:
        raise SecurityError("value too large")


# Work a value costs to go through a filter or method: a unit per this many items or
# characters, so a loop of sorts over a large list runs out of budget, not for hours.
_ITEMS_PER_UNIT = 100
_SIZED = (str, list, tuple, dict, set, frozenset, range)


def work_of(value: Any) -> int:
    return len(value) // _ITEMS_PER_UNIT if isinstance(value, _SIZED) else 0


def spent_on(value: Any) -> Any:
    """`value`, made by an operator: it costs by its size, as a filter's result does."""
    spend(1 + work_of(value))
    return value


@contextmanager
def render_budget() -> Iterator[None]:
    """One render's work budget and deadline, for the sandbox's bounds to spend."""
    deadline = time.monotonic() + MAX_RENDER_SECONDS
    shared = _shared_deadline.get()
    token = _budget.set([_MAX_WORK, deadline if shared is None else min(deadline, shared)])
    try:
        yield
    finally:
        _budget.reset(token)


@contextmanager
def renders_within(seconds: float) -> Iterator[None]:
    """Every render in this block stops `seconds` from now at the latest (each keeps its
    own bounds too); nested blocks keep the earlier deadline."""
    deadline = time.monotonic() + seconds
    outer = _shared_deadline.get()
    token = _shared_deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _shared_deadline.reset(token)
