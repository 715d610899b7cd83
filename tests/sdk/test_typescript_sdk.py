"""The generated TypeScript client (sdk/typescript, compiled by tsc into sdk/build)
against the live server, under Node's own test runner."""

from __future__ import annotations

import subprocess
import sys

from tests.sdk.conftest import ROOT, SDK, LiveServer

BUILD = SDK / "build"


def _node(api_server: LiveServer, org: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["node", *args],
        env={
            **api_server.env,
            "VOICECALLS_BASE_URL": api_server.url,
            "VOICECALLS_API_KEY": api_server.client_key(org),
            "VOICECALLS_ORG": org,
            "VOICECALLS_PYTHON": sys.executable,
            "VOICECALLS_ROOT": str(ROOT),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_typescript_client_passes_its_node_tests(api_server: LiveServer) -> None:
    result = _node(
        api_server, "sdk-typescript", "--test", str(BUILD / "tests" / "sdk" / "calls.test.js")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 4" in result.stdout and "# fail 0" in result.stdout, result.stdout


def test_the_typescript_example_runs(api_server: LiveServer) -> None:
    result = _node(api_server, "sdk-typescript-example", str(BUILD / "examples" / "quickstart.js"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Call ") and lines[0].endswith(" is connecting")
    call_id = lines[0].split()[1]
    assert f"Join room call-{call_id}" in lines[1]
    assert lines[2] == "Active calls: 1"
