from __future__ import annotations

import re

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Organization
from calls.models import CallStatus
from tests.factories import CallFactory
from tests.webhook_receiver import Receiver, Reply
from webhooks import outbox, services
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import DeliveryStatus, EventType, WebhookDelivery, WebhookEndpoint
from webhooks.retention import webhook_history_prune


@pytest.fixture
def admin_client(db: None) -> Client:
    """A superuser's browser (no password: hashing one costs a second per test)."""
    user = User.objects.create_superuser(username="staff", email="staff@example.com")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def receiver() -> Receiver:
    with Receiver([Reply(500)]) as receiver:
        yield receiver


@pytest.fixture
def endpoint_and_secrets(organization: Organization, receiver: Receiver) -> tuple:
    endpoint, old = services.webhook_endpoint_create(
        organization=organization, url=receiver.url, events=[EventType.CALL_STATUS_CHANGED]
    )
    new = services.webhook_endpoint_rotate_secret(endpoint=endpoint)
    return endpoint, [old, new]


@pytest.fixture
def deliveries(organization: Organization, endpoint_and_secrets: tuple) -> list[WebhookDelivery]:
    """Two deliveries: one failed once (and retrying), one succeeded."""
    call = CallFactory(organization=organization)
    for to_status in (CallStatus.ACTIVE, CallStatus.COMPLETED):
        outbox.call_status_changed_record(
            call_id=call.id,
            from_status=None,
            to_status=to_status,
            end_reason="user_hangup" if to_status == CallStatus.COMPLETED else None,
            at=call.created_at,
        )
    rows = list(WebhookDelivery.objects.order_by("id"))
    for delivery in rows:
        webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
        delivery.refresh_from_db()
    assert [d.status for d in rows] == [DeliveryStatus.PENDING, DeliveryStatus.SUCCEEDED]
    return rows


def assert_no_secret(html: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in html
        assert secret.removeprefix("whsec_") not in html


def test_endpoint_pages_never_show_the_secret(
    admin_client: Client, endpoint_and_secrets: tuple
) -> None:
    endpoint, secrets = endpoint_and_secrets
    pages = [
        reverse("admin:webhooks_webhookendpoint_changelist"),
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200
        assert endpoint.url in response.content.decode()
        assert_no_secret(response.content.decode(), secrets)


def test_endpoint_pages_open_when_no_configured_key_opens_its_secret(
    admin_client: Client, endpoint_and_secrets: tuple, settings
) -> None:
    """A fallback removed before `rotate_provider_keys` ran, or a mistyped key: staff
    still see, switch off and delete the endpoint."""
    endpoint, _ = endpoint_and_secrets
    settings.CRYPTOGRAPHY_KEY = "a-key-the-secrets-were-not-written-with"
    change = reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk])

    listed = admin_client.get(reverse("admin:webhooks_webhookendpoint_changelist"))
    shown = admin_client.get(change)
    saved = admin_client.post(change, {"url": endpoint.url, **read_now(endpoint)})
    deleted = admin_client.post(
        reverse("admin:webhooks_webhookendpoint_delete", args=[endpoint.pk]), {"post": "yes"}
    )

    assert [r.status_code for r in (listed, shown, saved, deleted)] == [200, 200, 302, 302]
    webhook_history_prune()  # and the retention pass deletes it
    assert not WebhookEndpoint.objects.exists()


