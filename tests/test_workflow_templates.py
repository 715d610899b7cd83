from __future__ import annotations

import pytest

from workflows.prompts import (
    MAX_RENDERED_CHARS,
    agents_rendered,
    render,
    template_context,
    template_error,
)

CONTEXT = template_context(
    user_data={"name": "Ada", "address": {"city": "Paris"}, "tags": ["a", "b"]},
    metadata={"source": "app", "n": 3},
    call_id="c-1",
)


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("Hi {{ user.name }}", "Hi Ada"),
        ("Hi {{user.name}}", "Hi Ada"),
        ("{{ user.address.city }}", "Paris"),
        ("{{ user['address']['city'] }}", "Paris"),
        ("{{ metadata.source }}/{{ metadata.n + 1 }}", "app/4"),
        ("{{ call.id }}", "c-1"),
        ("{{ user.tags | join(', ') }}", "a, b"),
        ("{% if user.name %}yes{% else %}no{% endif %}", "yes"),
        ("{{ user.name | upper }}", "ADA"),
        ("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 7 % 3 }}", "ababab 1024 1"),
        ("plain text", "plain text"),
        ("", ""),
        ("trailing\n", "trailing\n"),
        ("<b>{{ user.name }}</b> & co", "<b>Ada</b> & co"),  # no HTML escaping
    ],
)
def test_it_renders_user_metadata_and_call(source: str, rendered: str) -> None:
    assert render(source, CONTEXT) == rendered


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("Hi {{ user.missing }}!", "Hi !"),
        ("{{ user.missing.deeper.still }}", ""),
        ("{{ user.missing['x'] }}", ""),
        ("{{ metadata.nothing }}", ""),
        ('Hello {{ user.missing | default("there") }}', "Hello there"),
        ('{{ user.address.zip | default("none") }}', "none"),
        ("{% if user.missing %}yes{% else %}no{% endif %}", "no"),
        ("{{ nobody }}", ""),
        # A missing value called is missing too: the call failed, and the whole prompt
        # with it, for every caller without that value.
        ("Hi {{ user.missing.title() }}!", "Hi !"),
        ('{{ user.email.lower() | default("no email") }}', "no email"),
        ("Today is {{ now() }}.", "Today is ."),
        # Compared, it is not more nor less than anything; in arithmetic, missing again.
        (
            "{% if user.age >= 18 %}adult{% else %}unknown{% endif %}, {{ user.name }}",
            "unknown, Ada",
        ),
        ("{% if 3 < user.age %}x{% endif %}ok", "ok"),
        ("[{{ user.age + 1 }}|{{ -user.age }}|{{ user.age * 2 }}|{{ 10 / user.age }}]", "[|||]"),
    ],
)
def test_missing_values_render_empty_and_default_works(source: str, rendered: str) -> None:
    assert render(source, CONTEXT) == rendered


@pytest.mark.parametrize(
    "source",
    [
        "{{ user.__class__ }}",
        "{{ user.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ self.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ request }}{{ config }}{{ settings }}",
        "{{ user.items.__self__ }}",
        "{{ (user.name).__class__.__base__.__subclasses__() }}",
        "{{ user.tags.append('x') }}{{ user.tags }}",
        "{{ user.pop('name') }}",
        "{{ '{0.__class__}'.format(user) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ 'a' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{{ ((2 ** 64) ** 64) ** 64 }}",
        "{{ 10 ** 100000 }}",
        "{% for i in range(1000000000) %}{% endfor %}",
        # nested loops, recursion and doubling that print nothing or little
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set l = [0] * 10000 %}{% for a in l %}{% for b in l %}{% for c in l %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(60) }}",
        "{% for x in [1] recursive %}{{ loop([1, 2]) }}{% endfor %}",
        "{% set a = 'x' * 10000 %}" + "{% set a = a ~ a %}" * 40 + "{{ a | length }}",
        "{% set a = 'x' * 10000 %}" + "{% set a = a + a %}" * 40 + "{{ a | length }}",
        "{% set a = ['x'] * 10000 %}" + "{% set a = a + a %}" * 40 + "{{ a | length }}",
        "{{ ('x' * 10000).ljust(1000000000) }}",
        "{{ ('x' * 10000).zfill(1000000000) }}",
        "{{ ('x\t' * 10000).expandtabs(100000) }}",
        "{{ ('x' * 10000).replace('x', 'y' * 10000) }}",
        "{{ ('x' * 10000) | replace('x', 'y' * 10000) }}",
        "{{ (['y' * 10000] * 10000) | join }}",
        "{{ ('y' * 10000).join(['x'] * 10000) }}",
        "{{ range(100000) | list | slice(1000000000) }}",
        # doors the bounds above did not watch (found by a review)
        "{{ (range(1000) | list | tojson(indent=100000)) | length }}",
        "{{ (1).to_bytes(1000000000, 'big') | length }}",
        "{% set a = 2 ** 2000 %}" + "{% set a = a * a %}" * 40 + "{{ a.bit_length() }}",
        "{{ lipsum(1, False, 100000000, 100000001) | length }}",
    ],
)
def test_python_internals_and_resource_bombs_render_nothing_harmful(source: str) -> None:
    rendered = render(source, CONTEXT)

    for leak in ("class", "module", "function", "built-in", "method", "uid=", "Ada"):
        assert leak not in rendered
    assert len(rendered) <= 100


