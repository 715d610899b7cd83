from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Mapping

from django import forms
from django.db.models import QuerySet
from django_filters import rest_framework as filters
from django_filters.constants import EMPTY_VALUES
from django_filters.fields import BaseCSVField, ChoiceField, IsoDateTimeField
from drf_spectacular.plumbing import build_choice_description_list
from drf_spectacular.utils import extend_schema_field

from analysis.models import AnalysisStatus
from calls.lifecycle import END_REASON_PATTERN, END_REASONS
from calls.models import MAX_START_DELAY, Call, CallDirection, CallStatus
from voicecalls.filters import NotBlankMixin, SingleValueFilterSet, text_filter


class NotBlankUUIDField(NotBlankMixin, forms.UUIDField):
    pass


class NotBlankChoiceField(NotBlankMixin, ChoiceField):
    pass


class NotBlankCSVField(BaseCSVField):
    """`?name=`, `?name=,` or `?name=a,`: a 400, not a filter left out or matching
    nothing."""

    def clean(self, value: object) -> object:
        if value is not None and (not value or "" in value):
            raise forms.ValidationError("May not be empty.", code="blank")
        return super().clean(value)


class NotBlankInFilter(filters.BaseInFilter):
    """One value or several, comma-separated (or repeated: CallFilter.repeatable), each
    then checked by the filter's own field; an empty one is a 400."""

    base_field_class = NotBlankCSVField


# An offset's "+" written unencoded in a URL arrives as a space (`…T10:30:00 01:00`);
# after a time, a space then hours can only have been that "+".
_OFFSET_PLUS_AS_SPACE = re.compile(r"^(\S+T\S*\d) (\d{2}(?::?\d{2})?)$")
# Longer than any ISO 8601 date and time (microseconds and offset included): not
# matched at all (the pattern backtracks quadratically on long text).
MAX_DATETIME_CHARS = 40


class UTCIsoDateTimeField(NotBlankMixin, IsoDateTimeField):
    """ISO-8601, compared in UTC: offsets the database cannot store (PostgreSQL takes
    up to ±15:59) are converted first, and a time that leaves the calendar is a 400."""

    def to_python(self, value: object) -> datetime.datetime | None:
        if (
            isinstance(value, str)
            and len(value) <= MAX_DATETIME_CHARS
            and (unencoded := _OFFSET_PLUS_AS_SPACE.match(value))
        ):
            value = f"{unencoded[1]}+{unencoded[2]}"
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(datetime.UTC)
        except OverflowError as exc:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from exc


class StrictBooleanField(forms.NullBooleanField):
    """`true` or `false` (also `1`/`0`, `True`/`False`); anything else is a 400, not a
    filter silently dropped as NullBooleanField would."""

    def to_python(self, value: object) -> bool | None:
        if value in (None, ""):
            return None if value is None else self.fail_blank()
        if value in ("true", "True", "1", True):
            return True
        if value in ("false", "False", "0", False):
            return False
        raise forms.ValidationError("Must be true or false.", code="invalid")

    def fail_blank(self) -> None:
        raise forms.ValidationError("May not be empty.", code="blank")

    def validate(self, value: object) -> None:
        pass


class StrictBooleanFilter(filters.BooleanFilter):
    field_class = StrictBooleanField

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # django-filter's BooleanWidget would turn an unknown value into None.
        self.extra["widget"] = forms.TextInput


class SuccessFilter(StrictBooleanFilter):
    """The analysis's verdict (the call's copy of it). Only a completed analysis has
    one, so the filter says so too: PostgreSQL then reads `call_org_analysis_success`
    (or with `workflow_id`, `call_org_workflow_success`), whose condition that is, for
    `false` as for `true`."""

    def filter(self, queryset: QuerySet[Call], value: object) -> QuerySet[Call]:
        if value in EMPTY_VALUES:
            return queryset
        return queryset.filter(analysis_status=AnalysisStatus.COMPLETED, analysis_success=value)


ANALYSIS_STATUS_HELP = "Calls whose post-call analysis has this status."


