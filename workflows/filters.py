from __future__ import annotations

from django_filters import rest_framework as filters

from voicecalls.filters import text_filter
from workflows.models import Workflow


class WorkflowFilter(filters.FilterSet):
    slug = text_filter(
        field_name="slug", max_length=100, help_text="Only the workflow with this slug."
    )

    class Meta:
        model = Workflow
        fields = ["slug"]
