"""Time POST /api/v1/agent/calls/{id}/events: 500-event batches, new and replayed.

    DEBUG=1 .venv/bin/python bench/agent_events.py                              # SQLite
    DEBUG=1 scripts/with_postgres.sh .venv/bin/python bench/agent_events.py     # PostgreSQL

Runs the whole request (auth, validation, inserts, aggregate UPDATE) through Django's
test client on a throwaway test database.
"""

import datetime
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")
import django

django.setup()
from django.conf import settings  # noqa: E402
from django.test.utils import (  # noqa: E402
    setup_databases,
    setup_test_environment,
    teardown_databases,
)

from accounts.models import KeyKind  # noqa: E402
from accounts.services import api_key_create  # noqa: E402
from tests.conftest import bearer_client  # noqa: E402
from tests.factories import CallFactory, OrganizationFactory  # noqa: E402
from workflows.services import workflow_demo_load  # noqa: E402

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
LINE = "Hello there, how are you doing today? " * 3


def batch(n: int) -> list[dict]:
    """Nine transcript lines to one metrics sample, like a real conversation."""
    events = []
    for i in range(n):
        event = {
            "id": str(uuid.uuid4()),
            "timestamp": (T0 + datetime.timedelta(milliseconds=i)).isoformat(),
        }
        if i % 10 == 9:
            event.update(type="metrics", stt_latency_ms=100 + i % 50, llm_latency_ms=300, tokens=40)
        else:
            event.update(type="transcript", role="assistant", content=LINE, agent_name="greeter")
        events.append(event)
    return events


def main() -> None:
    setup_test_environment()
    databases = setup_databases(verbosity=0, interactive=False)
    try:
        organization = OrganizationFactory(slug="bench")
        workflow, _ = workflow_demo_load(organization=organization)
        _, key = api_key_create(name="fleet", kind=KeyKind.AGENT)
        client = bearer_client(key)
        new, replay = [], []
        for _ in range(int(os.environ.get("ROUNDS", "10"))):
            call = CallFactory(organization=organization, workflow=workflow, active=True)
            events = batch(500)
            url = f"/api/v1/agent/calls/{call.pk}/events"
            start = time.perf_counter()
            assert client.post(url, {"events": events}).json()["accepted"] == 500
            new.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert client.post(url, {"events": events}).json()["duplicates"] == 500
            replay.append(time.perf_counter() - start)
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        print(
            f"{engine}: 500-event batch, median of {len(new)}: new "
            f"{statistics.median(new) * 1000:.0f} ms ({500 / statistics.median(new):.0f} "
            f"events/s), replayed {statistics.median(replay) * 1000:.0f} ms"
        )
    finally:
        teardown_databases(databases, verbosity=0)


if __name__ == "__main__":
    main()
