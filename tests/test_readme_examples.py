"""The README shows the SDK examples exactly as the SDK tests run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings


@pytest.mark.parametrize("example", ["quickstart.py", "quickstart.ts"])
def test_the_readme_shows_the_example_as_it_is(example: str) -> None:
    root = Path(settings.BASE_DIR)
    code = (root / "examples" / example).read_text()

    assert code in (root / "README.md").read_text(), f"README.md: paste examples/{example}"


def _readme() -> str:
    return (Path(settings.BASE_DIR) / "README.md").read_text()


def test_the_readme_names_the_port_option_make_run_honours() -> None:
    assert "`make run PORT=8001`" in _readme()

    # Run as a top-level make: under CI's own `make test` the inherited MAKEFLAGS
    # would add "Entering/Leaving directory" lines around the commands.
    top_level = {
        k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    }
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "run", "PORT=8001"],
        cwd=settings.BASE_DIR,
        env=top_level,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert dry_run.returncode == 0, dry_run.stderr
    assert dry_run.stdout.splitlines()[-1].endswith("scripts/run_dev.sh .venv/bin/python 8001")


def test_the_readme_tells_the_size_of_the_dev_install() -> None:
    """The figure stays within a third of what `make run` installs (this .venv)."""
    [stated] = re.findall(r"into `\.venv` \(about (\d+) MB\)", _readme())
    size = sum(
        os.lstat(os.path.join(folder, name)).st_blocks * 512
        for folder, _, names in os.walk(sys.prefix)
        for name in names
    )

    assert abs(size / 2**20 - int(stated)) < int(stated) / 3, f"{size / 2**20:.0f} MB"
