"""The open runs by due time (`CallAnalysis.Meta.indexes`), for the sweep of lost
wake-ups (`wake_analyses`). Built CONCURRENTLY on PostgreSQL, so analyses are claimed
and finished while it builds."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("status__in", ("pending", "running"))),
    fields=["next_attempt_at"],
    name="callanalysis_open_due",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("analysis", "CallAnalysis"), INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("analysis", "CallAnalysis")
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("analysis", "0004_drop_success_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="callanalysis", index=INDEX)],
        ),
    ]
