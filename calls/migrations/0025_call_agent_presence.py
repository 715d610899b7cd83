"""Calls know whether their voice agent joined.
Calls active at deploy are taken to have their agent (the webhooks that said so were
not kept): else a user hanging up on one would read `agent_not_joined`."""

from django.db import migrations, models
from django.db.models.functions import Coalesce


def backfill(apps, schema_editor):
    Call = apps.get_model("calls", "Call")
    Call.objects.filter(status="active").update(
        agent_joined_at=Coalesce("started_at", "created_at")
    )


class Migration(migrations.Migration):
    dependencies = [("calls", "0024_call_number_indexes")]

    operations = [
        migrations.AddField(
            model_name="call",
            name="agent_joined_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
