from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command


def test_committed_openapi_yaml_matches_the_code(tmp_path: Path) -> None:
    """openapi.yaml is what SDKs are generated from: it must never drift from the code."""
    generated = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(generated), "--validate", "--fail-on-warn")
    committed = Path(settings.BASE_DIR) / "openapi.yaml"
    assert committed.read_text() == generated.read_text(), (
        "openapi.yaml is stale: run `make schema`"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/v1/calls"), ("post", "/api/v1/calls"), ("get", "/api/v1/organization")],
)
def test_a_refused_accept_header_answers_a_status_the_schema_declares(api, method, path) -> None:
    """A client asking for anything but JSON gets 406 in the error shape: SDKs know it
    only if openapi.yaml says so."""
    schema = yaml.safe_load((Path(settings.BASE_DIR) / "openapi.yaml").read_text())

    response = getattr(api, method)(path, HTTP_ACCEPT="text/html")

    assert response.status_code == 406
    assert response.json()["errors"][0]["code"] == "not_acceptable"
    declared = schema["paths"][path][method]["responses"]["406"]
    assert declared["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
