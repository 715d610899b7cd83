"""The filters and tests a prompt may use (`workflows.template_sandbox` installs them,
`filters_install`): Jinja's own, less those that build values without bound; those that
build strings held to the value bound; every one that walks its value costed by the work
budget (`workflows.template_bounds`); and each tolerant of a value of the wrong type.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, Undefined
from jinja2.exceptions import FilterArgumentError, SecurityError

from workflows.template_bounds import (
    check_join,
    check_len,
    check_replace,
    check_walked,
    spend,
    work_of,
)

# Filters whose arguments can build huge values or loop a given number of times.
_REMOVED_FILTERS = ("center", "indent", "wordwrap", "format", "xmlattr", "slice", "batch")

# What Python raises for a value of another type than the template expects (`"20" >= 18`
# from a customer's app, a loop over null, `"9.5" | round`, a division by a zero count):
# the value is missing there, as an absent one is, and the rest of the prompt renders.
# Raised, it emptied the whole prompt: the agent ran the call without instructions.
WRONG_TYPE = (
    TypeError,
    ValueError,
    ArithmeticError,
    AttributeError,  # (`dictsort` of a list)
    LookupError,  # (`random` of a dict)
    FilterArgumentError,  # (`reverse` of a number)
)


def filters_install(env: Environment, *, missing: type[Undefined]) -> None:
    """Jinja's filters and tests in `env`, bounded: the unbounded ones removed, those
    that build strings held to the value bound, every filter but the constant-time ones
    costed, and each answering `missing` (a test: false) where the value's type is wrong."""
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.filters["tojson"] = _tojson_filter(env.filters["tojson"])
    env.filters["list"] = _bounded_filter(env.filters["list"])
    env.filters["join"] = _join_filter(env.filters["join"])
    env.filters["replace"] = _replace_filter(env.filters["replace"])
    for name, original in list(env.filters.items()):
        if name not in _CONSTANT_TIME_FILTERS:
            original = _costed_filter(original)
        env.filters[name] = _tolerant(original, missing)
    for name, original in list(env.tests.items()):
        env.tests[name] = _tolerant(original, bool)


def _tolerant(original: Any, missing: Any) -> Any:
    """A filter or test that answers `missing` where Python refuses the value's type."""

    @functools.wraps(original)
    def tolerant(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except WRONG_TYPE:
            return missing()

    return tolerant


def _bounded_filter(original: Any) -> Any:
    # functools.wraps keeps Jinja's pass_context/pass_eval_context marker.
    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        return check_len(original(*args, **kwargs))

    return bounded


def _join_filter(original: Any) -> Any:
    @functools.wraps(original)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(value)
        if attribute is None:
            check_join(d, items)
        return check_len(original(eval_ctx, items, d, attribute))

    return join


def _replace_filter(original: Any) -> Any:
    @functools.wraps(original)
    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        check_replace(s, old, new)
        return original(eval_ctx, s, old, new, count)

    return replace


def _tojson_filter(original: Any) -> Any:
    @functools.wraps(original)
    def tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
        if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 8):
            raise SecurityError("tojson indents by 8 at most in prompts")
        return check_len(original(eval_ctx, value, indent))

    return tojson


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
        if len(args) > value_at:
            # (`tojson`, `string`, `sum` walk all a nested value holds before any check.)
            spend(1 + work_of(check_walked(args[value_at])))
        else:
            spend()
        result = original(*args, **kwargs)
        spend(work_of(result))
        return result

    return costed