def test_endpoints_are_not_added_in_the_admin(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:webhooks_webhookendpoint_add"))

    assert response.status_code == 403


def read_now(endpoint: WebhookEndpoint) -> dict:
    """The change page's hidden field: when the endpoint was read."""
    endpoint.refresh_from_db(fields=["updated_at"])
    return {"read_at": endpoint.updated_at.isoformat()}


def test_staff_can_disable_an_endpoint_and_keep_its_secret(
    admin_client: Client, endpoint_and_secrets: tuple
) -> None:
    endpoint, secrets = endpoint_and_secrets

    response = admin_client.post(
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
        {"url": endpoint.url, "description": "paused by support", **read_now(endpoint)},
    )

    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.description == "paused by support"
    assert endpoint.secret == secrets[1]


def test_a_change_page_read_before_the_worker_disabled_the_endpoint_does_not_enable_it(
    admin_client: Client, endpoint_and_secrets: tuple
) -> None:
    """Staff opened the page (enabled, its box ticked) and edited the description; the
    delivery worker disabled the endpoint meanwhile. Saving the page would enable it
    again, and clear why it was disabled."""
    endpoint, _ = endpoint_and_secrets
    url = reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk])
    page = admin_client.get(url).content.decode()
    read_at = re.search(r'name="read_at" value="([^"]+)"', page).group(1)
    disabled = "No delivery succeeded for 5 days; enable it when it answers."
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_reason=disabled, updated_at=timezone.now()
    )

    response = admin_client.post(
        url, {"url": endpoint.url, "description": "new", "enabled": "on", "read_at": read_at}
    )

    assert response.status_code == 200
    assert "This endpoint changed since this page was read (it is disabled now)" in (
        response.content.decode()
    )
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.description) == (
        False,
        disabled,
        "",
    )


def test_staff_cannot_save_an_internal_url_when_the_guard_is_on(
    admin_client: Client, endpoint_and_secrets: tuple, settings: object
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    endpoint, _ = endpoint_and_secrets
    url = endpoint.url

    response = admin_client.post(
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
        {"url": "https://10.0.0.1/x", "enabled": "on", **read_now(endpoint)},
    )

    assert response.status_code == 200
    assert "private, loopback or reserved" in response.content.decode()
    endpoint.refresh_from_db()
    assert endpoint.url == url


def test_deliveries_filter_by_status_and_show_no_secret(
    admin_client: Client, deliveries: list[WebhookDelivery], endpoint_and_secrets: tuple
) -> None:
    _, secrets = endpoint_and_secrets
    url = reverse("admin:webhooks_webhookdelivery_changelist")

    pending = admin_client.get(url, {"status__exact": "pending"})
    succeeded = admin_client.get(url, {"status__exact": "succeeded"})

    assert pending.status_code == succeeded.status_code == 200
    assert deliveries[0].event_id in pending.content.decode()
    assert deliveries[1].event_id not in pending.content.decode()
    assert deliveries[1].event_id in succeeded.content.decode()
    assert_no_secret(pending.content.decode() + succeeded.content.decode(), secrets)


def test_a_delivery_page_shows_its_attempts_and_no_secret(
    admin_client: Client, deliveries: list[WebhookDelivery], endpoint_and_secrets: tuple
) -> None:
    _, secrets = endpoint_and_secrets
    delivery = deliveries[0]

    response = admin_client.get(
        reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk])
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "HTTP 500" in html
    assert delivery.event_id in html
    assert 'name="_save"' not in html  # read-only evidence
    assert_no_secret(html, secrets)
    event_page = admin_client.get(
        reverse("admin:webhooks_webhookevent_change", args=[quote(delivery.event_id)])
    )
    assert event_page.status_code == 200
    assert_no_secret(event_page.content.decode(), secrets)
    # The delivery page's own link reaches the event (ids are quoted in admin URLs).
    link = re.search(r'href="(/admin/webhooks/webhookevent/[^"]+/change/)"', html)
    assert link and admin_client.get(link.group(1)).status_code == 200


def test_delivery_pages_open_when_no_configured_key_opens_their_endpoints_secrets(
    admin_client: Client, deliveries: list[WebhookDelivery], settings
) -> None:
    """The pages show each delivery's endpoint, which the list read with every column
    but the current secret (the secrets a rotation replaced, decrypted) and the page read
    whole: a key lost, or a fallback removed before `rotate_provider_keys` ran, made
    both a 500 for a rotated endpoint's deliveries."""
    delivery = deliveries[0]
    url = delivery.endpoint.url
    settings.CRYPTOGRAPHY_KEY = "a-key-the-secrets-were-not-written-with"

    listed = admin_client.get(reverse("admin:webhooks_webhookdelivery_changelist"))
    shown = admin_client.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk]))

    assert (listed.status_code, shown.status_code) == (200, 200)
    assert delivery.event_id in listed.content.decode()
    assert url in shown.content.decode()


