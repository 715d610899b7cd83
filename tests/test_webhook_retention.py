"""Webhook history retention: deliveries that ended (delivered, or failed for good) longer
ago than WEBHOOKS_DELIVERY_RETENTION_DAYS are deleted by `expire_data` with their attempt
log, and their events (an end-of-call report holds the whole transcript) once no delivery
needs them; never a delivery still pending or retrying."""

from __future__ import annotations

import datetime
import io
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.utils import timezone

from accounts.models import Organization
from calls.models import CallStatus
from privacy.retention import retention_apply
from tests.factories import CallFactory
from webhooks import outbox, services
from webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.retention import webhook_history_prune

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def endpoint_create(organization: Organization, name: str = "x") -> WebhookEndpoint:
    endpoint, _ = services.webhook_endpoint_create(
        organization=organization, url=f"https://{name}.example.com/hook", events=["call.ended"]
    )
    return endpoint


def call_ended(organization: Organization) -> WebhookEvent:
    """A call's end, its report (the transcript in it) built as at its first attempt."""
    call = CallFactory(organization=organization)
    (event,) = outbox.call_status_changed_record(
        call_id=call.pk,
        from_status=CallStatus.ACTIVE,
        to_status=CallStatus.COMPLETED,
        end_reason="user_hangup",
        at=timezone.now(),
    )
    outbox.event_body(event)
    return event


def ended(delivery: WebhookDelivery, status: str, *, days_ago: float) -> WebhookDelivery:
    """The delivery ended (`status`) `days_ago`, after one logged attempt."""
    at = timezone.now() - datetime.timedelta(days=days_ago)
    WebhookAttempt.objects.create(
        delivery=delivery, number=1, attempted_at=at, url="https://x", status_code=200
    )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status,
        attempt_count=1,
        next_attempt_at=None,
        delivered_at=at if status == DeliveryStatus.SUCCEEDED else None,
        updated_at=at,
    )
    return delivery


def test_deliveries_ended_past_the_window_go_with_their_attempts_and_events(
    organization: Organization, settings
) -> None:
    settings.WEBHOOKS_DELIVERY_RETENTION_DAYS = 30
    endpoint = endpoint_create(organization)
    old_success = ended(call_ended(organization).deliveries.get(), "succeeded", days_ago=31)
    old_failure = ended(call_ended(organization).deliveries.get(), "failed", days_ago=30.01)
    recent = ended(call_ended(organization).deliveries.get(), "succeeded", days_ago=29.9)

    deliveries, events = webhook_history_prune()

    assert (deliveries, events) == (2, 2)
    assert list(endpoint.deliveries.all()) == [recent]
    assert list(WebhookEvent.objects.all()) == [recent.event]
    assert not WebhookAttempt.objects.filter(delivery_id__in=[old_success.pk, old_failure.pk])


def test_a_delivery_pending_or_retrying_is_never_pruned_nor_its_event(
    organization: Organization, settings
) -> None:
    """An event goes with its last delivery: another endpoint's still on its way keeps it."""
    settings.WEBHOOKS_DELIVERY_RETENTION_DAYS = 30
    endpoint_create(organization, "a")
    endpoint_create(organization, "b")
    event = call_ended(organization)
    done, retrying = event.deliveries.order_by("pk")
    ended(done, "succeeded", days_ago=40)
    # Retrying for days (a replay of an old event), its last change long ago.
    long_ago = timezone.now() - 40 * DAY
    WebhookDelivery.objects.filter(pk=retrying.pk).update(
        created_at=long_ago, updated_at=long_ago, next_attempt_at=timezone.now() + DAY
    )

    assert webhook_history_prune() == (1, 0)

    assert list(WebhookDelivery.objects.all()) == [retrying]
    assert WebhookEvent.objects.get().body == event.body


def test_a_delivery_replayed_lately_is_kept_however_old_its_event(
    organization: Organization, settings
) -> None:
    """The window runs from when a delivery last ended, as the deliveries list shows it."""
    settings.WEBHOOKS_DELIVERY_RETENTION_DAYS = 30
    endpoint_create(organization)
    delivery = ended(call_ended(organization).deliveries.get(), "succeeded", days_ago=1)
    WebhookEvent.objects.update(created_at=timezone.now() - 90 * DAY)
    WebhookDelivery.objects.update(created_at=timezone.now() - 90 * DAY)

    assert webhook_history_prune() == (0, 0)
    assert WebhookDelivery.objects.get() == delivery


def test_pruning_goes_in_batches_until_none_is_left(organization: Organization) -> None:
    endpoint = endpoint_create(organization)
    for _ in range(5):
        ended(call_ended(organization).deliveries.get(), "succeeded", days_ago=60)

    assert webhook_history_prune(batch_size=2) == (5, 5)
    assert not endpoint.deliveries.exists()
    assert not WebhookEvent.objects.exists()


