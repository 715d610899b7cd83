"""Each recording names its call's organization, and `recording_org_live` indexes an
organization's recordings not yet deleted (`recordings_expire`). The column is added
nullable (no table rewrite), filled in batches of ids, each its own statement, and the
index built CONCURRENTLY on PostgreSQL, so recordings go on meanwhile."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("status", "deleted"), _negated=True),
    fields=["organization", "created_at"],
    name="recording_org_live",
)
BATCH = 5000


def fill(apps, schema_editor) -> None:
    Recording = apps.get_model("recordings", "Recording")
    Call = apps.get_model("calls", "Call")
    organization = Subquery(Call.objects.filter(pk=OuterRef("call_id")).values("organization_id"))
    rows = Recording.objects.order_by("pk").values_list("pk", flat=True)
    ids = list(rows[:BATCH])
    while ids:
        Recording.objects.filter(pk__in=ids).update(organization=organization)
        ids = list(rows.filter(pk__gt=ids[-1])[:BATCH])


def create(apps, schema_editor) -> None:
    fill(apps, schema_editor)
    index_add(schema_editor, apps.get_model("recordings", "Recording"), INDEX)


def drop(apps, schema_editor) -> None:
    schema_editor.remove_index(apps.get_model("recordings", "Recording"), INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("accounts", "0001_initial"),
        ("recordings", "0004_recording_unclaimed_unended"),
    ]

    operations = [
        migrations.AddField(
            model_name="recording",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                null=True,
                on_delete=models.deletion.CASCADE,
                related_name="+",
                to="accounts.organization",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="recording", index=INDEX)],
        ),
    ]
