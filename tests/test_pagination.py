"""`page` and `page_size`: the usual values read without the serializer, the rest left to
`PageQuerySerializer`; where the plain read answers, it answers as the serializer does."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecalls.pagination import PageQuerySerializer, page_params_plain


def _serializer_result(query: QueryDict) -> tuple[int, int] | None:
    serializer = PageQuerySerializer(data=query)
    if not serializer.is_valid():
        return None
    return serializer.validated_data["page"], serializer.validated_data["page_size"]


def _assert_agrees(query_string: str) -> tuple[int, int] | None:
    query = QueryDict(query_string)
    plain = page_params_plain(query)
    if plain is not None:
        assert plain == _serializer_result(query)
    return plain


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("", (1, 20)),
        ("user_id=u1&status=completed", (1, 20)),
        ("page=2", (2, 20)),
        ("page_size=100", (1, 100)),
        ("page=500&page_size=1", (500, 1)),
        ("page=1000000000", (1000000000, 20)),
        ("page=007", (7, 20)),
        ("page=1&page=3", (3, 20)),  # the last value, as QueryDict.dict() keeps it
    ],
)
def test_usual_values_are_read_as_the_serializer_reads_them(query_string, expected):
    assert _assert_agrees(query_string) == expected


@pytest.mark.parametrize(
    "query_string",
    [
        "page=",
        "page=0",
        "page=-1",
        "page=+2",
        "page=2.0",  # the serializer takes it as 2
        "page= 2",
        "page=1000000001",
        "page=99999999999",
        "page=٣",  # an Arabic-Indic digit: str.isdigit() alone would take it
        "page=abc",
        "page_size=0",
        "page_size=101",
        "page_size=",
    ],
)
def test_anything_else_is_left_to_the_serializer(query_string):
    assert _assert_agrees(query_string) is None


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["page", "page_size", "other"]),
        st.text(alphabet="0123456789 .+-e٣", max_size=11) | st.integers().map(str),
    )
)
def test_the_plain_read_never_disagrees_with_the_serializer(params):
    query = QueryDict(mutable=True)
    query.update(params)
    _assert_agrees(query.urlencode())
