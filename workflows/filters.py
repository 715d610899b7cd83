from __future__ import annotations

from django_filters import rest_framework as filters

from workflows.models import Workflow


class WorkflowFilter(filters.FilterSet):
    slug = filters.CharFilter(
        field_name="slug", max_length=100, help_text="Only the workflow with this slug."
    )

    class Meta:
        model = Workflow
        fields = ["slug"]
