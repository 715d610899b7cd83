"""Every secret a rotation replaced keeps signing for its own grace period, not the
last one alone: `previous_secrets` holds them, newest first, each with its end (one
encrypted JSON value). The previous secret already there is carried into it with its
end; `previous_secret` stays, written as the newest replaced secret for the release
before this one (README "Upgrading"), to be dropped in the next."""

import json

from django.db import migrations

import providerkeys.fields
from providerkeys.crypto import UndecryptableValue

HOLDERS = ("webhookendpoint", "toolsigningsecret")


def previous_secret_carry_over(apps, schema_editor) -> None:
    """Each previous secret into `previous_secrets`, with its end. One no configured key
    opens is dropped, as a rotation drops one: it could sign nothing."""
    for name in HOLDERS:
        rows = apps.get_model("webhooks", name)._base_manager
        held = rows.filter(previous_secret__isnull=False, previous_secret_expires_at__isnull=False)
        for pk, expires_at in held.values_list("pk", "previous_secret_expires_at"):
            row = rows.filter(pk=pk)
            try:
                secret = row.values_list("previous_secret", flat=True).get()
            except UndecryptableValue:
                row.update(previous_secret_expires_at=None)
                continue
            stored = [{"secret": secret, "expires_at": expires_at.isoformat()}]
            row.update(previous_secrets=json.dumps(stored))


def previous_secret_carry_back(apps, schema_editor) -> None:
    """The newest replaced secret back into `previous_secret` (the others are lost)."""
    for name in HOLDERS:
        rows = apps.get_model("webhooks", name)._base_manager
        for pk in rows.filter(previous_secrets__isnull=False).values_list("pk", flat=True):
            row = rows.filter(pk=pk)
            try:
                newest = json.loads(row.values_list("previous_secrets", flat=True).get())[0]
            except UndecryptableValue:
                row.update(previous_secret_expires_at=None)
                continue
            row.update(previous_secret=newest["secret"])


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0010_endpoint_deleted_at"),
    ]

    operations = [
        migrations.AddField(
            model_name=name,
            name="previous_secrets",
            field=providerkeys.fields.EncryptedSecretField(
                blank=True, max_length=1000, null=True
            ),
        )
        for name in HOLDERS
    ] + [
        migrations.RunPython(previous_secret_carry_over, previous_secret_carry_back),
    ]
