"""gunicorn.conf.py as production runs it: the application is loaded once, in the
master, and its URLconf with it, so a worker recycled after `max_requests` (or killed)
serves at once from what the master loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.live_server import ROOT


def test_the_master_loads_the_application_before_forking_workers(live_server_gunicorn) -> None:
    # orjson is a compiled module the application imports and gunicorn itself does not.
    mapped = Path(f"/proc/{live_server_gunicorn.pid}/maps").read_text()

    assert "orjson" in mapped


def test_loading_the_wsgi_application_imports_the_urlconf() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, voicecalls.wsgi; print('voicecalls.urls' in sys.modules)",
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DEBUG": "1"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert loaded.stdout.strip() == "True"
