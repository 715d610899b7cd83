"""The deliveries that ended by their last change (`WebhookDelivery.Meta.indexes`), for
the deletion of those past WEBHOOKS_DELIVERY_RETENTION_DAYS (webhooks.retention). Built
CONCURRENTLY on PostgreSQL, so deliveries go on while it builds."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("status", "pending"), _negated=True),
    fields=["updated_at"],
    name="webhook_delivery_ended",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("webhooks", "WebhookDelivery"), INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("webhooks", "WebhookDelivery")
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("webhooks", "0007_event_type_webhook_test"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="webhookdelivery", index=INDEX)],
        ),
    ]
