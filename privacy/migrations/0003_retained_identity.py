"""Who a call was with, as keyed hashes, once user-data retention cleared it: an
erasure still finds the words kept longer."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('calls', '0023_livekit_event_happened_at'),
        ('privacy', '0002_erasure_recordings_deleted'),
    ]

    operations = [
        migrations.CreateModel(
            name='RetainedIdentity',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('user_id_hash', models.CharField(max_length=64)),
                ('call', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='calls.call')),
            ],
            options={
                'verbose_name_plural': 'retained identities',
                'indexes': [models.Index(fields=['user_id_hash'], name='retained_identity_hash')],
                'constraints': [models.UniqueConstraint(fields=('call', 'user_id_hash'), name='one_hash_per_call')],
            },
        ),
    ]
