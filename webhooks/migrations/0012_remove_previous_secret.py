from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0011_previous_secrets"),
    ]

    operations = [
        migrations.RemoveField(model_name="webhookendpoint", name="previous_secret"),
        migrations.RemoveField(model_name="toolsigningsecret", name="previous_secret"),
    ]
