"""The README shows the SDK examples exactly as the SDK tests run them."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings


@pytest.mark.parametrize("example", ["quickstart.py", "quickstart.ts"])
def test_the_readme_shows_the_example_as_it_is(example: str) -> None:
    root = Path(settings.BASE_DIR)
    code = (root / "examples" / example).read_text()

    assert code in (root / "README.md").read_text(), f"README.md: paste examples/{example}"