def test_replay_resends_the_same_event_id(
    admin_client: Client,
    deliveries: list[WebhookDelivery],
    receiver: Receiver,
    settings: object,
    django_capture_on_commit_callbacks,
) -> None:
    settings.TASKS = {
        "default": {
            "BACKEND": "django_tasks.backends.immediate.ImmediateBackend",
            "QUEUES": ["default", "webhooks"],
        }
    }
    delivered = deliveries[1]
    sent_before = len(receiver.received)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:webhooks_webhookdelivery_changelist"),
            {"action": "replay", "_selected_action": [delivered.pk]},
        )

    assert response.status_code == 302
    assert len(receiver.received) == sent_before + 1
    replayed = receiver.received[-1]
    assert replayed.headers["webhook-id"] == delivered.event_id
    delivered.refresh_from_db()
    assert delivered.status == DeliveryStatus.SUCCEEDED
    assert delivered.attempt_count == 2


@pytest.mark.parametrize(
    "change",
    [{"enabled": False}, {"events": [EventType.CALL_ENDED]}],
    ids=["disabled", "unsubscribed"],
)
def test_replaying_to_an_endpoint_that_takes_the_event_no_more_is_refused(
    admin_client: Client,
    deliveries: list[WebhookDelivery],
    receiver: Receiver,
    settings: object,
    django_capture_on_commit_callbacks,
    change: dict,
) -> None:
    """The worker fails such a delivery at once, sending nothing: "queued for replay"
    was untrue, and a delivery that had succeeded read failed after."""
    settings.TASKS = {
        "default": {
            "BACKEND": "django_tasks.backends.immediate.ImmediateBackend",
            "QUEUES": ["default", "webhooks"],
        }
    }
    delivered = deliveries[1]
    services.webhook_endpoint_update(endpoint=delivered.endpoint, **change)
    sent_before = len(receiver.received)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:webhooks_webhookdelivery_changelist"),
            {"action": "replay", "_selected_action": [delivered.pk]},
            follow=True,
        )

    html = response.content.decode()
    assert "1 delivery(ies) not replayed: their endpoint" in html
    assert "queued for replay" not in html
    assert len(receiver.received) == sent_before
    delivered.refresh_from_db()
    assert (delivered.status, delivered.attempt_count) == (DeliveryStatus.SUCCEEDED, 1)


def test_replaying_a_delivery_whose_endpoint_its_customer_deletes_meanwhile_is_a_message(
    admin_client: Client, deliveries: list[WebhookDelivery]
) -> None:
    """The customer deletes the endpoint after the action read the deliveries: the
    replay finds no endpoint (WebhookEndpoint.DoesNotExist, which the API answers
    404), and the admin, not catching it, answered 500."""
    delivered = deliveries[1]
    deleted = []

    def delete_before_the_replay_reads_the_endpoint(execute, sql, params, many, context):
        # The replay's own read of the endpoint (whether it takes the event).
        if not deleted and sql.startswith('SELECT "webhooks_webhookendpoint"."enabled"'):
            deleted.append(True)
            services.webhook_endpoint_delete(endpoint=delivered.endpoint)
        return execute(sql, params, many, context)

    admin_client.raise_request_exception = False
    with connection.execute_wrapper(delete_before_the_replay_reads_the_endpoint):
        response = admin_client.post(
            reverse("admin:webhooks_webhookdelivery_changelist"),
            {"action": "replay", "_selected_action": [delivered.pk]},
            follow=True,
        )

    assert deleted
    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "1 delivery(ies) not replayed: their endpoint was deleted meanwhile."
    ]
    delivered.refresh_from_db()
    assert (delivered.status, delivered.attempt_count) == (DeliveryStatus.SUCCEEDED, 1)