def test_a_template_cannot_change_the_data_it_reads() -> None:
    user = {"name": "Ada", "tags": ["a"]}
    context = template_context(user_data=user, metadata={}, call_id="c")

    render("{{ user.tags.append('x') }}{{ user.update({'name': 'Eve'}) }}", context)

    assert user == {"name": "Ada", "tags": ["a"]}


def test_output_is_bounded() -> None:
    source = (
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}"
    )

    rendered = render(source, CONTEXT)

    assert len(rendered) == MAX_RENDERED_CHARS


@pytest.mark.parametrize(
    "value",
    [
        "{{ 7*7 }}",
        "{% raw %}{% endraw %}{{ cycler.__init__.__globals__ }}",
        "{% for i in range(1000000000) %}x{% endfor %}",
        "}}{{",
        "\x00",
    ],
)
def test_values_are_never_evaluated(value: str) -> None:
    context = template_context(user_data={"name": value}, metadata={}, call_id="c")

    assert render("Hi {{ user.name }}", context) == f"Hi {value}"


def test_huge_and_nested_values_do_not_crash() -> None:
    deep: dict = {}
    node = deep
    for _ in range(500):
        node["x"] = {}
        node = node["x"]
    context = template_context(
        user_data={"big": "y" * 1_000_000, "deep": deep}, metadata={}, call_id="c"
    )

    assert len(render("{{ user.big }}", context)) == MAX_RENDERED_CHARS
    assert render("{{ user.deep.x.x.x.x.missing }}", context) == ""
    rendered = render("{{ user.deep }}", context)
    assert isinstance(rendered, str)


@pytest.mark.parametrize("user_data", [None, [], "text", 3])
def test_non_object_user_data_is_treated_as_empty(user_data: object) -> None:
    context = template_context(user_data=user_data, metadata=None, call_id="c")

    assert render("Hi {{ user.name | default('there') }}", context) == "Hi there"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ user.name ", "line 1"),
        ("ok\n{% if %}", "line 2"),
        ("{% for x in y %}", "line 1"),
        ("{{ user.name | no_such_filter }}", "no_such_filter"),
        ("{{ user.name | center(9) }}", "center"),
        ("{% endif %}", "line 1"),
        # No other template exists: each rendered the whole prompt empty on every call.
        ('Hi {{ user.name }}{% include "footer" %}', "include"),
        ('{% import "macros" as m %}Hi', "import"),
        ('{% from "macros" import greet %}Hi', "import"),
        ('{% extends "base" %}', "extends"),
    ],
)
def test_template_error_explains_syntax_errors(source: str, message: str) -> None:
    error = template_error(source)

    assert error is not None and message in error


@pytest.mark.parametrize("source", ["", "plain", "{{ user.name }}", "{{ 9 ** 9 ** 9 ** 9 }}"])
def test_template_error_accepts_valid_templates(source: str) -> None:
    # Validation compiles but never runs a template: nothing is evaluated at save time.
    assert template_error(source) is None


