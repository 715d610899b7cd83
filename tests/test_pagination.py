"""`page` and `page_size`, as every list reads them: one `PageQuerySerializer` built
once and run on each request's query parameters."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from rest_framework.exceptions import ValidationError

from voicecalls.pagination import _PAGE_QUERY


def _page(query_string: str) -> tuple[int, int]:
    params = _PAGE_QUERY.run_validation(QueryDict(query_string))
    return params["page"], params["page_size"]


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
def test_page_and_page_size_are_read_with_their_defaults(query_string, expected):
    assert _page(query_string) == expected


@pytest.mark.parametrize(
    ("query_string", "attr"),
    [
        ("page=", "page"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=1000000001", "page"),
        ("page=abc", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=", "page_size"),
    ],
)
def test_a_page_parameter_out_of_bounds_is_an_error_naming_it(query_string, attr):
    with pytest.raises(ValidationError) as raised:
        _page(query_string)
    assert list(raised.value.detail) == [attr]


def test_the_shared_serializer_keeps_no_state_between_requests():
    with pytest.raises(ValidationError):
        _page("page=0")
    assert _page("page=3") == (3, 20)
    assert _page("") == (1, 20)
