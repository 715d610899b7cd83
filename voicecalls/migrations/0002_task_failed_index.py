"""The failed tasks by when they finished, for the operator's count of tasks failed in
the last day (`voicecalls.ops_metrics`): the task table (django-tasks-db's) keeps every
run for two weeks, and has no index on failures. Built CONCURRENTLY on PostgreSQL, so
workers go on taking and finishing tasks while it builds.

The table is another app's: the index is the database's alone (no model state holds
it, so `makemigrations` never proposes to drop it)."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("status", "FAILED")),
    fields=["finished_at"],
    name="task_failed_finished",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("django_tasks_database", "DBTaskResult"), INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("django_tasks_database", "DBTaskResult")
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("voicecalls", "0001_cache_table"),
        ("django_tasks_database", "0021_conditional_partial_index_ordering"),
    ]

    operations = [migrations.RunPython(create, drop)]
