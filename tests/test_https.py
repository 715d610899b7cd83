"""Plain HTTP in production (SECURE_SSL_REDIRECT): pages are redirected to HTTPS, the
API is refused, health checks answer."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from calls.models import Call
from tests.conftest import bearer_client


@pytest.fixture
def production_https(settings) -> None:
    settings.SECURE_SSL_REDIRECT = True


def test_an_api_request_over_plain_http_is_refused_not_redirected(
    production_https, client_key: str, workflow
) -> None:
    """A client following a 301 sends the POST again as a GET: the create came back as
    a 200 list of calls, and nothing said it was not made."""
    api: APIClient = bearer_client(client_key)

    response = api.post("/api/v1/calls", {"workflow_slug": workflow.slug})

    assert response.status_code == 403
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "https_required",
                "detail": "The API is served over HTTPS only: send this request to https://.",
                "attr": None,
            }
        ],
    }
    assert Call.objects.count() == 0


def test_over_https_the_api_answers(production_https, client_key: str, workflow) -> None:
    api: APIClient = bearer_client(client_key)

    response = api.post("/api/v1/calls", {"workflow_slug": workflow.slug}, secure=True)

    assert response.status_code == 201


def test_pages_are_redirected_and_health_checks_answer_over_plain_http(
    production_https, client
) -> None:
    assert client.get("/admin/login/").status_code == 301
    assert client.get("/healthz").status_code == 200


def test_the_api_docs_page_is_redirected_over_plain_http(production_https, client) -> None:
    """The docs page is a page a person opens in a browser (no key, nothing to resend):
    it is redirected to HTTPS like the admin, not answered with the API's JSON 403."""
    response = client.get("/api/docs/")

    assert response.status_code == 301
    assert response["Location"] == "https://testserver/api/docs/"
