"""The ledger keeps a departure's reason: a phone call's callee leaving while its dial
runs is applied when the dial answers. A column with a constant default: no rewrite on
PostgreSQL."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('calls', '0021_call_org_transfers'),
    ]

    operations = [
        migrations.AddField(
            model_name='livekitwebhookevent',
            name='disconnect_reason',
            field=models.CharField(blank=True, db_default='', default='', max_length=40),
        ),
    ]
