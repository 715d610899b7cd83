"""The ledger keeps when a LiveKit event happened (its stamp, or its arrival): what
LiveKit told while a phone call's dial ran is read by it. Nullable, no default: no
rewrite on PostgreSQL. Rows from before it have none and are never read by it."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('calls', '0022_livekit_event_disconnect_reason'),
    ]

    operations = [
        migrations.AddField(
            model_name='livekitwebhookevent',
            name='happened_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
