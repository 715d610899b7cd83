from __future__ import annotations

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

from calls.models import Call, CallStatus


# The shared CallStatusEnum component, so SDKs filter with the same enum a call carries.
@extend_schema_field(
    {
        "$ref": "#/components/schemas/CallStatusEnum",
        "description": "Filter by status: one value, or several comma-separated.",
    }
)
class StatusInFilter(filters.BaseInFilter, filters.ChoiceFilter):
    """One status or several, comma-separated; an unknown one is a 400."""


class CallFilter(filters.FilterSet):
    status = StatusInFilter(
        field_name="status",
        lookup_expr="in",
        choices=CallStatus.choices,
        help_text="Filter by status: one value, or several comma-separated.",
    )
    workflow_id = filters.UUIDFilter(field_name="workflow_id", help_text="Filter by workflow.")
    user_id = filters.CharFilter(field_name="user_id", max_length=255, help_text="Filter by user.")
    started_after = filters.IsoDateTimeFilter(
        field_name="started_at",
        lookup_expr="gte",
        help_text="Calls started at or after this ISO-8601 time.",
    )
    started_before = filters.IsoDateTimeFilter(
        field_name="started_at",
        lookup_expr="lt",
        help_text="Calls started before this ISO-8601 time.",
    )

    class Meta:
        model = Call
        fields = ["status", "workflow_id", "user_id", "started_after", "started_before"]

    def __init__(self, data=None, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # `status=a,b` is the documented form; some generated clients (openapi-python-client)
        # repeat the parameter instead (`status=a&status=b`), so both mean the same.
        if data is not None and len(data.getlist("status")) > 1:
            data = data.copy()
            data.setlist("status", [",".join(data.getlist("status"))])
        super().__init__(data, *args, **kwargs)
