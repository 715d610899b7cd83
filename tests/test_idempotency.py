"""`Idempotency-Key` on POST /calls: one key, one call, for 24 hours."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import threading
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from calls.expiry import calls_expire
from calls.idempotency import idempotent_call
from calls.models import Call, IdempotencyRecord
from voicecalls.errors import Conflict

pytestmark = pytest.mark.django_db

BODY = {"workflow_slug": "daily-call", "user_id": "user-123"}


def post(api: APIClient, body: dict, key: str):
    return api.post("/api/v1/calls", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_return_the_first_response_and_one_call(
    api: APIClient, workflow
) -> None:
    first = post(api, BODY, "k-1")
    second = post(api, BODY, "k-1")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert Call.objects.count() == 1


def test_the_same_key_with_another_body_is_422(api: APIClient, workflow) -> None:
    post(api, BODY, "k-1")

    response = post(api, {**BODY, "user_id": "someone-else"}, "k-1")

    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "idempotency_key_reused"
    assert Call.objects.count() == 1


@pytest.mark.parametrize("change", ["rename", "delete"])
def test_a_retry_after_the_workflow_was_renamed_or_deleted_gets_the_first_response(
    api: APIClient, workflow, change: str
) -> None:
    first = post(api, BODY, "k-1")
    if change == "rename":
        renamed = api.patch(f"/api/v1/workflows/{workflow.id}", {"slug": "v2"}, format="json")
        assert renamed.status_code == 200, renamed.content
    else:
        assert api.delete(f"/api/v1/workflows/{workflow.id}").status_code == 204

    retry = post(api, BODY, "k-1")

    assert (retry.status_code, retry.json()) == (201, first.json())
    assert Call.objects.count() == 1


def test_key_order_in_the_body_does_not_matter(api: APIClient, workflow) -> None:
    first = post(api, {"workflow_slug": "daily-call", "user_id": "u"}, "k-1")
    second = post(api, {"user_id": "u", "workflow_slug": "daily-call"}, "k-1")

    assert second.json()["call_id"] == first.json()["call_id"]


def test_keys_are_scoped_to_the_organization(
    api: APIClient, outsider_api: APIClient, workflow, outsider_workflow
) -> None:
    mine = post(api, BODY, "shared-key")
    theirs = post(outsider_api, BODY, "shared-key")

    assert theirs.status_code == 201
    assert theirs.json()["call_id"] != mine.json()["call_id"]
    assert Call.objects.count() == 2


def test_a_request_still_in_flight_with_the_key_is_409(
    api: APIClient, organization, workflow
) -> None:
    from calls.idempotency import _fingerprint

    IdempotencyRecord.objects.create(
        organization=organization, key="k-1", request_hash=_fingerprint(BODY)
    )

    response = post(api, BODY, "k-1")

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "idempotency_key_in_progress"
    assert Call.objects.count() == 0


def test_a_key_older_than_24_hours_starts_over(api: APIClient, workflow) -> None:
    first = post(api, BODY, "k-1")
    IdempotencyRecord.objects.update(created_at=timezone.now() - datetime.timedelta(hours=25))

    second = post(api, {**BODY, "user_id": "new"}, "k-1")

    assert second.status_code == 201
    assert second.json()["call_id"] != first.json()["call_id"]


def test_records_past_their_24_hours_are_deleted_by_expire_calls(
    api: APIClient, workflow, fake_livekit
) -> None:
    """Each holds the first answer, whose token names the participant: nothing deleted
    them, so every keyed create's answer was kept for good, not for 24 hours."""
    post(api, {**BODY, "user_data": {"name": "Ada"}}, "old")
    post(api, BODY, "new")
    day_ago = timezone.now() - datetime.timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS + 1)
    IdempotencyRecord.objects.filter(key="old").update(created_at=day_ago)

    result = calls_expire()

    assert result.idempotency_records_pruned == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_an_abandoned_in_flight_key_is_taken_over(api: APIClient, organization, workflow) -> None:
    IdempotencyRecord.objects.create(
        organization=organization,
        key="k-1",
        request_hash="whatever",
        created_at=timezone.now() - datetime.timedelta(minutes=5),
    )

    assert post(api, BODY, "k-1").status_code == 201


def test_a_failed_first_attempt_leaves_the_key_free(api: APIClient, workflow) -> None:
    failed = post(api, {"workflow_slug": "nope"}, "k-1")
    retried = post(api, BODY, "k-1")

    assert failed.status_code == 400
    assert retried.status_code == 201
    assert IdempotencyRecord.objects.get().response_status == 201


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_keys_must_be_1_to_255_characters(api: APIClient, workflow, key: str) -> None:
    response = post(api, BODY, key)

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "Idempotency-Key"
    assert Call.objects.count() == 0


@pytest.mark.parametrize("key", ["k\x00-1", "k\x1b[31m", "k\x7f"])
def test_a_key_with_a_control_character_is_400_not_stored(
    api: APIClient, workflow, key: str
) -> None:
    """PostgreSQL cannot store a NUL in text (it was a 500 there), and no HTTP header
    may carry a control character: the servers in front refuse them, the API too."""
    response = post(api, BODY, key)

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "code": "invalid",
            "detail": "Must be 1 to 255 printable characters.",
            "attr": "Idempotency-Key",
        }
    ]
    assert (Call.objects.count(), IdempotencyRecord.objects.count()) == (0, 0)