# The call's copy of the status is null for a call not analysed, but the parameter
# takes one of the statuses (never null), described as the analysis's own field is.
@extend_schema_field(
    {
        "type": "string",
        "enum": list(AnalysisStatus.values),
        "description": "\n\n".join(
            [ANALYSIS_STATUS_HELP, build_choice_description_list(AnalysisStatus.choices)]
        ),
    }
)
class AnalysisStatusFilter(filters.ChoiceFilter):
    field_class = NotBlankChoiceField


class UUIDFilter(filters.UUIDFilter):
    field_class = NotBlankUUIDField


class IsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCIsoDateTimeField


# The shared CallStatusEnum component, so SDKs filter with the same enum a call carries.
@extend_schema_field(
    {
        "$ref": "#/components/schemas/CallStatusEnum",
        "description": "Filter by status: one value, or several comma-separated.",
    }
)
class StatusInFilter(NotBlankInFilter, filters.ChoiceFilter):
    """One status or several; an unknown one is a 400."""


DIRECTION_HELP = "Calls in this direction: `inbound` (the user called) or `outbound`."


@extend_schema_field(
    {"$ref": "#/components/schemas/CallDirectionEnum", "description": DIRECTION_HELP}
)
class DirectionFilter(filters.ChoiceFilter):
    field_class = NotBlankChoiceField


END_REASON_HELP = (
    "Calls that ended for this reason: one value, or several comma-separated. The "
    "platform's reasons are "
    + ", ".join(f"`{reason}`" for reason in END_REASONS)
    + "; an agent worker may end a call with one of its own (lowercase letters, digits and "
    "underscores, up to 50 characters), which the filter takes too."
)


