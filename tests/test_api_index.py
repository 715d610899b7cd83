"""`GET /api/v1/` (the README's "API" link) answers where the docs, schema and resources are."""

from __future__ import annotations

import pytest
import yaml
from django.conf import settings

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
            "tool_signing_secret": f"{BASE}/api/v1/tool-signing-secret",
            "sip_trunks": f"{BASE}/api/v1/sip-trunks",
            "phone_numbers": f"{BASE}/api/v1/phone-numbers",
            "organization": f"{BASE}/api/v1/organization",
            "usage": f"{BASE}/api/v1/usage",
            "prices": f"{BASE}/api/v1/prices",
            "erasures": f"{BASE}/api/v1/erasures",
            "livekit_webhooks": f"{BASE}/api/v1/webhooks/livekit",
        },
    }


def test_every_link_of_the_api_root_leads_somewhere(anonymous_api, api) -> None:
    body = anonymous_api.get("/api/v1/").json()
    links = [body["docs"], body["schema"], *body["resources"].values()]

    for link in links:
        path = link.removeprefix(BASE)
        response = (anonymous_api if path.startswith("/api/v1/webhooks/") else api).get(path)
        # LiveKit's webhook and erasures take POSTs only: 405 shows the path exists.
        assert response.status_code in {200, 405}, (path, response.status_code)


def test_the_api_root_needs_no_key_and_ignores_a_wrong_one(anonymous_api) -> None:
    anonymous_api.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")

    response = anonymous_api.get("/api/v1/")

    assert response.status_code == 200


def test_the_api_root_links_every_top_level_resource_of_the_schema(anonymous_api) -> None:
    """The README's "its index: ... each resource": every `/api/v1/<resource>` path the
    schema has (the agent's aside) is one of the root's links."""
    schema = yaml.safe_load((settings.BASE_DIR / "openapi.yaml").read_text())
    top_level = {
        path
        for path in schema["paths"]
        if path.count("/") == 3 and path != "/api/v1/" and not path.startswith("/api/v1/agent")
    }

    links = anonymous_api.get("/api/v1/").json()["resources"].values()

    assert top_level - {link.removeprefix(BASE) for link in links} == set()
