"""An endpoint's pending deliveries (`WebhookDelivery.Meta.indexes`): its attempts in
flight and the deliveries waiting for their turn (webhooks.turns), read at every
attempt. Built CONCURRENTLY on PostgreSQL, so deliveries go on while it builds."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("status", "pending")),
    fields=["endpoint", "created_at"],
    name="webhook_delivery_endpoint_due",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("webhooks", "WebhookDelivery"), INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("webhooks", "WebhookDelivery")
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("webhooks", "0004_delivery_succeeded_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="webhookdelivery", index=INDEX)],
        ),
    ]
