"""The recordings with no egress id that have not ended (`Recording.Meta.indexes`): the
starts in flight, as `recording_start_unclaimed` held, and now also the ones deleted
while starting, which `recordings_deleted_starts_settle` looks at once their call has
ended. It replaces that index. Built, and the old one dropped, CONCURRENTLY on
PostgreSQL, so recordings go on meanwhile."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("egress_id__isnull", True), ("ended_at__isnull", True)),
    fields=["created_at"],
    name="recording_unclaimed_unended",
)
OLD_INDEX = models.Index(
    condition=models.Q(("egress_id__isnull", True), ("status", "starting")),
    fields=["created_at"],
    name="recording_start_unclaimed",
)


def create(apps, schema_editor) -> None:
    model = apps.get_model("recordings", "Recording")
    index_add(schema_editor, model, INDEX)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{OLD_INDEX.name}"')
    else:
        schema_editor.remove_index(model, OLD_INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("recordings", "Recording")
    index_add(schema_editor, model, OLD_INDEX)
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("recordings", "0003_recording_start_unclaimed"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[
                migrations.RemoveIndex(model_name="recording", name="recording_start_unclaimed"),
                migrations.AddIndex(model_name="recording", index=INDEX),
            ],
        ),
    ]
