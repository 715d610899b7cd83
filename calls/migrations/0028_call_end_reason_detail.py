"""Calls keep a short, safe cause of a dial LiveKit itself failed (`sip_error`)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("calls", "0027_call_org_workflow_success")]

    operations = [
        migrations.AddField(
            model_name="call",
            name="end_reason_detail",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
    ]
