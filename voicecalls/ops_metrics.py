"""The operator's metrics, `GET /ops/metrics`: what is open, queued and waiting right
now, in Prometheus' text format, for whoever holds METRICS_TOKEN.

Every gauge is read from the database when scraped, into a registry made for that
scrape: gunicorn's workers share nothing, and any one of them answers for the whole
platform. Platform-wide, never per organization (a label per organization would be a
series per customer). Each query reads an index holding only open work (partial
indexes on the open statuses, the ready tasks, the failed tasks and deliveries by
when they failed), so a scrape costs the same at millions of calls.
"""

from __future__ import annotations

import datetime
import functools
import hmac
import importlib
from collections.abc import Iterable

from django.apps import apps
from django.conf import settings
from django.db.models import Case, Count, F, Min, Q, When
from django.db.models.functions import Greatest
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils import timezone
from django.utils.module_loading import module_has_submodule
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django_tasks.base import Task, TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from analysis.models import OPEN_STATUSES, CallAnalysis
from calls.models import NOT_ENDED_STATUSES, Call, CallChannel
from privacy.models import Erasure, ErasureStatus
from recordings.models import Recording, RecordingStatus
from voicecalls.errors import error_json
from webhooks.models import DeliveryStatus, WebhookDelivery

RECORDING_STATUSES = (
    RecordingStatus.STARTING,
    RecordingStatus.RECORDING,
    RecordingStatus.PROCESSING,
)
ERASURE_STATUSES = (ErasureStatus.PENDING, ErasureStatus.RUNNING)
# Deliveries that gave up (failed for good) within this long: a window, as failed ones
# are kept for ever and counting them all would read them all.
FAILED_WINDOW = datetime.timedelta(hours=1)
# Tasks failed within this long: the task table keeps its runs for two weeks
# (prune_db_task_results), and a failure seen a day is long enough to alert on.
TASKS_FAILED_WINDOW = datetime.timedelta(days=1)


def _age(now: datetime.datetime, since: datetime.datetime | None) -> float:
    """Seconds since `since`; 0 when there is nothing waiting."""
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def _counts(
    registry: CollectorRegistry,
    name: str,
    doc: str,
    statuses: Iterable[str],
    rows: Iterable[tuple[str, int]],
) -> None:
    """A gauge by status, every status present (0 when none), from `status, count` rows."""
    gauge = Gauge(name, doc, ["status"], registry=registry)
    for status in statuses:
        gauge.labels(str(status)).set(0)
    for status, count in rows:
        gauge.labels(status).set(count)


def _calls(registry: CollectorRegistry, now: datetime.datetime) -> None:
    # The partial index call_not_ended holds only these calls.
    rows = list(
        Call.objects.filter(status__in=NOT_ENDED_STATUSES)
        .order_by()
        .values("status", "channel")
        .annotate(count=Count("id"), oldest=Min("created_at"))
    )
    gauge = Gauge(
        "voicecalls_calls_open",
        "Calls not yet ended, by status and channel.",
        ["status", "channel"],
        registry=registry,
    )
    for status in NOT_ENDED_STATUSES:
        for channel in CallChannel.values:
            gauge.labels(str(status), channel).set(0)
    for row in rows:
        gauge.labels(row["status"], row["channel"]).set(row["count"])
    Gauge(
        "voicecalls_calls_open_oldest_age_seconds",
        "Seconds since the oldest call not yet ended was created (0: none is open).",
        registry=registry,
    ).set(_age(now, min((row["oldest"] for row in rows), default=None)))


def _tasks(registry: CollectorRegistry, now: datetime.datetime) -> None:
    # As django_tasks_db's `ready()`, at this scrape's `now`: READY rows, read through
    # its partial index on them, due now. A task queued for no time in particular
    # carries the far future as its run_after: it waits since it was queued.
    never = get_date_max()
    due_since = Case(
        When(run_after=never, then=F("enqueued_at")),
        default=Greatest("run_after", "enqueued_at"),
    )
    rows = (
        DBTaskResult.objects.filter(status=TaskResultStatus.READY)
        .filter(Q(run_after=never) | Q(run_after__lte=now))
        .order_by()
        .values_list("queue_name")
        .annotate(count=Count("id"), since=Min(due_since))
    )
    ready = Gauge(
        "voicecalls_tasks_ready",
        "Tasks due and not yet taken by a worker, by queue.",
        ["queue"],
        registry=registry,
    )
    oldest = Gauge(
        "voicecalls_tasks_ready_oldest_age_seconds",
        "Seconds the task due longest has waited for a worker, by queue (0: none).",
        ["queue"],
        registry=registry,
    )
    for backend in settings.TASKS.values():
        for queue in backend.get("QUEUES", ()):
            ready.labels(queue).set(0)
            oldest.labels(queue).set(0)
    for queue, count, since in rows:
        ready.labels(queue).set(count)
        oldest.labels(queue).set(_age(now, since))


