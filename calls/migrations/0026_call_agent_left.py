"""Calls know which agent participant is in their room, and when it left unexpectedly."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("calls", "0025_call_agent_presence")]

    operations = [
        migrations.AddField(
            model_name="call",
            name="agent_identity",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
        migrations.AddField(
            model_name="call",
            name="agent_left_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
