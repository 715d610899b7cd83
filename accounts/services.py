from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from accounts.models import APIKey, KeyKind, Organization


def organization_get_or_create(*, slug: str, name: str | None = None) -> Organization:
    """The organization with this slug, created when missing (ValidationError on a bad
    slug, including one longer than the column holds)."""
    # clean(), not run_validators(): that one lets an empty value through.
    Organization._meta.get_field("slug").clean(slug, None)
    organization, _ = Organization.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return organization


@transaction.atomic
def api_key_create(
    *, name: str, kind: str = KeyKind.CLIENT, organization: Organization | None = None
) -> tuple[APIKey, str]:
    """Create an API key; the plaintext is returned here once and never stored."""
    if kind == KeyKind.CLIENT and organization is None:
        raise ValueError("A client key needs an organization.")
    return APIKey.objects.create_key(name=name, kind=kind, organization=organization)


SUPPORT_GROUP = "support"
# Support staff read calls, transcripts and workflows, and what was sent about calls
# to customers' webhooks (the pages show no signing secret); provider keys, API keys
# and recordings are deliberately absent, and so is replaying (a change).
SUPPORT_PERMISSIONS = [
    ("calls", "view_call"),
    ("calls", "view_transcriptentry"),
    ("workflows", "view_workflow"),
    ("workflows", "view_workflowversion"),
    ("webhooks", "view_webhookendpoint"),
    ("webhooks", "view_webhookevent"),
    ("webhooks", "view_webhookdelivery"),
    ("webhooks", "view_webhookattempt"),
]


def support_group_ensure() -> None:
    """Create or refresh the `support` group (run after every migrate)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    permissions = [
        Permission.objects.filter(content_type__app_label=app, codename=codename).first()
        for app, codename in SUPPORT_PERMISSIONS
    ]
    group.permissions.set([p for p in permissions if p is not None])


def organization_settings_update(*, organization: Organization, **changes: object) -> Organization:
    """Apply a client's validated settings changes (accounts.api checks the ceilings)."""
    for name, value in changes.items():
        setattr(organization, name, value)
    if changes:
        organization.save(update_fields=list(changes))
    return organization


SUSPENSION_REASON_MAX = Organization._meta.get_field("suspension_reason").max_length


def organization_suspend(*, organization: Organization, reason: str) -> bool:
    """Suspend the organization (README "Suspending an organization"); False when it
    already was. Its row's other columns are left as they are: calls move its counter."""
    suspended = Organization.objects.filter(pk=organization.pk, suspended_at__isnull=True).update(
        suspended_at=timezone.now(), suspension_reason=reason.strip()[:SUSPENSION_REASON_MAX]
    )
    return bool(suspended)


def organization_reinstate(*, organization: Organization) -> bool:
    """Lift the suspension; False when it was not suspended."""
    reinstated = Organization.objects.filter(pk=organization.pk, suspended_at__isnull=False).update(
        suspended_at=None, suspension_reason=""
    )
    return bool(reinstated)
