"""Background task of erasures (django-tasks; `manage.py db_worker --queue-name '*'`).

Its only argument is the erasure's id: task rows never hold the user id."""

from __future__ import annotations

from django_tasks import task

from privacy.erasure import erasure_run


@task()
def erasure_run_task(erasure_id: str) -> str | None:
    """Wake an erasure up; its row (status, lease) decides what happens."""
    return erasure_run(erasure_id=erasure_id)
