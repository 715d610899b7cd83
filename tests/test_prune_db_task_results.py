"""The task queue keeps a row per task run (django-tasks-db); the command the docs give
to trim them trims every queue's, not only the `default` queue's."""

from __future__ import annotations

import datetime
import re
import shlex
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

pytestmark = pytest.mark.django_db

DOCUMENTED = re.compile(r"`python manage\.py (prune_db_task_results[^`]*)`")


def _documented_commands() -> set[str]:
    root = Path(settings.BASE_DIR)
    texts = [(root / name).read_text() for name in ("README.md", "docs/webhooks.md")]
    return {command for text in texts for command in DOCUMENTED.findall(text)}


def _finished_long_ago(queue_name: str) -> DBTaskResult:
    long_ago = timezone.now() - datetime.timedelta(days=30)
    return DBTaskResult.objects.create(
        status="SUCCESSFUL",
        args_kwargs={"args": [1], "kwargs": {}},
        task_path="webhooks.tasks.deliver_webhook",
        queue_name=queue_name,
        backend_name="default",
        run_after=long_ago,
        finished_at=long_ago,
    )


def test_the_documented_prune_command_trims_the_finished_rows_of_every_queue() -> None:
    commands = _documented_commands()
    assert commands, "README.md and docs/webhooks.md name the command"
    for command in commands:
        for queue_name in settings.TASKS["default"]["QUEUES"]:
            _finished_long_ago(queue_name)

        call_command(*shlex.split(command), verbosity=0)

        left = sorted(DBTaskResult.objects.values_list("queue_name", flat=True))
        assert (command, left) == (command, [])
