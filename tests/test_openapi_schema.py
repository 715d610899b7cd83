from __future__ import annotations

from pathlib import Path

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
