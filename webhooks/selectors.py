from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from accounts.models import Organization
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def webhook_endpoint_queryset(*, organization: Organization) -> QuerySet[WebhookEndpoint]:
    """Every webhook endpoint of one organization: the only way views reach them.

    Their secrets are deferred: no page shows them, and a secret no configured key opens
    (docs/key-rotation.md) must not take the endpoint's pages, or its way out
    (rotate-secret, delete), down with it."""
    return (
        WebhookEndpoint.objects.filter(organization=organization)
        .defer("secret", "previous_secret")
        .order_by("-created_at", "-id")
    )


def webhook_delivery_list(
    *, endpoint: WebhookEndpoint, status: str | None = None
) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries (in one state, if given), newest first, with their
    event and attempt log."""
    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint)
    if status is not None:
        deliveries = deliveries.filter(status=status)
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
