"""Writes for customer webhook endpoints: create, change, delete, rotate their secrets;
and for an organization's tool signing secret.

The events they receive are recorded by `webhooks.outbox` and delivered by
`webhooks.delivery`.
"""

from __future__ import annotations

import datetime
import math

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from rest_framework import serializers

from accounts.models import Organization
from providerkeys.reencrypt import secrets_reencrypt
from voicecalls.errors import LimitExceeded
from webhooks import outbox, signing, transport
from webhooks.delivery import EndpointRefusesEvent
from webhooks.models import (
    MAX_PREVIOUS_SECRETS,
    SECRET_COLUMNS,
    EventType,
    PreviousSecret,
    SigningSecrets,
    ToolSigningSecret,
    WebhookEndpoint,
    previous_secrets_dump,
    previous_secrets_load,
)
from webhooks.selectors import secret_opened

# After a rotation the old secret keeps signing (beside the new one) this long.
SECRET_ROTATION_GRACE = datetime.timedelta(hours=24)
MAX_ENDPOINTS_PER_ORGANIZATION = 20


def _validate_endpoint(*, url: str | None, events: list[str] | None) -> None:
    errors: dict[str, list[str]] = {}
    if url is not None:
        problem = transport.url_problem(url, allow_private=settings.WEBHOOKS_ALLOW_PRIVATE_URLS)
        if problem:
            errors["url"] = [problem]
    if events is not None:
        if not events:
            errors["events"] = ["Subscribe to at least one event type."]
        elif unknown := sorted(set(events) - set(EventType.values)):
            errors["events"] = [
                f"Unknown event type {unknown[0]!r}; allowed: {', '.join(EventType.values)}."
            ]
    if errors:
        raise serializers.ValidationError(errors)


@transaction.atomic
def webhook_endpoint_create(
    *,
    organization: Organization,
    url: str,
    events: list[str],
    enabled: bool = True,
    description: str = "",
) -> tuple[WebhookEndpoint, str]:
    """Create an endpoint; returns it and its signing secret, which is shown only now."""
    _validate_endpoint(url=url, events=events)
    # Lock the organization row so concurrent creates cannot pass the cap together.
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    if (
        WebhookEndpoint.objects.filter(organization=organization, deleted_at__isnull=True).count()
        >= MAX_ENDPOINTS_PER_ORGANIZATION
    ):
        raise serializers.ValidationError(
            f"An organization can have at most {MAX_ENDPOINTS_PER_ORGANIZATION} webhook endpoints.",
            code="limit_reached",
        )
    secret = signing.secret_generate()
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url=url,
        events=list(dict.fromkeys(events)),
        enabled=enabled,
        description=description,
        secret=secret,
    )
    return endpoint, secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    """Change the given fields, and only those: a rotation of its secret or the
    delivery worker disabling it meanwhile stays. Enabling an endpoint clears why it
    was disabled."""
    _validate_endpoint(url=url, events=events)
    changed = ["updated_at"]
    if url is not None:
        endpoint.url = url
        changed.append("url")
    if events is not None:
        endpoint.events = list(dict.fromkeys(events))
        changed.append("events")
    if description is not None:
        endpoint.description = description
        changed.append("description")
    if enabled is not None:
        endpoint.enabled = enabled
        changed.append("enabled")
        if enabled:
            endpoint.disabled_reason = ""
            changed.append("disabled_reason")
    endpoint.updated_at = timezone.now()
    values = {name: getattr(endpoint, name) for name in changed}
    if not _live(endpoint).update(**values):
        raise Http404("No such webhook endpoint.")  # deleted since it was read
    return endpoint


def _live(endpoint: WebhookEndpoint) -> QuerySet[WebhookEndpoint]:
    """The endpoint, unless its owner deleted it (webhooks.retention then removes it)."""
    return WebhookEndpoint.objects.filter(pk=endpoint.pk, deleted_at__isnull=True)


def _live_locked(endpoint: WebhookEndpoint) -> bool:
    """Lock the endpoint's row until the transaction ends; whether it is enabled.
    Http404 when it was deleted since it was read."""
    enabled = _live(endpoint).select_for_update().values_list("enabled", flat=True).first()
    if enabled is None:
        raise Http404("No such webhook endpoint.")
    return enabled


@transaction.atomic
def webhook_endpoint_test(
    *, endpoint: WebhookEndpoint, now: datetime.datetime | None = None
) -> int:
    """Queue a `webhook.test` event to the endpoint; its delivery's id. EndpointRefusesEvent
    when the endpoint is disabled (nothing would be sent)."""
    now = now or timezone.now()
    # Locked as read: a deletion waits for this commit (the pass then takes the
    # delivery); a PATCH disabling it meanwhile is seen.
    if not _live_locked(endpoint):
        raise EndpointRefusesEvent()
    return outbox.webhook_test_record(endpoint=endpoint, at=now)


@transaction.atomic
def webhook_endpoint_delete(
    *, endpoint: WebhookEndpoint, now: datetime.datetime | None = None
) -> None:
    """Delete an endpoint: gone from every page at once, sent nothing more. Its
    deliveries and their log, and the events no other endpoint was sent, go in the
    retention pass, in batches (webhooks.retention): a month of a busy endpoint's
    deliveries, deleted here, outlasted the request's statement timeout."""
    now = now or timezone.now()
    # FOR UPDATE waits for a status change holding it (webhooks.outbox: FOR KEY SHARE),
    # whose deliveries the pass then takes; one after this commit finds it disabled.
    _live_locked(endpoint)
    _live(endpoint).update(deleted_at=now, enabled=False, updated_at=now)


