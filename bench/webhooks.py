"""Time customer webhooks: recording a status change, delivering through the real
task worker to a loopback receiver, and building a long end-of-call report.

    DEBUG=1 .venv/bin/python bench/webhooks.py                              # SQLite
    DEBUG=1 scripts/with_postgres.sh .venv/bin/python bench/webhooks.py     # PostgreSQL

Runs on a throwaway test database.
"""

import datetime
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")
os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE_URLS", "1")
import django

django.setup()
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test.utils import (  # noqa: E402
    setup_databases,
    setup_test_environment,
    teardown_databases,
)
from django.utils import timezone  # noqa: E402

from accounts.models import Organization  # noqa: E402
from tests.factories import (  # noqa: E402
    CallFactory,
    OrganizationFactory,
    TranscriptEntryFactory,
)
from tests.webhook_receiver import Receiver  # noqa: E402
from webhooks import outbox, services  # noqa: E402
from webhooks.models import WebhookDelivery, WebhookEvent  # noqa: E402

DELIVERIES = 300
TRANSCRIPT_LINES = 2000


def record(call_id: object) -> None:
    with transaction.atomic():
        outbox.call_status_changed_record(
            call_id=call_id,
            from_status="connecting",
            to_status="active",
            end_reason=None,
            at=timezone.now(),
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    setup_test_environment()
    databases = setup_databases(verbosity=0, interactive=False)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        vendor = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        print(f"database: {vendor}")
        _record_without_endpoints()
        organization = OrganizationFactory(slug="bench")
        _deliver(organization)
        _call_ended_report(organization)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        teardown_databases(databases, verbosity=0)


def _record_without_endpoints() -> None:
    quiet = OrganizationFactory(slug="quiet")
    calls = [CallFactory(organization=quiet) for _ in range(50)]
    timings = []
    for call in calls:
        started = time.perf_counter()
        record(call.id)
        timings.append(time.perf_counter() - started)
    print(f"record a status change, no endpoints: median {ms(statistics.median(timings))}")


def _deliver(organization: Organization) -> None:
    """Status changes recorded for 3 endpoints, then delivered by one db_worker pass."""
    with Receiver() as receiver:
        for n in range(3):
            services.webhook_endpoint_create(
                organization=organization,
                url=f"{receiver.url}/{n}",
                events=["call.status_changed"],
            )
        calls = [CallFactory(organization=organization) for _ in range(DELIVERIES // 3)]
        timings = []
        for call in calls:
            started = time.perf_counter()
            record(call.id)  # commits: enqueues three delivery tasks
            timings.append(time.perf_counter() - started)
        print(
            "record a status change, 3 endpoints (outbox + 3 deliveries + 3 tasks): "
            f"median {ms(statistics.median(timings))}"
        )

        started = time.perf_counter()
        call_command(
            "db_worker",
            "--batch",
            "--queue-name",
            "webhooks",
            "--no-startup-delay",
            "--no-reload",
            "--interval",
            "0",
            verbosity=0,
        )
        elapsed = time.perf_counter() - started
        delivered = WebhookDelivery.objects.filter(status="succeeded").count()
        assert delivered == len(receiver.received) == DELIVERIES, delivered
        print(
            f"db_worker --batch: {DELIVERIES} deliveries in {elapsed:.2f} s "
            f"({DELIVERIES / elapsed:.0f}/s, one worker, loopback receiver)"
        )
        durations = sorted(WebhookDelivery.objects.values_list("attempts__duration_ms", flat=True))
        print(f"attempt duration (HTTP only): median {statistics.median(durations)} ms")


def _call_ended_report(organization: Organization) -> None:
    call = CallFactory(organization=organization, completed=True)
    for i in range(TRANSCRIPT_LINES):
        TranscriptEntryFactory(
            call=call,
            content="Hello there, how are you doing today? " * 3,
            timestamp=call.created_at + datetime.timedelta(milliseconds=i),
        )
    event = WebhookEvent.objects.create(
        organization=organization, type="call.ended", call=call, occurred_at=timezone.now()
    )
    started = time.perf_counter()
    body = outbox.event_body(event)
    elapsed = time.perf_counter() - started
    print(
        f"build a call.ended report with {TRANSCRIPT_LINES} transcript lines: "
        f"{ms(elapsed)}, {len(body.encode()) / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
