"""Phone calls under concurrency, on PostgreSQL (row locks): the concurrency limit and
Idempotency-Key hold for phone calls as for web calls, and only the calls created are
ever dialed."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import Call
from tests.phone import CALLEE, CALLS, phone_ready, run_dial_worker

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BODY = {"workflow_slug": "daily-call", "phone_number": CALLEE}


def in_parallel(count: int, client_key: str, post: Callable[[APIClient], object]) -> list:
    barrier = threading.Barrier(count)
    answers: list = []

    def attempt() -> None:
        client = APIClient(raise_request_exception=False)  # a 500 is a status here
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {client_key}")
        try:
            barrier.wait(timeout=10)
            answers.append(post(client))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_twenty_concurrent_phone_calls_at_a_limit_of_five_dial_exactly_five(
    client_key, organization, workflow, sip_fake
) -> None:
    phone_ready(organization)
    Organization.objects.filter(pk=organization.pk).update(
        concurrency_limit=5, max_outbound_calls_per_minute=100
    )

    answers = in_parallel(20, client_key, lambda c: c.post(CALLS, BODY, format="json"))
    run_dial_worker()

    assert sorted(a.status_code for a in answers) == [201] * 5 + [429] * 15
    refused = [a.json() for a in answers if a.status_code == 429]
    assert {b["errors"][0]["code"] for b in refused} == {"concurrency_limit_reached"}
    assert Call.objects.count() == 5
    dialed = {d.body["roomName"] for d in sip_fake.calls("CreateSIPParticipant")}
    assert dialed == {f"call-{call.pk}" for call in Call.objects.all()}
    assert len(sip_fake.calls("CreateSIPParticipant")) == 5


def test_the_same_idempotency_key_in_parallel_makes_one_call_and_one_dial(
    client_key, organization, workflow, sip_fake
) -> None:
    phone_ready(organization)

    answers = in_parallel(
        6,
        client_key,
        lambda c: c.post(CALLS, BODY, format="json", HTTP_IDEMPOTENCY_KEY="phone-race"),
    )
    run_dial_worker()

    assert {a.status_code for a in answers} <= {201, 409}
    assert len({a.json()["call_id"] for a in answers if a.status_code == 201}) == 1
    assert Call.objects.count() == 1
    assert len(sip_fake.calls("CreateSIPParticipant")) == 1


def test_concurrent_phone_calls_at_the_daily_cap_end_with_exactly_the_cap(
    client_key, organization, workflow, sip_fake
) -> None:
    phone_ready(organization)
    Organization.objects.filter(pk=organization.pk).update(
        max_outbound_calls_per_day=3, max_outbound_calls_per_minute=100
    )

    answers = in_parallel(10, client_key, lambda c: c.post(CALLS, BODY, format="json"))

    assert sorted(a.status_code for a in answers) == [201] * 3 + [429] * 7
    refused = [a.json() for a in answers if a.status_code == 429]
    assert {b["meta"]["limit"] for b in refused} == {"outbound_calls_per_day"}
    assert Call.objects.count() == 3
