"""The admin keeps the API's rules (the price-override cap, settings a customer changed
while a page was open), the bounds of tables that grow with calls (no count of every
row, no listing of every call), and answers odd URLs without a 500."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from billing.models import PriceOverride
from billing.services import MAX_PRICE_OVERRIDES_PER_ORGANIZATION
from tests.factories import CallFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser(db: None) -> Client:
    user = User.objects.create_superuser(username="staff", email="staff@example.com")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _fill_price_overrides(organization) -> None:
    PriceOverride.objects.bulk_create(
        PriceOverride(
            organization=organization,
            component="tts",
            provider="acme",
            model=f"voice-{i}",
            unit_price_usd=Decimal("0.1"),
        )
        for i in range(MAX_PRICE_OVERRIDES_PER_ORGANIZATION)
    )


def test_the_admin_cannot_add_a_price_override_past_the_organizations_cap(
    superuser: Client, organization
) -> None:
    """POST /prices/overrides refuses the 501st override (every call's cost reads them
    all); the admin's add form saves it."""
    _fill_price_overrides(organization)

    response = superuser.post(
        reverse("admin:billing_priceoverride_add"),
        {
            "organization": organization.pk,
            "component": "llm_prompt",
            "provider": "openai",
            "model": "gpt-4o",
            "unit_price_usd": "0.0000004",
        },
    )

    assert response.status_code == 200, "saved an override the prices API refuses"
    assert (
        PriceOverride.objects.filter(organization=organization).count()
        == MAX_PRICE_OVERRIDES_PER_ORGANIZATION
    )


def test_the_admin_cannot_move_an_override_into_an_organization_at_its_cap(
    superuser: Client, organization, outsider
) -> None:
    _fill_price_overrides(organization)
    theirs = PriceOverride.objects.create(
        organization=outsider,
        component="llm_prompt",
        provider="openai",
        model="gpt-4o",
        unit_price_usd=Decimal("0.0000004"),
    )

    response = superuser.post(
        reverse("admin:billing_priceoverride_change", args=[theirs.pk]),
        {
            "organization": organization.pk,
            "component": "llm_prompt",
            "provider": "openai",
            "model": "gpt-4o",
            "unit_price_usd": "0.0000004",
        },
    )

    assert response.status_code == 200, "moved an override past the organization's cap"
    assert (
        PriceOverride.objects.filter(organization=organization).count()
        == MAX_PRICE_OVERRIDES_PER_ORGANIZATION
    )


@pytest.mark.postgres
@pytest.mark.parametrize(
    "url",
    [
        "/admin/calls/call/?status__exact=%00",
        "/admin/calls/call/?user_id=a%00",
        "/admin/webhooks/webhookdelivery/?status__exact=%00",
        "/admin/recordings/recording/?status__exact=%00",
        "/admin/privacy/erasure/?status__exact=%00",
    ],
)
def test_a_nul_in_a_list_filter_is_a_bad_filter_not_a_500(
    superuser: Client, organization, url: str
) -> None:
    """PostgreSQL refuses a NUL in a parameter (DataError); the date-safe changelist
    turns bad dates into `?e=1` but lets this one through as a 500."""
    CallFactory(organization=organization)

    response = superuser.get(url)

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "url", ["/admin/webhooks/webhookevent/%00/change/", "/admin/accounts/apikey/%00/change/"]
)
def test_a_nul_in_an_object_id_is_not_found_not_a_500(superuser: Client, url: str) -> None:
    response = superuser.get(url)

    assert response.status_code in (302, 404)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "url",
    [
        "/admin/autocomplete/?app_label=calls&model_name=call&field_name=organization&term=%00",
        "/admin/autocomplete/?app_label=telephony&model_name=phonenumber&field_name=trunk&term=a%00",
    ],
)
def test_a_nul_in_an_autocomplete_term_matches_nothing_not_a_500(
    superuser: Client, organization, url: str
) -> None:
    """Django's autocomplete searches any registered model a foreign key points at with
    the term as sent, which PostgreSQL refuses holding a NUL (DataError), as it does in
    a list's search, which answers it without a 500."""
    response = superuser.get(url)

    assert response.status_code == 200
    assert response.json() == {"results": [], "pagination": {"more": False}}


