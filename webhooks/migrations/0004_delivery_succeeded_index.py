"""An endpoint's successes by delivery time (`WebhookDelivery.Meta.indexes`), for the
check that disables an endpoint failing for days (`_disable_if_failing`). Built
CONCURRENTLY on PostgreSQL, so deliveries go on while it builds."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("status", "succeeded")),
    fields=["endpoint", "delivered_at"],
    name="webhook_delivery_succeeded",
)


def create(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("webhooks", "WebhookDelivery"), INDEX)


def drop(apps, schema_editor) -> None:
    model = apps.get_model("webhooks", "WebhookDelivery")
    schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("webhooks", "0003_delivery_attempt_started_at"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="webhookdelivery", index=INDEX)],
        ),
    ]
