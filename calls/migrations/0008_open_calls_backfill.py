"""Start each organization's open-call counter at its count of calls not yet ended."""

from django.db import migrations
from django.db.models import Count, Q

NOT_ENDED = ("pending", "connecting", "active")


def open_calls_backfill(apps, schema_editor):
    Organization = apps.get_model("accounts", "Organization")
    counted = Organization.objects.annotate(
        counted=Count("calls", filter=Q(calls__status__in=NOT_ENDED))
    ).values_list("pk", "counted")
    for pk, count in counted:
        Organization.objects.filter(pk=pk).update(open_calls=count)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_organization_open_calls"),
        ("calls", "0007_turn_latency_and_providers"),
    ]

    operations = [migrations.RunPython(open_calls_backfill, migrations.RunPython.noop)]
