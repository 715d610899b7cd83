"""An organization's transfers by when they were asked (`Call.Meta.indexes`): the daily
cap counts those to numbers (telephony.guard). Built CONCURRENTLY on PostgreSQL, so
calls are created and ended while it builds."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("transfer_destination__isnull", False)),
    fields=["organization", "hangup_requested_at"],
    name="call_org_transfers",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("calls", "Call"), INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("calls", "Call")
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("calls", "0020_daily_cap_counts_outbound_calls"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="call", index=INDEX)],
        ),
    ]
