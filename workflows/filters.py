from __future__ import annotations

from voicecalls.filters import SingleValueFilterSet, text_filter
from workflows.models import Workflow


class WorkflowFilter(SingleValueFilterSet):
    slug = text_filter(
        field_name="slug", max_length=100, help_text="Only the workflow with this slug."
    )

    class Meta:
        model = Workflow
        fields = ["slug"]
