"""`call_create_plain`: the usual `POST /calls` body checked without the serializer's
field machinery. For any body it either declines (None: the serializer then decides
and explains) or returns exactly `CallCreateSerializer`'s validated data."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calls.serializers import (
    METADATA_MAX_BYTES,
    USER_DATA_MAX_BYTES,
    CallCreateSerializer,
    call_create_plain,
)

_PLAIN = {"workflow_slug": "daily-call"}


def _serializer_result(body: object) -> dict | None:
    serializer = CallCreateSerializer(data=body)
    return dict(serializer.validated_data) if serializer.is_valid() else None


def _assert_agrees(body: object) -> dict | None:
    plain = call_create_plain(body)
    if plain is not None:
        expected = _serializer_result(body)
        assert plain == expected
        assert list(plain) == list(expected)
        for name in ("user_data", "metadata"):
            if name in plain:
                assert plain[name] is expected[name]  # the body's own object, as the field's
    return plain


def _object_of(size: int) -> dict:
    """A JSON object of exactly `size` bytes in the compact form the bounds measure."""
    return {"k": "x" * (size - len('{"k":""}'))}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"user_id": "user-42"},
        {"user_id": None},
        {"user_id": "ünïcode ✓ user"},
        {"user_id": "u" * 255},
        {"workflow_slug": "s" * 100},
        {"user_data": {}},
        {"user_data": {"name": "Ada", "plan": {"tier": "pro", "seats": [1, 2]}}},
        {"user_data": _object_of(USER_DATA_MAX_BYTES)},
        {"metadata": _object_of(METADATA_MAX_BYTES)},
        {"metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}},  # 8 levels
        {"direction": "inbound"},
        {"direction": "outbound"},
        {
            "user_id": "u1",
            "user_data": {"name": "Ada"},
            "metadata": {"crm": 7},
            "direction": "outbound",
        },
    ],
)
def test_usual_bodies_get_the_serializers_data(changes):
    assert _assert_agrees({**_PLAIN, **changes}) is not None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"workflow_slug": ""},
        {"workflow_slug": "   "},
        {"workflow_slug": " daily-call "},  # the serializer trims it
        {"workflow_slug": "s" * 101},
        {"workflow_slug": 7},
        {"workflow_slug": None},
        {"workflow_slug": ["daily-call"]},
        {"workflow_slug": "nul\x00"},
        {"workflow_slug": "lone \ud800 surrogate"},
        {**_PLAIN, "user_id": ""},
        {**_PLAIN, "user_id": "user\n"},
        {**_PLAIN, "user_id": "u" * 256},
        {**_PLAIN, "user_id": 42},
        {**_PLAIN, "user_id": True},
        {**_PLAIN, "user_data": None},
        {**_PLAIN, "user_data": []},
        {**_PLAIN, "user_data": "{}"},
        {**_PLAIN, "user_data": _object_of(USER_DATA_MAX_BYTES + 1)},
        {**_PLAIN, "metadata": _object_of(METADATA_MAX_BYTES + 1)},
        {**_PLAIN, "metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}},
        {**_PLAIN, "metadata": {"nul": "\x00"}},
        {**_PLAIN, "metadata": {"\x00": 1}},
        {**_PLAIN, "direction": "sideways"},
        {**_PLAIN, "direction": None},
        {**_PLAIN, "direction": ""},
        {**_PLAIN, "extra": "ignored by the serializer"},
        [_PLAIN],
        "daily-call",
        None,
    ],
)
def test_any_other_body_is_left_to_the_serializer(body):
    assert _assert_agrees(body) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)
_text = st.text(max_size=12)
_plain_values = {
    "workflow_slug": st.text(min_size=1, max_size=12),
    "user_id": st.none() | _text,
    "user_data": st.dictionaries(st.text(max_size=4), _json, max_size=4),
    "metadata": st.dictionaries(st.text(max_size=4), _json, max_size=4),
    "direction": st.sampled_from(["inbound", "outbound"]),
}
_odd_values = {name: _json | _text.map(" {} ".format) for name in _plain_values}


def _bodies(values: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {"workflow_slug": values["workflow_slug"]},
        optional={k: v for k, v in values.items() if k != "workflow_slug"},
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies(_plain_values))
def test_the_plain_check_gives_the_serializers_data_for_generated_bodies(body):
    _assert_agrees(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies({k: v | _odd_values[k] for k, v in _plain_values.items()}) | _json)
def test_the_plain_check_never_disagrees_with_the_serializer(body):
    _assert_agrees(body)


# Bodies the plain check exists for: storable text, values without surrounding blanks.
_storable = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
_bare = _storable.map(str.strip).filter(lambda text: 0 < len(text) <= 12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies({**_plain_values, "workflow_slug": _bare, "user_id": st.none() | _bare}))
def test_the_plain_check_takes_every_plain_body_the_serializer_takes(body):
    """Without this the agreement tests above pass for a check that declines everything."""
    if _serializer_result(body) is not None:
        assert _assert_agrees(body) is not None
