"""The recordings whose start has no egress id yet (`Recording.Meta.indexes`), for
`recordings_wake_lost_starts`: a few in flight, not every recording that failed before
LiveKit gave it one. Built CONCURRENTLY on PostgreSQL, so recordings go on while it
builds."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("egress_id__isnull", True), ("status", "starting")),
    fields=["created_at"],
    name="recording_start_unclaimed",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("recordings", "Recording"), INDEX)


def drop(apps, schema_editor) -> None:
    schema_editor.remove_index(apps.get_model("recordings", "Recording"), INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("recordings", "0002_recording_egress_unended"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="recording", index=INDEX)],
        ),
    ]
