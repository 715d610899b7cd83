"""POST /api/v1/erasures and GET /api/v1/erasures/{id}: a client asks for one user's
data to be erased and follows the erasure; bad input is a 400, other organizations'
erasures are not found."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django_tasks_db.models import DBTaskResult

from accounts.models import APIKey
from privacy.erasure import erasure_run
from privacy.keys import user_id_hash
from privacy.models import Erasure
from tests.conftest import bearer_client
from tests.privacy import personal_call

pytestmark = pytest.mark.django_db

URL = "/api/v1/erasures"


def iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


def erasure_body(erasure: Erasure, **changes: object) -> dict:
    return {
        "id": str(erasure.pk),
        "status": "pending",
        "calls_matched": 0,
        "calls_erased": 0,
        "calls_waiting": 0,
        "transcript_lines_erased": 0,
        "webhook_events_scrubbed": 0,
        "recordings_deleted": 0,
        "requested_by_key_prefix": APIKey.objects.get(name="test").prefix,
        "requested_by_key_name": "test",
        "created_at": iso(erasure.created_at),
        "started_at": None,
        "finished_at": None,
        **changes,
    }


def test_an_erasure_is_accepted_and_runs_in_the_background(
    api, organization, django_capture_on_commit_callbacks
) -> None:
    personal_call(organization)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, {"user_id": "user-123"}, format="json")

    assert response.status_code == 202
    erasure = Erasure.objects.get()
    assert response.json() == erasure_body(erasure)
    assert erasure.organization == organization
    assert erasure.user_id_hash == user_id_hash(organization_id=organization.pk, user_id="user-123")
    (task,) = DBTaskResult.objects.all()
    assert task.args_kwargs == {"args": [str(erasure.pk)], "kwargs": {}}


def test_an_erasure_shows_what_it_erased_once_completed(api, organization) -> None:
    personal_call(organization)
    erasure_id = api.post(URL, {"user_id": "user-123"}, format="json").json()["id"]
    erasure_run(erasure_id=erasure_id)
    erasure = Erasure.objects.get()

    response = api.get(f"{URL}/{erasure_id}")

    assert response.status_code == 200
    assert response.json() == erasure_body(
        erasure,
        status="completed",
        calls_matched=1,
        calls_erased=1,
        transcript_lines_erased=2,
        started_at=iso(erasure.started_at),
        finished_at=iso(erasure.finished_at),
    )


def test_erasing_the_user_id_a_call_was_created_with_erases_that_call(api, workflow) -> None:
    """Create trimmed "user-123 " and erasure kept it as sent: it matched no call, and
    the user's data stayed."""
    created = api.post(
        "/api/v1/calls",
        {"workflow_slug": "daily-call", "user_id": "user-123 ", "user_data": {"name": "Ann"}},
        format="json",
    )
    assert created.status_code == 201

    erasure_id = api.post(URL, {"user_id": "user-123 "}, format="json").json()["id"]
    erasure_run(erasure_id=erasure_id)

    body = api.get(f"{URL}/{erasure_id}").json()
    assert (body["calls_matched"], body["calls_erased"]) == (1, 1)
    assert api.get(f"/api/v1/calls/{created.json()['call_id']}").json()["user_data"] == {}


def test_an_erasure_of_a_user_without_calls_completes_with_nothing_matched(api) -> None:
    erasure_id = api.post(URL, {"user_id": "nobody"}, format="json").json()["id"]
    erasure_run(erasure_id=erasure_id)

    body = api.get(f"{URL}/{erasure_id}").json()

    assert (body["status"], body["calls_matched"], body["calls_erased"]) == ("completed", 0, 0)


def test_another_organizations_erasure_is_not_found(api, outsider_api, organization) -> None:
    erasure_id = api.post(URL, {"user_id": "user-123"}, format="json").json()["id"]

    response = outsider_api.get(f"{URL}/{erasure_id}")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


@pytest.mark.parametrize(
    "erasure_id", ["0147d908-9e67-4b00-b7f4-b495894f327d", "not-a-uuid", "1", "%00"]
)
def test_an_unknown_or_malformed_erasure_id_is_not_found(api, erasure_id) -> None:
    response = api.get(f"{URL}/{erasure_id}")

    assert response.status_code == 404
    assert response.json()["type"] == "client_error"


def test_an_outsiders_erasure_never_touches_this_organizations_calls(
    outsider_api, organization
) -> None:
    call = personal_call(organization)

    erasure_id = outsider_api.post(URL, {"user_id": "user-123"}, format="json").json()["id"]
    erasure_run(erasure_id=erasure_id)

    call.refresh_from_db()
    assert (call.user_id, call.erased_at) == ("user-123", None)
    assert Erasure.objects.get().calls_matched == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "required"),
        ({"user_id": ""}, "blank"),
        ({"user_id": "   "}, "blank"),  # no call has it; the schema refuses it too
        ({"user_id": None}, "null"),
        ({"user_id": 123}, "invalid"),
        ({"user_id": True}, "invalid"),
        ({"user_id": ["user-123"]}, "invalid"),
        ({"user_id": {"id": "user-123"}}, "invalid"),
        ({"user_id": "u" * 256}, "max_length"),
        ({"user_id": "user\x00123"}, "null_characters_not_allowed"),
    ],
)
def test_a_user_id_that_is_no_string_of_1_to_255_characters_is_400(api, body, code) -> None:
    response = api.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert [(e["code"], e["attr"]) for e in response.json()["errors"]] == [(code, "user_id")]
    assert Erasure.objects.count() == 0


def test_a_body_that_is_no_json_object_is_400(api) -> None:
    for body in ('["user-123"]', '"user-123"', "{"):
        response = api.post(URL, body, content_type="application/json")
        assert response.status_code == 400, body
    assert Erasure.objects.count() == 0


def test_a_huge_body_is_413_and_nothing_is_erased(api) -> None:
    response = api.post(URL, {"user_id": "u" * (1024 * 1024)}, format="json")

    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "request_too_large"
    assert Erasure.objects.count() == 0


def test_erasures_need_a_client_key(anonymous_api, agent_api) -> None:
    assert anonymous_api.post(URL, {"user_id": "user-123"}, format="json").status_code == 401
    assert agent_api.post(URL, {"user_id": "user-123"}, format="json").status_code == 403
    assert anonymous_api.get(f"{URL}/{uuid.uuid4()}").status_code == 401
    assert Erasure.objects.count() == 0


def test_reading_an_erasure_takes_a_fixed_number_of_queries(api, django_assert_num_queries) -> None:
    erasure_id = api.post(URL, {"user_id": "user-123"}, format="json").json()["id"]

    with django_assert_num_queries(2):  # the key with its organization, the erasure
        assert api.get(f"{URL}/{erasure_id}").status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_erasures_of_one_user_each_answer_202_and_erase_each_call_once(
    client_key, organization
) -> None:
    calls = [personal_call(organization) for _ in range(5)]
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def request_and_run() -> None:
        try:
            barrier.wait(timeout=10)
            answer = bearer_client(client_key).post(URL, {"user_id": "user-123"}, format="json")
            statuses.append(answer.status_code)
            erasure_run(erasure_id=answer.json()["id"], batch_size=2)
        finally:
            connection.close()

    threads = [threading.Thread(target=request_and_run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [202] * 4
    erasures = Erasure.objects.all()
    assert {e.status for e in erasures} == {"completed"}
    assert sum(e.calls_erased for e in erasures) == len(calls)
    assert not any(e.user_id for e in erasures)
