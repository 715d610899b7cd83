"""The API's page shape: `{items, total, page, page_size, pages}`.

Unlike DRF's PageNumberPagination, a bad `page`/`page_size` is a 400 naming the
parameter, and a page past the end is an empty 200 with the true `total`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

from voicecalls.fields import QueryParamsSerializer

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class PageQuerySerializer(QueryParamsSerializer):
    page = serializers.IntegerField(min_value=1, default=1, max_value=10**9)
    page_size = serializers.IntegerField(
        min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE
    )


_PAGE_FIELDS = PageQuerySerializer._declared_fields


def page_params_plain(query_params: Mapping[str, str]) -> tuple[int, int] | None:
    """`PageQuerySerializer`'s (page, page_size) when each is absent or plain digits in
    its bounds; else None, and the serializer decides and explains. Every list request
    reads them; the serializer's fields cost more than the check (bench/README.md,
    item 15)."""
    values = []
    for name, field in _PAGE_FIELDS.items():
        text = query_params.get(name)
        if text is None:
            values.append(field.default)
            continue
        if not (0 < len(text) <= 10 and text.isascii() and text.isdigit()):
            return None
        value = int(text)
        if not field.min_value <= value <= field.max_value:
            return None
        values.append(value)
    return values[0], values[1]


class PagePagination(BasePagination):
    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list:
        return self.paginate(
            request,
            count=queryset.count,
            fetch=lambda offset, limit: list(queryset[offset : offset + limit]),
        )

    def paginate(
        self, request: Request, *, count: Callable[[], int], fetch: Callable[[int, int], list]
    ) -> list:
        """The requested page: `count()` is the exact total, `fetch(offset, limit)` the
        rows, not asked for past the end. For lists that count or fetch their own way."""
        plain = page_params_plain(request.query_params)
        if plain is None:
            params = PageQuerySerializer(data=request.query_params)
            params.is_valid(raise_exception=True)
            plain = params.validated_data["page"], params.validated_data["page_size"]
        self.page, self.page_size = plain
        self.total = count()
        offset = (self.page - 1) * self.page_size
        if offset >= self.total:
            return []
        return fetch(offset, self.page_size)

    def get_paginated_response(self, data: list) -> Response:
        return Response(
            {
                "items": data,
                "total": self.total,
                "page": self.page,
                "page_size": self.page_size,
                "pages": math.ceil(self.total / self.page_size),
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["items", "total", "page", "page_size", "pages"],
            "properties": {
                "items": schema,
                "total": {"type": "integer", "minimum": 0, "example": 100},
                "page": {"type": "integer", "minimum": 1, "example": 1},
                "page_size": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "example": 20,
                },
                "pages": {"type": "integer", "minimum": 0, "example": 5},
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        return [
            {
                "name": "page",
                "in": "query",
                "required": False,
                "description": "Page number, from 1.",
                "schema": {"type": "integer", "minimum": 1, "maximum": 10**9, "default": 1},
            },
            {
                "name": "page_size",
                "in": "query",
                "required": False,
                "description": f"Items per page (max {MAX_PAGE_SIZE}).",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
            },
        ]
