"""The failed deliveries by their last change (`WebhookDelivery.Meta.indexes`), for the
operator's count of deliveries given up in the last hour (`voicecalls.ops_metrics`).
Built CONCURRENTLY on PostgreSQL, so deliveries go on while it builds."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("status", "failed")),
    fields=["updated_at"],
    name="webhook_delivery_failed",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("webhooks", "WebhookDelivery"), INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("webhooks", "WebhookDelivery")
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("webhooks", "0005_delivery_endpoint_due_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="webhookdelivery", index=INDEX)],
        ),
    ]