def test_an_endpoints_delete_page_does_not_read_every_delivery(
    admin_client: Client, deliveries: list[WebhookDelivery]
) -> None:
    """Django's delete page collects every related row to list it: an endpoint's every
    delivery and attempt (months of events), read and listed one by one."""
    endpoint = deliveries[0].endpoint
    url = reverse("admin:webhooks_webhookendpoint_delete", args=[endpoint.pk])

    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(url)

    assert page.status_code == 200
    assert endpoint.url in page.content.decode()
    read = [
        q["sql"]
        for q in queries.captured_queries
        if re.search(r'FROM "webhooks_webhook(delivery|attempt)"', q["sql"])
        and not re.search(r"COUNT\(|\bLIMIT\s+\d", q["sql"])
    ]
    assert read == [], "the delete page read every delivery of the endpoint"

    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    webhook_history_prune()  # its deliveries go in the pass, in batches
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_a_deleted_endpoint_and_its_deliveries_leave_the_admin(
    admin_client: Client, deliveries: list[WebhookDelivery]
) -> None:
    """Deleted (its deliveries left to the retention pass), it is gone from the admin
    as from the API: no page lists or opens it or its deliveries."""
    endpoint = deliveries[0].endpoint
    services.webhook_endpoint_delete(endpoint=endpoint)

    pages = {
        "webhookendpoint_changelist": [],
        "webhookendpoint_change": [quote(endpoint.pk)],
        "webhookdelivery_changelist": [],
        "webhookdelivery_change": [deliveries[0].pk],
    }
    shown = {
        name: admin_client.get(reverse(f"admin:webhooks_{name}", args=args))
        for name, args in pages.items()
    }

    assert shown["webhookendpoint_changelist"].context["cl"].result_count == 0
    assert shown["webhookdelivery_changelist"].context["cl"].result_count == 0
    assert shown["webhookendpoint_change"].status_code == 302  # "does not exist"
    assert shown["webhookdelivery_change"].status_code == 302


def test_endpoint_search_and_filters_work(
    admin_client: Client, endpoint_and_secrets: tuple
) -> None:
    endpoint, _ = endpoint_and_secrets
    response = admin_client.get(
        reverse("admin:webhooks_webhookendpoint_changelist"),
        {"q": "127.0.0.1", "enabled__exact": 1},
    )

    assert response.status_code == 200
    assert endpoint.url in response.content.decode()
    assert WebhookEndpoint.objects.count() == 1


def test_the_call_page_links_to_the_calls_deliveries(
    admin_client: Client, organization: Organization, endpoint_and_secrets: tuple
) -> None:
    """Staff looking into a call see what was sent about it in one click: the call page
    had no way to its deliveries, and the deliveries' search (a LIKE on three columns
    across the whole log) is the slow way round."""
    mine, other = CallFactory(organization=organization), CallFactory(organization=organization)
    for call in (mine, other):
        outbox.call_status_changed_record(
            call_id=call.id,
            from_status="connecting",
            to_status="active",
            end_reason=None,
            at=timezone.now(),
        )
    link = f"{reverse('admin:webhooks_webhookdelivery_changelist')}?event__call={mine.pk}"

    page = admin_client.get(f"/admin/calls/call/{mine.pk}/change/").content.decode()
    listing = admin_client.get(link)

    assert f'href="{link}"' in page
    assert listing.status_code == 200
    shown = [delivery.pk for delivery in listing.context["cl"].result_list]
    assert shown == [WebhookDelivery.objects.get(event__call=mine).pk]