def test_agents_rendered_renders_only_the_prompts() -> None:
    definition = {
        "agents": [
            {
                "name": "a",
                "instructions": "I {{ user.name }}",
                "greeting": "G {{ call.id }}",
                "tools": [{"name": "t", "description": "{{ user.name }}"}],
            }
        ]
    }

    (agent,) = agents_rendered(definition=definition, context=CONTEXT)

    assert agent["instructions"] == "I Ada"
    assert agent["greeting"] == "G c-1"
    assert agent["tools"] == [{"name": "t", "description": "{{ user.name }}"}]
    assert definition["agents"][0]["instructions"] == "I {{ user.name }}"


@pytest.mark.parametrize("key", ["items", "values", "keys", "get"])
def test_a_key_named_like_a_dict_method_renders_its_value(key: str) -> None:
    """Jinja looks an attribute up before a key: `{{ user.items }}` printed the dict's
    method (a Python repr and a memory address) into the prompt."""
    context = template_context(user_data={key: "3 apples"}, metadata={key: "m"}, call_id="c")

    assert render(f"{{{{ user.{key} }}}}/{{{{ metadata.{key} }}}}", context) == "3 apples/m"


def test_dict_methods_still_work_when_a_key_has_their_name() -> None:
    """A key winning over the method, even when called, blanked the whole prompt."""
    context = template_context(
        user_data={"get": "x", "name": "Bob"}, metadata={"items": ["book"]}, call_id="c"
    )
    source = "{% for k, v in metadata.items() %}{{ k }}={{ v }};{% endfor %}{{ user.get('name') }}"

    assert render(source, context) == "items=['book'];Bob"


def test_a_method_printed_where_no_key_has_its_name_renders_empty() -> None:
    assert render("[{{ user.keys }}]", CONTEXT) == "[]"


@pytest.mark.parametrize(
    "source",
    ["[{{ [1, 2] | select }}]", "[{{ [1, 2] | map('string') }}]", "[{{ [1, 2] | reject }}]"],
)
def test_a_lazy_sequence_printed_unconsumed_renders_empty_not_its_repr(source: str) -> None:
    """Filters that answer an iterator (`select`, `map`) printed a generator's repr, with
    its memory address, into the prompt; `| list` prints the values."""
    assert render(source, CONTEXT) == "[]"
    assert render("{{ [1, 0, 2] | select | list }}", CONTEXT) == "[1, 2]"


@pytest.mark.parametrize("source", ["Hello {{ user.name }}!", "{{ 'Hello ' ~ user.name }}!"])
def test_a_null_renders_empty_not_none(source: str) -> None:
    context = template_context(user_data={"name": None}, metadata={}, call_id="c")

    assert render(source, context) == "Hello !"


# A caller's data as the customer's app sent it, not as the template expects it.
MISTYPED = template_context(
    user_data={"name": "Ada", "age": "20", "orders": None, "visits": 3, "total": "9.5"},
    metadata={"count": 0},
    call_id="c",
)


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("{% if user.age >= 18 %}adult{% else %}unknown{% endif %}", "unknown"),
        ("{% if 18 < user.age < 65 %}x{% endif %}", ""),
        ("{% if 5 in user.name %}x{% endif %}", ""),
        ("{% for o in user.orders %}{{ o }}{% else %}no orders{% endfor %}", "no orders"),
        ("{% for v in user.visits %}{{ v }}{% endfor %}", ""),
        (
            "[{{ user.age + 1 }}|{{ user.age - 1 }}|{{ -user.name }}|{{ 10 / metadata.count }}]",
            "[|||]",
        ),
        (
            "[{{ user.total | round(1) }}|{{ user.visits | length }}|{{ user.visits | first }}]",
            "[||]",
        ),
        ('{{ user.total | round(1) | default("?") }}', "?"),
        ("[{{ user.name.split(1) }}|{{ range(user.age) }}]", "[|]"),
        ("{% if user.visits is divisibleby 'x' %}x{% endif %}", ""),
        ("[{{ user.orders | dictsort }}|{{ user.visits | reverse }}]", "[|]"),
    ],
)
def test_a_value_of_an_unexpected_type_is_missing_where_used_not_the_whole_prompt(
    source: str, rendered: str
) -> None:
    """The customer's app sent `"age": "20"` where the template compares a number:
    Python's TypeError emptied the whole prompt, and the agent ran that call with no
    instructions at all."""
    assert render("You are Acme's agent. " + source + " Bye, {{ user.name }}.", MISTYPED) == (
        "You are Acme's agent. " + rendered + " Bye, Ada."
    )


