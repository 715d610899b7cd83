"""Background task of the analysis (django-tasks; `manage.py db_worker --queue-name '*'`)."""

from __future__ import annotations

from django_tasks import task

from analysis.services import call_analysis_attempt
from voicecalls.logging import log_context


@task(queue_name="analysis")
def analyse_call(call_id: str, run: int) -> str:
    """Wake a call's analysis run up; its row decides what happens."""
    with log_context(call_id=call_id):
        return call_analysis_attempt(call_id=call_id, run=run)
