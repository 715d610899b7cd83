from __future__ import annotations

import datetime
import logging
from uuid import UUID

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from accounts.models import Organization
from providerkeys.crypto import UndecryptableValue
from webhooks.models import (
    SECRET_COLUMNS,
    ToolSigningSecret,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

logger = logging.getLogger(__name__)


def webhook_endpoint_queryset(*, organization: Organization) -> QuerySet[WebhookEndpoint]:
    """Every webhook endpoint of one organization: the only way views reach them.

    Their secrets are deferred: no page shows them, and a secret no configured key opens
    (docs/key-rotation.md) must not take the endpoint's pages, or its way out
    (rotate-secret, delete), down with it. One deleted is none of them (its history
    goes in the retention pass)."""
    return (
        WebhookEndpoint.objects.filter(organization=organization, deleted_at__isnull=True)
        .defer(*SECRET_COLUMNS)
        .order_by("-created_at", "-id")
    )


def webhook_delivery_list(
    *, endpoint: WebhookEndpoint, status: str | None = None, call_id: UUID | None = None
) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries (in one state, of one call's events, if given), newest
    first, with their event and attempt log."""
    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint)
    if status is not None:
        deliveries = deliveries.filter(status=status)
    if call_id is not None:
        # A call has a handful of events (webhook_event_call), each delivered once here.
        deliveries = deliveries.filter(event__call_id=call_id)
    return (
        deliveries.select_related("event")
        .defer("event__body")
        .prefetch_related(Prefetch("attempts", queryset=WebhookAttempt.objects.order_by("number")))
        .order_by("-created_at", "-id")
    )


def webhook_delivery_get(
    *, endpoint: WebhookEndpoint, delivery_id: int, log: bool = True
) -> WebhookDelivery | None:
    """One of the endpoint's deliveries, as the list shows it (without its attempt log
    unless `log`); None if it has no such one."""
    deliveries = webhook_delivery_list(endpoint=endpoint).filter(pk=delivery_id)
    return (deliveries if log else deliveries.prefetch_related(None)).first()


def tool_signing_secret_get(*, organization: Organization) -> ToolSigningSecret | None:
    """The organization's tool signing secret, if it made one, its secrets unread (as
    an endpoint's pages read it)."""
    return (
        ToolSigningSecret.objects.filter(organization=organization).defer(*SECRET_COLUMNS).first()
    )


def tool_signing_secrets_live(
    *, organization: Organization, now: datetime.datetime | None = None
) -> list[str]:
    """The secrets that sign the organization's tool requests now (for the agent
    session only): none before it made one. One no configured CRYPTOGRAPHY_KEY opens is
    left out (logged), the others still signing; a rotation replaces it."""
    rows = ToolSigningSecret.objects.filter(organization=organization)
    columns = ("secret", "previous_secrets")
    try:
        found = rows.values_list(*columns).first()
    except UndecryptableValue:
        logger.error(
            "organization %s: a tool signing secret opens with no configured CRYPTOGRAPHY_KEY",
            organization.slug,
        )
        found = tuple(secret_opened(rows, column) for column in columns)
    if found is None:
        return []
    secret, previous = found
    holder = ToolSigningSecret(secret=secret, previous_secrets=previous)
    return holder.live_secrets(now or timezone.now())


def secret_opened(rows: QuerySet, column: str) -> str | None:
    """The first row's encrypted `column` in plaintext; None if there is no row or no
    configured CRYPTOGRAPHY_KEY opens it (docs/key-rotation.md)."""
    try:
        return rows.values_list(column, flat=True).first()
    except UndecryptableValue:
        return None