class EndReasonField(forms.CharField):
    """One end reason, as sent (not stripped: ` busy` is no reason a call has): any an
    agent worker may report (END_REASON_PATTERN), since the list shows those too."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(strip=False, **kwargs)

    def validate(self, value: str) -> None:
        super().validate(value)
        # fullmatch: the pattern's `$` alone would let a trailing newline through.
        if not re.fullmatch(END_REASON_PATTERN, value):
            raise forms.ValidationError(
                "Not an end reason: 1 to 50 lowercase letters, digits or underscores.",
                code="invalid",
            )


# Not an enum of the platform's reasons: the response's end_reason may be an agent's own.
@extend_schema_field(
    {"type": "string", "pattern": END_REASON_PATTERN, "description": END_REASON_HELP}
)
class EndReasonInFilter(NotBlankInFilter, filters.CharFilter):
    """One end reason or several; a malformed one is a 400."""

    field_class = EndReasonField


class CallFilter(SingleValueFilterSet):
    # `?status=a&status=b` means `?status=a,b`; the same for end_reason.
    repeatable = frozenset({"status", "end_reason"})

    status = StatusInFilter(
        field_name="status",
        lookup_expr="in",
        choices=CallStatus.choices,
        help_text="Filter by status: one value, or several comma-separated.",
    )
    workflow_id = UUIDFilter(field_name="workflow_id", help_text="Filter by workflow.")
    user_id = text_filter(field_name="user_id", max_length=255, help_text="Filter by user.")
    started_after = IsoDateTimeFilter(
        field_name="started_at",
        lookup_expr="gte",
        help_text="Calls started at or after this ISO-8601 time; without an offset it is UTC "
        "(a date alone: its 00:00 UTC). With `started_before`, it must be before it (else 400).",
    )
    started_before = IsoDateTimeFilter(
        field_name="started_at",
        lookup_expr="lt",
        help_text="Calls started before this ISO-8601 time; without an offset it is UTC "
        "(a date alone: its 00:00 UTC).",
    )

    success = SuccessFilter(
        field_name="analysis_success",
        help_text="Calls whose post-call analysis judged them successful (true) or not (false).",
    )
    analysis_status = AnalysisStatusFilter(
        field_name="analysis_status",
        choices=AnalysisStatus.choices,
        help_text=ANALYSIS_STATUS_HELP,
    )
    direction = DirectionFilter(
        field_name="direction", choices=CallDirection.choices, help_text=DIRECTION_HELP
    )
    end_reason = EndReasonInFilter(
        field_name="end_reason", lookup_expr="in", help_text=END_REASON_HELP
    )

    class Meta:
        model = Call
        fields = [
            "status",
            "workflow_id",
            "user_id",
            "started_after",
            "started_before",
            "success",
            "analysis_status",
            "direction",
            "end_reason",
        ]

    def is_valid(self) -> bool:
        valid = super().is_valid()
        values = getattr(self.form, "cleaned_data", {})  # none on an unbound form
        after, before = values.get("started_after"), values.get("started_before")
        if after is not None and before is not None and after >= before:
            # Swapped bounds are a client's mistake, not "no calls" (as GET /usage/daily).
            self.form.add_error(
                "started_after",
                forms.ValidationError("Must be before `started_before`.", code="invalid"),
            )
        return valid and not self.form.errors

    def filter_queryset(self, queryset: QuerySet[Call]) -> QuerySet[Call]:
        return self.queryset_filtered(queryset, self.form.cleaned_data)

    def queryset_filtered(
        self, queryset: QuerySet[Call], values: Mapping[str, object]
    ) -> QuerySet[Call]:
        """`queryset` under these filters given `values` (cleaned; as django-filter's
        `filter_queryset` applies them), and the creation times a started_* window implies."""
        for name, value in values.items():
            queryset = self.filters[name].filter(queryset, value)
        bounds = self.creation_bounds(values)
        return queryset.filter(**bounds) if bounds else queryset

    @staticmethod
    def creation_bounds(values: Mapping[str, object]) -> dict[str, datetime.datetime]:
        """The creation times a started_* window implies, as lookups: a call starts between
        its creation and MAX_START_DELAY after it, so the newest-first `created_at`
        indexes find any window's first page without reading the window."""
        bounds = {}
        if values.get("started_after") is not None:
            try:
                bounds["created_at__gte"] = values["started_after"] - MAX_START_DELAY
            except OverflowError:  # a window from year 1: the earliest time there is
                bounds["created_at__gte"] = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        if values.get("started_before") is not None:
            bounds["created_at__lt"] = values["started_before"]
        return bounds

    def __init__(self, data=None, *args, **kwargs) -> None:
        # `status=a,b` is the documented form; some generated clients (openapi-python-client)
        # repeat the parameter instead (`status=a&status=b`), so both mean the same.
        for name in self.repeatable:
            if data is not None and len(data.getlist(name)) > 1:
                data = data.copy()
                data.setlist(name, [",".join(data.getlist(name))])
        super().__init__(data, *args, **kwargs)

    def get_form_class(self) -> type:
        # django-filter builds a new form class, with new fields and labels, for every
        # request (bench/README.md item 15). These filters are the same for every
        # request, so one class serves them all.
        cls = type(self)
        if "_form_class" not in cls.__dict__:
            form_class = super().get_form_class()
            form_class.base_fields = _FormFieldsSharedPerRequest(form_class.base_fields)
            cls._form_class = form_class
        return cls._form_class


class _FormFieldsSharedPerRequest(dict):
    """Django deep-copies a form's fields (widgets, choices, validators) for every form
    made, so that a rendered form can change its own. This form only validates query
    parameters, changing no field, so each request's form shares the fields."""

    def __deepcopy__(self, memo: dict) -> dict:
        return dict(self)


class _FiltersCopiedPerRequest(dict):
    """django-filter deep-copies a FilterSet's filters (their choices, widgets, field
    classes) for every request (bench/README.md "Issue 19"). A request sets only
    `model` and `parent` on its filters (the form class is built once, above), so a
    shallow copy of each filter object serves."""

    def __deepcopy__(self, memo: dict) -> dict:
        return {name: copy.copy(filter_) for name, filter_ in self.items()}


CallFilter.base_filters = _FiltersCopiedPerRequest(CallFilter.base_filters)