_LIMIT = re.compile(r"\bLIMIT\s+\d", re.IGNORECASE)


def _unbounded_counts(queries: list[dict]) -> list[str]:
    """COUNT queries that read every row they match (no LIMIT inside)."""
    return [
        q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and not _LIMIT.search(q["sql"])
    ]


@pytest.mark.parametrize(
    "url", ["/admin/webhooks/webhookdelivery/", "/admin/webhooks/webhookevent/"]
)
def test_the_webhook_lists_count_no_more_than_the_call_list_does(
    superuser: Client, organization, url: str
) -> None:
    """Deliveries and events grow with calls (several per call, per endpoint): their
    lists, like the call list (calls.admin_paging), must not count every row, twice."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webhooks import outbox, services
    from webhooks.models import EventType

    services.webhook_endpoint_create(
        organization=organization,
        url="https://example.com/hook",
        events=[EventType.CALL_STATUS_CHANGED],
    )
    call = CallFactory(organization=organization)
    outbox.call_status_changed_record(
        call_id=call.id, from_status=None, to_status="active", end_reason=None, at=call.created_at
    )

    with CaptureQueriesContext(connection) as queries:
        response = superuser.get(url)

    assert response.status_code == 200
    assert _unbounded_counts(queries.captured_queries) == []


def test_an_organizations_delete_page_does_not_read_every_call(
    superuser: Client, organization
) -> None:
    """Django's delete page collects every related row to list it: for an organization
    that is all of its calls (a customer's million, every column, user_data included),
    its webhook events and costs, read into memory to answer "cannot delete"."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    CallFactory.create_batch(3, organization=organization)

    with CaptureQueriesContext(connection) as queries:
        response = superuser.get(
            reverse("admin:accounts_organization_delete", args=[organization.pk])
        )

    assert response.status_code == 200
    unbounded = [
        q["sql"]
        for q in queries.captured_queries
        if 'FROM "calls_call"' in q["sql"] and not _LIMIT.search(q["sql"])
    ]
    assert unbounded == [], "the delete page read every call of the organization"


def test_the_call_lists_show_counts_link_counts_no_more_than_the_cap(
    superuser: Client, organization
) -> None:
    """Django 5's facets ("Show counts" in the filter sidebar, `?_facets=True`) count
    every call once per filter, a COUNT … FILTER per status, direction, channel, and per
    workflow and organization on the platform: the full scans calls.admin_paging keeps
    the call list from."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import WorkflowFactory

    other = WorkflowFactory(organization=organization)
    CallFactory.create_batch(2, organization=organization)
    CallFactory(organization=organization, workflow=other)

    offered = "_facets=True" in superuser.get("/admin/calls/call/").content.decode()
    with CaptureQueriesContext(connection) as queries:
        response = superuser.get("/admin/calls/call/", {"_facets": "True"})

    assert response.status_code == 200
    assert _unbounded_counts(queries.captured_queries) == []
    assert not offered, "the call list offers a link that counts every call"


def test_saving_an_organization_page_keeps_a_retention_the_customer_set_since_it_was_read(
    superuser: Client, organization, api
) -> None:
    """save_model saves `form.changed_data` so that "settings PATCHed" since the form
    was read survive. But the form is bound to the row as it is at the POST, so every
    value the page still holds from before the PATCH counts as changed and is written
    back: the customer's new retention is wiped (their data kept past it)."""
    url = reverse("admin:accounts_organization_change", args=[organization.pk])
    page = superuser.get(url)  # staff open the page: no retention set yet
    assert page.status_code == 200

    patched = api.patch("/api/v1/organization", {"transcript_retention_days": 30}, format="json")
    assert patched.status_code == 200

    # Staff change only the concurrency limit and save what their page held.
    response = superuser.post(
        url,
        {
            "slug": organization.slug,
            "name": organization.name,
            "concurrency_limit": 5,
            "allowed_destination_countries": "[]",
            "max_outbound_calls_per_minute": 10,
            "max_outbound_calls_per_day": 500,
            "transcript_retention_days": "",
        },
    )

    organization.refresh_from_db()
    assert response.status_code in (200, 302)
    assert organization.transcript_retention_days == 30, "the customer's retention was wiped"


def test_a_capped_list_says_its_count_stops_there_and_so_does_select_all(
    superuser: Client, organization, monkeypatch
) -> None:
    """The recordings and webhook lists printed the capped count (cap + 1) as exact:
    "4 webhook events", and "Select all 4 webhook events" for an action on all."""
    from django.utils import timezone

    from webhooks.models import EventType, WebhookEvent

    monkeypatch.setattr("calls.admin_paging.COUNT_CAP", 3)
    monkeypatch.setattr("webhooks.admin.WebhookEventAdmin.list_per_page", 2)
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            id=f"evt_{n}",
            organization=organization,
            type=EventType.CALL_STATUS_CHANGED,
            occurred_at=timezone.now(),
            body="{}",
        )
        for n in range(6)
    )
    monkeypatch.setattr("webhooks.admin.WebhookEventAdmin.actions", ["delete_selected"])

    html = superuser.get("/admin/webhooks/webhookevent/").content.decode()

    assert '<span id="capped-count">3+</span> webhook events' in html
    assert "Select all 3+ webhook events" in html
    assert "All 3+ selected" in html
    assert "4 webhook events" not in html