def webhook_endpoint_rotate_secret(
    *, endpoint: WebhookEndpoint, now: datetime.datetime | None = None
) -> str:
    """A new signing secret, shown only now. The old one keeps signing beside it for
    `SECRET_ROTATION_GRACE`, so receivers can switch without rejecting deliveries (as
    do those it replaced that still sign: RotationLimitReached past their bound)."""
    with transaction.atomic():
        _live_locked(endpoint)
        return _secret_rotate(endpoint, now=now or timezone.now())


class RotationLimitReached(LimitExceeded):
    """The holder's secret was replaced MAX_PREVIOUS_SECRETS times within the grace
    period: one more rotation would stop a replaced secret signing before its time,
    which may be the one the customer's receiver still verifies with (their retries of
    a rotation whose answers were lost). Refused, with when the oldest stops signing."""

    code = "rotation_limit_reached"
    detail = (
        f"This secret was rotated {MAX_PREVIOUS_SECRETS} times in the last 24 hours and "
        "every secret those rotations replaced still signs: rotate it again once the "
        "oldest of them stops signing (Retry-After)."
    )

    def __init__(self, *, previous: list[PreviousSecret], now: datetime.datetime) -> None:
        oldest = min(p.expires_at for p in previous)
        super().__init__(
            meta={
                "previous_secrets": len(previous),
                "max_previous_secrets": MAX_PREVIOUS_SECRETS,
                "next_rotation_at": oldest.isoformat().replace("+00:00", "Z"),
            },
            retry_after=math.ceil((oldest - now).total_seconds()),
        )


def _secret_rotate(holder: SigningSecrets, *, now: datetime.datetime) -> str:
    """Give `holder` (its row locked here: call in a transaction) a new secret, the one
    it replaces kept signing for `SECRET_ROTATION_GRACE` beside those replaced before
    it that still sign; the new one's plaintext. RotationLimitReached, changing
    nothing, when MAX_PREVIOUS_SECRETS still sign."""
    # The secrets as they are now: another rotation may have replaced those read.
    locked = type(holder).objects.select_for_update().filter(pk=holder.pk)
    # One no configured key opens (docs/key-rotation.md) signs nothing any more, and
    # kept beside the new one it would stop every delivery: dropped.
    replaced = secret_opened(locked, "secret")
    previous = [
        p
        for p in previous_secrets_load(secret_opened(locked, "previous_secrets"))
        if p.expires_at > now
    ]
    if replaced is not None:
        if len(previous) >= MAX_PREVIOUS_SECRETS:
            raise RotationLimitReached(previous=previous, now=now)
        previous.insert(0, PreviousSecret(replaced, now + SECRET_ROTATION_GRACE))
    secret = signing.secret_generate()
    holder.secret = secret
    holder.previous_secrets = previous_secrets_dump(previous)
    holder.previous_secret = previous[0].secret if previous else None
    holder.previous_secret_expires_at = max((p.expires_at for p in previous), default=None)
    holder.updated_at = now
    holder.save(update_fields=[*SECRET_COLUMNS, "previous_secret_expires_at", "updated_at"])
    return secret


@transaction.atomic
def tool_signing_secret_rotate(
    *, organization: Organization, now: datetime.datetime | None = None
) -> tuple[ToolSigningSecret, str, bool]:
    """The organization's tool signing secret made, or rotated as an endpoint's is; it,
    the new secret's plaintext (shown only now) and whether it was made now."""
    now = now or timezone.now()
    # The organization's row locked: two first requests at once make one secret.
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    holder = (
        ToolSigningSecret.objects.filter(organization=organization).defer(*SECRET_COLUMNS).first()
    )
    if holder is not None:
        return holder, _secret_rotate(holder, now=now), False
    secret = signing.secret_generate()
    holder = ToolSigningSecret.objects.create(
        organization=organization, secret=secret, created_at=now, updated_at=now
    )
    return holder, secret, True


@transaction.atomic
def tool_signing_secret_delete(*, organization: Organization) -> bool:
    """Remove the organization's tool signing secret, the new and the old one: sessions
    carry none from now on, so tool requests go unsigned again. Whether it had one."""
    # Locked as a rotation locks it: one running meanwhile would find its secret gone.
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    rows = ToolSigningSecret.objects.filter(organization=organization)
    # Its secrets unread: one no configured key opens must not keep it.
    deleted, _ = rows.defer(*SECRET_COLUMNS).delete()
    return bool(deleted)


@transaction.atomic
def webhook_secrets_reencrypt() -> tuple[int, int]:
    """Re-encrypt every signing secret, the endpoints' and the organizations' tool
    signing secrets, under the current CRYPTOGRAPHY_KEY (step 3 of a key rotation,
    docs/key-rotation.md; `rotate_provider_keys` does it with every other secret). All or
    nothing: a secret that no configured key opens raises UndecryptableValue and nothing
    changes. The number of endpoints and of tool signing secrets."""
    columns = secrets_reencrypt(only=[WebhookEndpoint, ToolSigningSecret])
    totals = {column.model: column.total for column in columns if column.field == "secret"}
    return totals[WebhookEndpoint], totals[ToolSigningSecret]