@pytest.mark.parametrize("key", ["a\tb", "k\x1b[31m", "k\x7f", "k\x00-1", "\t"])
def test_the_schema_refuses_the_keys_the_api_refuses(api: APIClient, workflow, key: str) -> None:
    """Its pattern (`\\S`) let any control character through: a tab, which HTTP allows
    inside a header value, passed an SDK's check and was then refused as not printable."""
    schema = yaml.safe_load((Path(settings.BASE_DIR) / "openapi.yaml").read_text())
    for path in ("/api/v1/calls", "/api/v1/webhook-endpoints/{id}/test"):
        [header] = [p for p in schema["paths"][path]["post"]["parameters"] if p["in"] == "header"]
        assert re.search(header["schema"]["pattern"], key) is None, (path, key)
        assert re.search(header["schema"]["pattern"], " k-1\u00e9 ") is not None

    assert post(api, BODY, key).status_code == 400


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_call(client_key: str, workflow) -> None:
    from tests.conftest import bearer_client

    statuses: list[int] = []
    call_ids: set[str] = set()
    barrier = threading.Barrier(6)

    def attempt() -> None:
        client = bearer_client(client_key)
        barrier.wait()
        response = post(client, BODY, "race")
        statuses.append(response.status_code)
        if response.status_code == 201:
            call_ids.add(response.json()["call_id"])
        connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    assert len(call_ids) == 1
    assert Call.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_retry_while_a_request_slower_than_the_lock_still_runs_is_409_and_runs_nothing(
    organization, settings
) -> None:
    """Past IDEMPOTENCY_LOCK_SECONDS a retry took the key over although the first
    request was still running (waiting out a PgBouncer pause, a lock): both ran, so one
    key made two calls (a phone dialed twice). A running request holds its record's
    row lock; only a dead one's record (its connection gone, the lock with it) is taken
    over."""
    settings.IDEMPOTENCY_LOCK_SECONDS = 0
    running, finish = threading.Event(), threading.Event()
    answers, runs = {}, []

    def slow() -> tuple[int, dict]:
        runs.append("first")
        running.set()
        assert finish.wait(10)
        return 201, {"call_id": "first"}

    def first() -> None:
        try:
            answers["first"] = idempotent_call(
                organization=organization, key="k", body={}, run=slow
            )
        finally:
            connection.close()

    def retried() -> tuple[int, dict]:
        runs.append("retry")
        return 201, {"call_id": "retry"}

    thread = threading.Thread(target=first)
    thread.start()
    assert running.wait(10)
    try:
        with pytest.raises(Conflict):
            idempotent_call(organization=organization, key="k", body={}, run=retried)
    finally:
        finish.set()
        thread.join(10)
    replay = idempotent_call(organization=organization, key="k", body={}, run=retried)

    assert runs == ["first"]
    assert answers["first"] == replay == (201, {"call_id": "first"})


@pytest.mark.postgres
def test_a_replay_is_the_first_answer_byte_for_byte(api: APIClient, workflow) -> None:
    """PostgreSQL's jsonb keeps the stored answer's keys in its own order: the replay
    began with "token", the first answer with "call_id"."""
    first = post(api, BODY, "order-42")
    replay = post(api, BODY, "order-42")

    assert first.status_code == replay.status_code == 201
    assert replay.content == first.content


def test_a_deeply_nested_unknown_field_with_a_key_is_not_a_500(api: APIClient, workflow) -> None:
    """Unknown fields are ignored (DESIGN.md, Errors), and the parser takes nesting up
    to 1024 levels: the key's fingerprint of such a body must not blow Python's
    recursion limit (it was a 500 from `_fingerprint`'s json.dumps)."""
    nested = "[" * 1020 + "]" * 1020
    body = '{"workflow_slug": "daily-call", "client_context": ' + nested + "}"

    first = api.post(
        "/api/v1/calls", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="deep-1"
    )
    replay = api.post(
        "/api/v1/calls", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="deep-1"
    )

    assert first.status_code == 201, first.content
    assert replay.status_code == 201
    assert replay.json()["call_id"] == first.json()["call_id"]
    assert Call.objects.count() == 1


def _plain_sha256(body: dict) -> str:
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def test_the_stored_fingerprint_of_a_body_cannot_be_worked_back_to_its_number(
    api: APIClient, workflow
) -> None:
    """A plain SHA-256 of a slug and a phone number is that number to whoever reads the
    table (ten billion guesses), also after an erasure of it: the fingerprint is keyed."""
    body = {"workflow_slug": "daily-call", "user_id": "+14155550123"}

    assert post(api, body, "k-1").status_code == 201

    stored = IdempotencyRecord.objects.get().request_hash
    assert stored != _plain_sha256(body)
    assert len(stored) == 64


def test_a_retry_finds_the_first_answer_after_a_secret_key_rotation_and_in_an_older_record(
    api: APIClient, workflow, settings
) -> None:
    first = post(api, BODY, "k-1")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY

    after_rotation = post(api, BODY, "k-1")
    # A record written before fingerprints were keyed (records live 24 hours).
    IdempotencyRecord.objects.update(request_hash=_plain_sha256(BODY))
    older = post(api, BODY, "k-1")

    assert after_rotation.json() == older.json() == first.json()
    assert post(api, {**BODY, "user_id": "someone-else"}, "k-1").status_code == 422
    assert Call.objects.count() == 1
