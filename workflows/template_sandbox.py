"""The sandbox prompt templates render in (`workflows.prompts` says what a prompt may
do): Jinja2's immutable sandbox, with operators, filters (`workflows.template_filters`),
string methods, loops and captures held to the bounds of `workflows.template_bounds` (a
work budget and a deadline per render, `render_budget`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import ChainableUndefined, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from workflows.template_bounds import (
    MAX_POWER_BITS,
    MAX_VALUE_LEN,
    check_join,
    check_len,
    check_replace,
    check_walked,
    spend,
    spent_on,
    value_size,
    work_of,
)
from workflows.template_filters import WRONG_TYPE, filters_install

# str methods a prompt may call; the others (ljust, zfill, expandtabs, format, ...) can
# pad or multiply without bound.
_SAFE_STR_METHODS = frozenset(
    "capitalize casefold count endswith find index isalnum isalpha isdecimal isdigit "
    "islower isnumeric isspace istitle isupper lower lstrip partition removeprefix "
    "removesuffix rfind rindex rpartition rsplit rstrip split splitlines startswith "
    "strip swapcase title upper replace join".split()
)


def _loop_budget(iterable: Any) -> Iterator[Any]:
    try:
        items = iter(iterable)
    except TypeError:
        return  # (not iterable: no iterations, and a loop's `else` renders)
    for item in items:
        spend()
        yield item


_COMPARISONS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda left, right: left in right,
    "notin": lambda left, right: left not in right,
}


def _compared(left: Any, *operations: Any) -> bool:
    """A comparison (`a < b`, `a in b`, chained), each operand costing a unit plus its
    size (and a look at the clock) before it is walked. One Python cannot make (a text
    and a number ordered) does not hold, as with a missing value."""
    for operand in (left, *operations[1::2]):
        spend(1 + work_of(operand))
    for op, right in zip(operations[::2], operations[1::2], strict=True):
        try:
            if not _COMPARISONS[op](left, right):
                return False
        except WRONG_TYPE:
            return False
        left = right
    return True


def _shown(value: Any) -> Any:
    """What a value prints as: a null as nothing, a dict method a key of the same name
    shadows (`{{ user.items }}`: Jinja finds the method first, and calling it,
    `metadata.items()`, must still work) as that key's value, other callables and
    unconsumed iterators (`select`, `map` without `| list`) as nothing."""
    if value is None or isinstance(value, Iterator):
        return ""  # (an iterator's str is its repr, with a memory address)
    check_walked(value)
    if callable(value):
        owner = getattr(value, "__self__", None)
        name = getattr(value, "__name__", None)
        if isinstance(owner, Mapping) and name in owner:
            return owner[name]
        return ""  # a method or function printed: a Python repr, never prompt text
    return value


def _bounded_concat(values: list) -> str:
    return check_len("".join(str(_shown(value)) for value in values))


def _captured(chunks: Iterator[str]) -> str:
    """What a `{% set %}` block, a macro or `caller()` captured, stopped at the value
    bound (the output's own cut applies only to what is streamed out)."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_VALUE_LEN:
            raise SecurityError("value too large")
        parts.append(chunk)
    return "".join(parts)


class _Bounded(NodeTransformer):
    """Rewrites a parsed template so every loop iteration spends the work budget and
    every `~` concatenation is size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_loop_budget", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        # `in` and `==` walk their operands: each costs by their size, as a filter does.
        self.generic_visit(node)
        operations: list[nodes.Expr] = []
        for operand in node.ops:
            operations += [nodes.Const(operand.op, lineno=node.lineno), operand.expr]
        return nodes.Filter(node.expr, "_compared", operations, [], None, None, lineno=node.lineno)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        if node.ctx != "load":  # (`{% for a, b in ... %}` names, not a value)
            return node
        return self._built(node)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return self._built(node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return self._built(node)

    @staticmethod
    def _built(expr: nodes.Expr) -> nodes.Expr:
        return nodes.Filter(expr, "_built", [], [], None, None, lineno=expr.lineno)

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(items, "_bounded_concat", [], [], None, None, lineno=node.lineno)


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox (no internals, no mutating lists/dicts) plus bounded operators,
    filters, string methods, loops and calls."""

    intercepted_binops = frozenset(["*", "**", "%", "+", "-", "/", "//"])
    intercepted_unops = frozenset(["-", "+"])
    concat = staticmethod(_captured)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Bounded().visit(super()._parse(source, name, filename))

    def getitem(self, obj: Any, argument: Any) -> Any:
        # (A slice copies: a unit per slice and the clock, as any step.)
        spend(isinstance(argument, slice))
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        try:
            return self._binop(op, left, right)
        except WRONG_TYPE:
            return self.undefined()

    def call_unop(self, context: Any, op: str, arg: Any) -> Any:
        try:
            return super().call_unop(context, op, arg)
        except WRONG_TYPE:
            return self.undefined()

    def _binop(self, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            if isinstance(right, int | float) and isinstance(left, int | float):
                size = max(abs(int(left)), 2).bit_length() * abs(right)
                if size > MAX_POWER_BITS:
                    raise SecurityError("power too large")
            return operator.pow(left, right)
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if value_size(seq) * times > MAX_VALUE_LEN:
                        raise SecurityError("repetition too large")
            if isinstance(left, int) and isinstance(right, int):
                # Squaring a number again and again reaches any size a power would.
                if left.bit_length() + right.bit_length() > MAX_POWER_BITS:
                    raise SecurityError("product too large")
            return spent_on(operator.mul(left, right))
        if op == "+":
            return spent_on(check_len(operator.add(left, right)))
        if op == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting is not available in prompts")
            return operator.mod(left, right)
        return self.binop_table[op](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, Undefined):
            # A missing value called (`user.email.lower()`, `now()`) is missing too, as
            # at any depth; raising would empty the whole prompt.
            spend()
            return __obj
        owner = getattr(__obj, "__self__", None)
        spend(1 + work_of(owner))
        if isinstance(__obj, LoopContext):
            # A recursive loop's `loop(items)` iterates items its For node's budget
            # (`_Bounded.visit_For`) never sees: each spends, as the first level's do.
            if args:
                args = (_loop_budget(args[0]), *args[1:])
            if "iterable" in kwargs:
                kwargs["iterable"] = _loop_budget(kwargs["iterable"])
        if isinstance(owner, int | float | bytes):
            # (1).to_bytes(10**9, "big") and the like build values without bound.
            raise SecurityError("number methods are not available in prompts")
        if isinstance(owner, str):
            method = getattr(__obj, "__name__", "")
            if method not in _SAFE_STR_METHODS:
                raise SecurityError("this string method is not available in prompts")
            if method == "join" and args:
                args = (list(args[0]), *args[1:])
                check_join(owner, args[0])
            if method == "replace" and len(args) >= 2:
                check_replace(owner, args[0], args[1])
        try:
            result = check_len(super().call(__context, __obj, *args, **kwargs))
        except WRONG_TYPE:
            return __self.undefined()
        spend(work_of(result))
        return result

    def wrap_str_format(self, value: Any) -> Any:
        # str.format/format_map can pad to any width; the sandbox allows them otherwise.
        if super().wrap_str_format(value) is None:
            return None

        def refuse(*args: Any, **kwargs: Any) -> str:
            raise SecurityError("string formatting is not available in prompts")

        return refuse


def _built(value: Any) -> Any:
    """A tuple, list or dict a template writes out: held to the value bound as it is
    made. Holding another twice at each level, a few bytes nest 2**depth leaves, which
    one hash or `==` walks in C, where no deadline is looked at."""
    return spent_on(check_len(value))


class MissingValue(ChainableUndefined):
    """A value user_data or metadata lacks: it renders empty at any depth, compared it
    is neither more nor less than anything, in arithmetic it is missing again. Raising,
    it emptied the whole prompt for every caller without that value."""

    __slots__ = ()

    def _missing(self, *args: Any, **kwargs: Any) -> MissingValue:
        return self

    def _neither(self, other: Any) -> bool:
        return False

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _missing
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _missing
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = _missing
    __lt__ = __le__ = __gt__ = __ge__ = _neither


def _make_environment() -> PromptEnvironment:
    env = PromptEnvironment(
        undefined=MissingValue,
        autoescape=False,  # prompts are plain text for an LLM, not HTML
        keep_trailing_newline=True,
        cache_size=400,
        finalize=_shown,
        # Jinja's optimizer folds constants by trying every subexpression again at every
        # level of an expression, cubic in its depth: a prompt of long filter or
        # attribute chains (`{{ a|e|e|...|e }}`) compiled for minutes, and compiling
        # cannot be interrupted. Folding saves nothing a prompt would notice.
        optimized=False,
    )
    filters_install(env, missing=MissingValue)
    # Lorem ipsum loops over a word count it is given before any bound applies.
    env.globals.pop("lipsum", None)
    # A cycler's `items` is the tuple of its arguments: `cycler(t, t).items` nests a value
    # in itself as `(t, t)` does, past `_built` (a prompt alternates with `loop.cycle`).
    env.globals.pop("cycler", None)
    env.filters["_loop_budget"] = _loop_budget
    env.filters["_bounded_concat"] = _bounded_concat
    env.filters["_compared"] = _compared
    env.filters["_built"] = _built
    return env


environment = _make_environment()