def test_a_deleted_endpoints_deliveries_go_in_batches_however_recent_with_only_its_events(
    organization: Organization,
) -> None:
    """Its DELETE only marks it (a month of deliveries outlasted the request): the pass
    deletes its deliveries, pending or not, their attempts and the events no other
    endpoint was sent, then it."""
    gone = endpoint_create(organization, "gone")
    its_own = [call_ended(organization) for _ in range(2)]
    kept = endpoint_create(organization, "kept")
    shared = [call_ended(organization) for _ in range(3)]
    for delivery in WebhookDelivery.objects.exclude(event=shared[0], endpoint=gone):
        ended(delivery, "succeeded", days_ago=1)  # one of the gone one's left pending
    services.webhook_endpoint_delete(endpoint=gone)

    assert webhook_history_prune(batch_size=2) == (5, 2)

    assert list(WebhookEndpoint.objects.all()) == [kept]
    assert set(WebhookEvent.objects.all()) == set(shared)
    assert set(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == {kept.pk}
    assert WebhookAttempt.objects.count() == 3
    assert its_own[0].pk not in WebhookEvent.objects.values_list("pk", flat=True)


def test_expire_data_prunes_the_webhook_history_and_says_so(organization: Organization) -> None:
    endpoint_create(organization)
    ended(call_ended(organization).deliveries.get(), "failed", days_ago=31)
    out = io.StringIO()

    call_command("expire_data", stdout=out)

    assert not WebhookEvent.objects.exists()
    assert "webhook_deliveries_pruned=1 webhook_events_pruned=1" in out.getvalue()
    assert retention_apply().webhook_deliveries_pruned == 0


@pytest.mark.postgres
def test_deliveries_due_are_read_by_index(organization: Organization) -> None:
    """A pass reads the ended deliveries by when they ended, not the whole table (every
    delivery ever made). Seq scans are disallowed so the planner shows a big table's path."""
    from webhooks.retention import _due

    endpoint_create(organization)
    ended(call_ended(organization).deliveries.get(), "succeeded", days_ago=60)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE webhooks_webhookdelivery")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
    plan = _due(before=timezone.now() - 30 * DAY)[:500].explain()
    assert "webhook_delivery_ended" in plan, plan


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_passes_at_once_deleting_an_events_last_deliveries_delete_the_event(
    organization: Organization, settings
) -> None:
    """Passes on several hosts each take the deliveries no other holds: an event sent to
    two endpoints can have its two deliveries deleted by two passes at once. Each saw the
    other's delivery still there (not committed yet) and left the event, which nothing
    would delete after (pruning goes by deliveries): an end-of-call report, the call's
    transcript, kept for good."""
    settings.WEBHOOKS_DELIVERY_RETENTION_DAYS = 30
    endpoint_create(organization, "a")
    endpoint_create(organization, "b")
    event = call_ended(organization)
    first, second = event.deliveries.order_by("pk")
    ended(first, "succeeded", days_ago=40)
    ended(second, "succeeded", days_ago=40)
    holding, first_deleted, pruning = threading.Event(), threading.Event(), threading.Event()
    pruned: dict[str, tuple[int, int]] = {}

    def one_pass() -> None:  # it took `first`, `second` held by the other
        try:
            holding.wait(timeout=10)
            with transaction.atomic():
                pruned["one"] = webhook_history_prune()
                first_deleted.set()
                pruning.wait(timeout=10)
                time.sleep(0.5)  # the other deletes `second` meanwhile (or waits for this)
        finally:
            connections.close_all()

    def other_pass() -> None:  # it took `second` (its first statement's lock), then ran
        try:
            with transaction.atomic():
                list(WebhookDelivery.objects.select_for_update().filter(pk=second.pk))
                holding.set()
                first_deleted.wait(timeout=10)
                pruning.set()
                pruned["other"] = webhook_history_prune()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one_pass), threading.Thread(target=other_pass)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert pruned["one"][0] == pruned["other"][0] == 1
    assert not WebhookDelivery.objects.exists()
    assert not WebhookEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_endpoints_deletion_waits_for_a_pass_pruning_its_deliveries_not_deadlocks(
    organization: Organization, settings
) -> None:
    """A pass holds the deliveries it takes, then deletes their attempts; the deletion
    deleted the attempts first, then waited for the deliveries: PostgreSQL found the
    deadlock and one side failed (the API's DELETE a 503). The deletion now takes the
    deliveries first, in id order, so it waits for the pass and then finds them gone."""
    settings.WEBHOOKS_DELIVERY_RETENTION_DAYS = 30
    endpoint = endpoint_create(organization)
    delivery = call_ended(organization).deliveries.get()
    ended(delivery, "succeeded", days_ago=40)
    holding = threading.Event()
    errors: list[BaseException] = []

    def pruning_pass() -> None:  # has taken the delivery when the deletion starts
        try:
            with transaction.atomic():
                list(WebhookDelivery.objects.select_for_update().filter(pk=delivery.pk))
                holding.set()
                time.sleep(0.5)  # the deletion runs meanwhile
                webhook_history_prune()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def deletion() -> None:  # its deliveries deleted by the pass after it (batches)
        try:
            holding.wait(timeout=10)
            services.webhook_endpoint_delete(endpoint=endpoint)
            webhook_history_prune()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=pruning_pass), threading.Thread(target=deletion)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    webhook_history_prune()  # the endpoint, if its delivery was still held
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    assert not WebhookDelivery.objects.filter(pk=delivery.pk).exists()
    assert not WebhookAttempt.objects.filter(delivery_id=delivery.pk).exists()