def test_an_organization_whose_secrets_no_configured_key_opens_can_still_be_deleted(
    superuser: Client, fake_livekit, settings
) -> None:
    """Django's delete page lists every row the organization takes with it, each read
    whole: one secret no configured CRYPTOGRAPHY_KEY opens (a key lost, a fallback
    removed before rotate_provider_keys ran) made the page, and so the deletion, a 500."""
    from django.utils import timezone

    from accounts.models import Organization
    from recordings.services import recording_storage_set
    from tests.factories import OrganizationFactory, ProviderKeyFactory
    from tests.phone import phone_ready
    from webhooks.models import EventType, WebhookDelivery, WebhookEvent
    from webhooks.services import tool_signing_secret_rotate, webhook_endpoint_create

    leaving = OrganizationFactory(slug="leaving")
    ProviderKeyFactory(organization=leaving)
    endpoint, _ = webhook_endpoint_create(
        organization=leaving, url="https://hooks.example.com/x", events=["call.ended"]
    )
    event = WebhookEvent.objects.create(
        organization=leaving, type=EventType.CALL_STATUS_CHANGED, occurred_at=timezone.now()
    )
    WebhookDelivery.objects.create(event=event, endpoint=endpoint)
    tool_signing_secret_rotate(organization=leaving)
    recording_storage_set(
        organization_id=leaving.pk,
        endpoint="",
        bucket="leaving-calls",
        region="us-east-1",
        access_key_id="AKIAEXAMPLE1234",
        secret_access_key="bucket-secret",
    )
    phone_ready(leaving)
    settings.CRYPTOGRAPHY_KEY = "a-key-none-of-its-secrets-was-written-with"
    url = reverse("admin:accounts_organization_delete", args=[leaving.pk])

    page = superuser.get(url)
    deleted = superuser.post(url, {"post": "yes"})

    assert page.status_code == 200
    listed = page.content.decode()
    for kind in ("Provider key", "Webhook endpoint", "Tool signing secret", "Sip trunk"):
        assert kind in listed
    assert "bucket-secret" not in listed
    assert deleted.status_code == 302
    assert not Organization.objects.filter(pk=leaving.pk).exists()