def test_support_staff_follow_a_calls_deliveries_and_cannot_replay_them(
    deliveries: list[WebhookDelivery], endpoint_and_secrets: tuple
) -> None:
    """Support reads calls; why a customer's webhook keeps failing (the attempts' status
    and error, its endpoint disabled and why) was out of their reach: 403."""
    from django.contrib.auth.models import Group

    user = User.objects.create_user("support", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    support = Client()
    support.force_login(user)
    endpoint, secrets = endpoint_and_secrets
    delivery = deliveries[0]

    call_page = support.get(f"/admin/calls/call/{delivery.event.call_id}/change/")
    link = re.search(r'href="([^"]+)">Webhook deliveries<', call_page.content.decode())
    listing = support.get(link.group(1).replace("&amp;", "&"))
    page = support.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk]))
    endpoint_page = support.get(
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk])
    )
    replay = support.post(
        reverse("admin:webhooks_webhookdelivery_changelist"),
        {"action": "replay", "_selected_action": [deliveries[1].pk]},
    )

    assert listing.status_code == page.status_code == endpoint_page.status_code == 200
    assert "HTTP 500" in page.content.decode()
    assert_no_secret(page.content.decode() + endpoint_page.content.decode(), secrets)
    assert 'name="_save"' not in endpoint_page.content.decode()
    assert replay.status_code in (200, 302, 403)
    assert WebhookDelivery.objects.get(pk=deliveries[1].pk).status == DeliveryStatus.SUCCEEDED


@pytest.mark.parametrize("by", ["call id", "event id", "endpoint url"])
def test_deliveries_search_finds_a_calls_an_events_or_an_endpoints_by_index(
    admin_client: Client, organization: Organization, endpoint_and_secrets: tuple, by: str
) -> None:
    """Each term is read as what it is, exactly (an index range), not as a LIKE on three
    columns over the whole log, joined to every call: seconds a search at scale."""
    endpoint, _ = endpoint_and_secrets
    mine, other = CallFactory(organization=organization), CallFactory(organization=organization)
    for call in (mine, other):
        outbox.call_status_changed_record(
            call_id=call.id,
            from_status="connecting",
            to_status="active",
            end_reason=None,
            at=timezone.now(),
        )
    delivery = WebhookDelivery.objects.get(event__call=mine)
    term = {"call id": str(mine.id), "event id": delivery.event_id, "endpoint url": "127.0.0.1"}

    with CaptureQueriesContext(connection) as queries:
        listing = admin_client.get(
            reverse("admin:webhooks_webhookdelivery_changelist"), {"q": f" {term[by]} "}
        )

    shown = {d.pk for d in listing.context["cl"].result_list}
    expected = set(WebhookDelivery.objects.values_list("pk", flat=True))
    assert shown == (expected if by == "endpoint url" else {delivery.pk})
    deliveries = [
        q["sql"] for q in queries.captured_queries if "webhooks_webhookdelivery" in q["sql"]
    ]
    assert not [sql for sql in deliveries if "LIKE" in sql.upper()]


@pytest.mark.parametrize("by", ["call id", "event id"])
def test_events_search_finds_a_calls_or_an_event_by_index(
    admin_client: Client, organization: Organization, endpoint_and_secrets: tuple, by: str
) -> None:
    mine, other = CallFactory(organization=organization), CallFactory(organization=organization)
    for call in (mine, other):
        outbox.call_status_changed_record(
            call_id=call.id,
            from_status="connecting",
            to_status="active",
            end_reason=None,
            at=timezone.now(),
        )
    event = WebhookDelivery.objects.get(event__call=mine).event
    term = {"call id": str(mine.id), "event id": event.id}[by]

    with CaptureQueriesContext(connection) as queries:
        listing = admin_client.get(reverse("admin:webhooks_webhookevent_changelist"), {"q": term})

    assert [e.pk for e in listing.context["cl"].result_list] == [event.pk]
    events = [q["sql"] for q in queries.captured_queries if "webhooks_webhookevent" in q["sql"]]
    assert not [sql for sql in events if "LIKE" in sql.upper()]
