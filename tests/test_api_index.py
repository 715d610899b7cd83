"""`GET /api/v1/` (the README's "API" link) answers where the docs, schema and resources are."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

BASE = "http://testserver"


def test_the_api_root_links_the_docs_schema_and_every_resource(anonymous_api) -> None:
    response = anonymous_api.get("/api/v1/")

    assert response.status_code == 200
    assert response.json() == {
        "name": "voicecalls API",
        "version": "1.0.0",
        "docs": f"{BASE}/api/docs/",
        "schema": f"{BASE}/api/schema/",
        "resources": {
            "calls": f"{BASE}/api/v1/calls",
            "active_calls": f"{BASE}/api/v1/calls/active",
            "workflows": f"{BASE}/api/v1/workflows",
            "provider_keys": f"{BASE}/api/v1/provider-keys",
            "webhook_endpoints": f"{BASE}/api/v1/webhook-endpoints",
            "usage": f"{BASE}/api/v1/usage",
            "livekit_webhooks": f"{BASE}/api/v1/webhooks/livekit",
        },
    }


def test_every_link_of_the_api_root_leads_somewhere(anonymous_api, api) -> None:
    body = anonymous_api.get("/api/v1/").json()
    links = [body["docs"], body["schema"], *body["resources"].values()]

    for link in links:
        path = link.removeprefix(BASE)
        response = (anonymous_api if path.startswith("/api/v1/webhooks/") else api).get(path)
        # LiveKit's webhook takes POSTs only: 405 shows the path exists.
        assert response.status_code in {200, 405}, (path, response.status_code)


def test_the_api_root_needs_no_key_and_ignores_a_wrong_one(anonymous_api) -> None:
    anonymous_api.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")

    response = anonymous_api.get("/api/v1/")

    assert response.status_code == 200