@functools.cache
def _task_paths() -> tuple[str, ...]:
    """Every task of this release (each app's `tasks` module), for their series at 0."""
    paths: set[str] = set()
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, "tasks"):
            module = importlib.import_module(f"{config.name}.tasks")
            paths |= {v.module_path for v in vars(module).values() if isinstance(v, Task)}
    return tuple(sorted(paths))


def _tasks_failed(registry: CollectorRegistry, now: datetime.datetime) -> None:
    # Through the partial index task_failed_finished (voicecalls 0002): the day's
    # failures only, not the two weeks of runs the table keeps. A task no longer in
    # this release (another queued it) is counted under its own path too.
    rows = (
        DBTaskResult.objects.filter(
            status=TaskResultStatus.FAILED, finished_at__gte=now - TASKS_FAILED_WINDOW
        )
        .order_by()
        .values_list("task_path")
        .annotate(count=Count("id"))
    )
    gauge = Gauge(
        "voicecalls_tasks_failed_last_day",
        "Background tasks that failed (raised, or were given up) within the last 24 hours, "
        "by task.",
        ["task"],
        registry=registry,
    )
    for path in _task_paths():
        gauge.labels(path).set(0)
    for path, count in rows:
        gauge.labels(path).set(count)


def _webhooks(registry: CollectorRegistry, now: datetime.datetime) -> None:
    # Pending ones through the partial index webhook_delivery_pending (on next_attempt_at,
    # which is all these read). One waiting for its next retry is not late; one due
    # (its attempt in flight is due only once its lease ran out) waits for a worker.
    # A deleted endpoint's wait for the retention pass, never sent.
    due = Q(next_attempt_at__lte=now)
    pending = WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, endpoint__deleted_at__isnull=True
    ).aggregate(
        pending=Count("id"),
        due=Count("id", filter=due),
        due_since=Min("next_attempt_at", filter=due),
    )
    failed = WebhookDelivery.objects.filter(
        status=DeliveryStatus.FAILED, updated_at__gte=now - FAILED_WINDOW
    ).count()
    Gauge(
        "voicecalls_webhook_deliveries_pending",
        "Webhook deliveries not yet delivered nor given up (waiting for a retry, or due).",
        registry=registry,
    ).set(pending["pending"])
    Gauge(
        "voicecalls_webhook_deliveries_due",
        "Pending webhook deliveries whose attempt is due now, waiting for a worker.",
        registry=registry,
    ).set(pending["due"])
    Gauge(
        "voicecalls_webhook_deliveries_oldest_due_age_seconds",
        "Seconds the pending delivery due longest has waited for its attempt (0: none).",
        registry=registry,
    ).set(_age(now, pending["due_since"]))
    Gauge(
        "voicecalls_webhook_deliveries_failed_last_hour",
        "Webhook deliveries that gave up (failed for good) within the last hour.",
        registry=registry,
    ).set(failed)


def _work(registry: CollectorRegistry) -> None:
    # Each through an index on the open statuses: callanalysis_open_due,
    # erasure_unfinished, recording_status_created.
    analyses = CallAnalysis.objects.filter(status__in=OPEN_STATUSES)
    erasures = Erasure.objects.exclude(status=ErasureStatus.COMPLETED)
    recordings = Recording.objects.filter(status__in=RECORDING_STATUSES)
    for name, doc, statuses, queryset in [
        ("analyses_open", "Post-call analyses not yet finished", OPEN_STATUSES, analyses),
        ("erasures_unfinished", "Erasures not yet completed", ERASURE_STATUSES, erasures),
        ("recordings_in_progress", "Recordings not yet settled", RECORDING_STATUSES, recordings),
    ]:
        rows = queryset.order_by().values_list("status").annotate(count=Count("pk"))
        _counts(registry, f"voicecalls_{name}", f"{doc}, by status.", statuses, rows)


def ops_metrics_registry(*, now: datetime.datetime | None = None) -> CollectorRegistry:
    """A registry holding every operator's gauge, read from the database now."""
    now = now or timezone.now()
    registry = CollectorRegistry(auto_describe=False)
    _calls(registry, now)
    _tasks(registry, now)
    _tasks_failed(registry, now)
    _webhooks(registry, now)
    _work(registry)
    return registry


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


@csrf_exempt  # no cookies: unset, a POST is the same 404 as any other request
@never_cache
def ops_metrics(request: HttpRequest) -> HttpResponse:
    """Without METRICS_TOKEN set the endpoint does not exist; with it, only a request
    bearing it is answered (compared in constant time)."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404
    presented = _bearer(request)
    if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
        if presented is None:
            code, detail = "not_authenticated", "Authentication credentials were not provided."
        else:
            code, detail = "authentication_failed", "Incorrect authentication credentials."
        response = error_json(401, "client_error", code, detail)
        response["WWW-Authenticate"] = "Bearer"
        return response
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    body = generate_latest(ops_metrics_registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