class _RenderTooSlow(BaseException):
    """Raised by the alarm; a BaseException, so render's `except Exception` lets it out."""


def test_filters_in_a_loop_spend_the_work_budget_by_the_size_they_handle() -> None:
    """Sorting a 100,000-item list 50 times an iteration, 19,000 times: valid when
    saved, it rendered for hours (agent session, analysis) when filters cost nothing."""
    import signal

    source = (
        "{% set x = range(99999)|list %}{% for i in range(19000) %}"
        + "{% set y = x|sort %}" * 50
        + "{% endfor %}"
    )
    assert template_error(source) is None

    def too_slow(signum: int, frame: object) -> None:
        raise _RenderTooSlow()

    previous = signal.signal(signal.SIGALRM, too_slow)
    # Far above its ~1.5 s here, so a loaded CI machine cannot fail it; hours would.
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        rendered = render(source, CONTEXT)
    except _RenderTooSlow:
        pytest.fail("render() was still running after 30 s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert rendered == ""


def render_within_30_seconds(source: str) -> str:
    """Render with an alarm far above what a bounded render takes on a loaded CI
    machine (about half a second); an unbounded one would take hours."""
    import signal

    def too_slow(signum: int, frame: object) -> None:
        raise _RenderTooSlow()

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        return render(source, CONTEXT)
    except _RenderTooSlow:
        pytest.fail("render() was still running after 30 s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    "step",
    [
        "{% set y = [0] * 99999 %}",  # operators cost by what they build
        "{% if 99998 in x %}{% endif %}",  # comparisons cost a unit and look at the clock
        "{% set y = x[1:] %}",  # so do slices
    ],
)
def test_operators_comparisons_and_slices_in_a_loop_cannot_render_for_hours(step: str) -> None:
    """19,000 iterations of 40 such steps (700 rendered for about 15 minutes in the web
    process answering the agent's session request): valid when saved."""
    source = "{% set x = range(99999)|list %}{% for i in range(19000) %}" + step * 40
    source += "{% endfor %}"
    assert template_error(source) is None

    assert render_within_30_seconds(source) == ""


@pytest.mark.parametrize("recursion", ["loop(r)", "loop(iterable=r)"])
def test_a_recursive_loops_inner_iterations_spend_the_work_budget(recursion: str) -> None:
    """`loop(items)` in a recursive loop iterates items the loop's own budget never saw:
    a body of attribute lookups (which cost nothing) over 100,000 items at each of 100
    levels, valid when saved, rendered for half an hour with nothing looking at the
    clock (in the web process answering the agent's session request)."""
    source = (
        "{% set r = range(99999) %}{% for x in [1] recursive %}"
        "{% if loop.first and loop.depth is lt(100) %}{{ RECURSE }}{% endif %}"
        + ("{{ x" + ".a" * 28 + " }}") * 6
        + "{% endfor %}"
    ).replace("RECURSE", recursion)
    assert template_error(source) is None

    assert render_within_30_seconds(source) == ""


def test_a_recursive_loop_over_a_callers_data_still_renders() -> None:
    tree = [{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}]
    context = {**CONTEXT, "user": {"tree": tree}}
    source = (
        "{% for node in user.tree recursive %}{{ node.name }}"
        "{% if node.children %}({{ loop(node.children) }}){% endif %}{% endfor %}"
    )

    assert render(source, context) == "a(b(c))"


def peak_memory_of_render(source: str) -> tuple[str, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        rendered = render(source, CONTEXT)
        return rendered, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "source",
    [
        # A list of one long string, many times: printed, all of them at once.
        "{% set a = 'x' * 99999 %}{{ [a] * 500 }}",
        "{% set a = 'x' * 99999 %}{{ [" + ",".join(["a"] * 500) + "] }}",
        "{% set a = 'x' * 99999 %}{{ [" + ",".join(["a"] * 500) + "]|tojson }}",
        # What a block captures is not streamed out: the output's cut never saw it.
        "{% set a = 'x' * 99999 %}"
        "{% set x %}{% for i in range(500) %}{{ a }}{% endfor %}{% endset %}{{ x|length }}",
        "{% set a = 'x' * 99999 %}{% macro m() %}{% for i in range(500) %}{{ a }}{% endfor %}"
        "{% endmacro %}{{ m()|length }}",
    ],
)
def test_a_nested_or_captured_value_cannot_grow_past_the_value_bound(source: str) -> None:
    rendered, peak = peak_memory_of_render(source)

    assert rendered == ""
    # 500 copies of 100,000 characters would be 50 MB; the bounds allow a few.
    assert peak < 10_000_000, f"render allocated {peak // 1_000_000} MB"


def test_filters_and_methods_on_a_callers_data_still_render() -> None:
    context = {**CONTEXT, "user": {"names": ["Cy", "Al", "Bo"] * 300, "bio": "x" * 5000}}

    rendered = render(
        "{{ user.names|unique|sort|join(', ') }} {{ user.bio.upper()|length }}", context
    )

    assert rendered == "Al, Bo, Cy 5000"


def test_a_long_list_tested_by_its_length_in_a_loop_still_renders() -> None:
    """`length` looks at a list without walking it: charged by the list's size at every
    iteration, a 2,000-slot list ran out of budget and the prompt rendered empty."""
    slots = [f"slot-{n:04d}" for n in range(2000)]
    context = {**CONTEXT, "user": {"slots": slots}}
    source = (
        "Free slots: {% for s in user.slots %}{{ s }}"
        "{% if loop.index < user.slots | length %}, {% endif %}{% endfor %}"
    )

    rendered = render(source, context)

    assert rendered.startswith("Free slots: slot-0000, slot-0001")
    assert rendered.endswith("slot-1999")


def _shared_tuple(depth: int, name: str = "t", pair: str = "({x}, {x})") -> str:
    # (t, t) nested `depth` deep: a few dozen bytes that hash and compare as 2**depth leaves.
    return f"{{% set {name}0 = (1, 2) %}}" + "".join(
        f"{{% set {name}{i} = {pair.format(x=f'{name}{i - 1}')} %}}" for i in range(1, depth + 1)
    )


@pytest.mark.parametrize(
    "use",
    [
        "{% set d = {} %}{{ d[t27] }}",  # a lookup hashes its key
        "{{ t27 in {} }}",  # so does `in` on a dict
        "{% set d = {t27: 1} %}{{ d | length }}",  # and a dict literal
        # Lists and dicts nested so compare as deep: `==` walks both.
        _shared_tuple(27, "u", "[{x}, {x}]")
        + _shared_tuple(27, "v", "[{x}, {x}]")
        + "{{ u27 == v27 }}",
        _shared_tuple(27, "u", "{{'a': {x}, 'b': {x}}}")
        + _shared_tuple(27, "v", "{{'a': {x}, 'b': {x}}}")
        + "{{ u27 == v27 }}",
    ],
)
def test_one_step_on_a_tuple_nested_in_itself_cannot_outlast_the_deadline(use: str) -> None:
    """The deadline is looked at between steps: one hash of a tuple that holds itself
    twice at every level walks 2**depth leaves in C, a second at depth 27, hours at 40,
    and nothing stops it (the session's shared deadline included)."""
    import time

    from workflows.template_bounds import MAX_RENDER_SECONDS

    started = time.monotonic()
    render(_shared_tuple(27) + use, CONTEXT)
    assert time.monotonic() - started < MAX_RENDER_SECONDS + 0.5


def test_a_tuple_nested_through_a_cyclers_items_cannot_outlast_the_deadline() -> None:
    """`_built` holds a tuple, list or dict the template writes; `cycler(t, t).items` is
    the same tuple of two, made by a global and read as an attribute, which nothing
    bounds: nested 27 deep, one hash walks 2**27 leaves in C, past every deadline."""
    import time

    from workflows.template_bounds import MAX_RENDER_SECONDS

    source = _shared_tuple(27, pair="cycler({x}, {x}).items") + "{{ t27 in {} }}"
    started = time.monotonic()
    render(source, CONTEXT)
    assert time.monotonic() - started < MAX_RENDER_SECONDS + 0.5


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ user.name }}" * 200, "Template too complex: more than 500 tokens"),
        ("{{ user" + ".a" * 40 + " }}", "Template too complex: nested more than 32 levels"),
        ("{{ user.name" + " | e" * 40 + " }}", "Template too complex: nested more than 32"),
        ("{% if a %}" * 40 + "{% endif %}" * 40, "Template too complex: nested more than 32"),
        ("{{ " + "(" * 40 + "a" + ")" * 40 + " }}", "Template too complex: nested more than 32"),
        ("{{ " + "[" * 40 + "]" * 40 + " }}", "Template too complex: nested more than 32"),
    ],
    ids=["tokens", "attributes", "filters", "blocks", "parentheses", "lists"],
)
def test_a_template_too_complex_to_compile_quickly_is_refused_without_compiling(
    monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    """Compiling cannot be interrupted, and chains of filters or attributes compiled in
    time cubic in their length: the bounds are checked first."""
    from workflows.template_sandbox import environment

    def compile_(*args: object, **kwargs: object) -> None:
        pytest.fail("a template past the bounds was compiled")

    monkeypatch.setattr(environment, "compile", compile_)

    error = template_error(source)

    assert error is not None and error.startswith(message)


def test_a_template_at_the_bounds_is_valid() -> None:
    from workflows.prompts import MAX_TEMPLATE_DEPTH, MAX_TEMPLATE_TOKENS

    # `{{`, `a`, then `<`, `a` pairs, then `}}`; whitespace does not count.
    widest = "{{ a" + " < a" * ((MAX_TEMPLATE_TOKENS - 3) // 2) + " }}"
    # Template, Output, then a Getattr per attribute above the Name.
    deepest = "{{ user" + ".a" * (MAX_TEMPLATE_DEPTH - 2) + " }}"

    bracketed = "{{ " + "(" * MAX_TEMPLATE_DEPTH + "a" + ")" * MAX_TEMPLATE_DEPTH + " }}"

    assert (template_error(widest), template_error(deepest), template_error(bracketed)) == (
        None,
        None,
        None,
    )


def test_whether_a_template_is_valid_does_not_depend_on_how_deep_its_caller_is() -> None:
    """The parser recurses a dozen frames into each parenthesis, which leaves no node
    for the tree's depth check: sixty of them parsed from a shallow stack and failed
    with RecursionError from a deeper one (a view, a serializer), and `template_error`
    kept whichever answer came first."""

    def called_from_depth(frames: int) -> str | None:
        return template_error(source) if frames == 0 else called_from_depth(frames - 1)

    source = "{{ " + "(" * 60 + "user.name" + ")" * 60 + " }}"
    template_error.cache_clear()
    shallow = template_error(source)
    template_error.cache_clear()
    deep = called_from_depth(400)

    assert shallow == deep
    assert shallow is not None and shallow.startswith("Template too complex: nested more than")


def test_a_template_past_the_bounds_saved_before_them_renders_empty() -> None:
    assert render("x{{ 1 }}" * 200, CONTEXT) == ""
    assert render("x{{ 1 }}" * 10, CONTEXT) == "x1" * 10


def test_a_template_padded_with_comments_is_refused_once_lexing_it_costs_too_much() -> None:
    """Comments and whitespace do not count against the token bound, but lexing them
    costs the same: twenty thousand characters of empty comments counted as three
    tokens, and every write lexed them again."""
    from workflows.prompts import template_tokens

    padded = "{{ user.name }}" + "{##}" * 5_000
    within = "{{ user.name }}" + "{##}" * 500  # two tokens each

    assert template_error(padded) == (
        "Template too complex: more than 2,000 tokens counting whitespace and comments."
    )
    assert template_tokens(padded) == 500  # at its bound, against the workflow's
    assert (template_error(within), template_tokens(within)) == (None, 5)


def test_a_template_saved_before_the_lexing_bound_and_past_it_still_renders() -> None:
    """The bound guards writes; a stored template past it compiles once per process,
    and rendering it empty would have silently dropped an agent's prompt."""
    commented = "Hello {{ user.name }}." + "{# note #}" * 700

    assert template_error(commented) is not None
    assert render(commented, CONTEXT) == "Hello Ada."
