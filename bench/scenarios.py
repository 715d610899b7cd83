"""The scenarios: what each request is, through the stack and as its raw floor, and
the issue's targets."""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass, field

from django.urls import Resolver404, resolve

from bench import floor, floor_create
from bench.http_client import GunicornClient
from bench.load import BENCH_ORG
from bench.runner import Scenario

API = "/api/v1"
PAGE_500 = 500


@dataclass
class Context:
    organization_id: str
    client_key: str
    agent_key: str
    workflow_id: str
    workflow_slug: str
    quiet_workflow_id: str  # the busiest workflow that asks for no analysis
    top_user: str
    lone_user: str
    heavy_call: str
    detail_call: str
    window: tuple[datetime.datetime, datetime.datetime]
    notes: list[str] = field(default_factory=list)
    port: int = 0  # the gunicorn the scenarios' requests go to (bench.http_client)

    @classmethod
    def build(cls) -> Context:
        from django.conf import settings
        from django.db import connection

        from accounts.models import KeyKind, Organization
        from accounts.services import api_key_create

        organization = Organization.objects.get(slug=BENCH_ORG)
        _, client_key = api_key_create(name="bench", organization=organization)
        _, agent_key = api_key_create(name="bench-agent", kind=KeyKind.AGENT)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT workflow_id, slug FROM bench_workflow WHERE org_no = 0 AND idx = 0"
            )
            workflow_id, workflow_slug = cursor.fetchone()
            cursor.execute("SELECT workflow_id FROM bench_workflow WHERE org_no = 0 AND idx = 1")
            (quiet_workflow_id,) = cursor.fetchone()
            # Among the loaded users (user-N), not those the write scenarios add calls for.
            cursor.execute(
                "SELECT user_id FROM calls_call WHERE organization_id = %s"
                " AND user_id LIKE 'user-%%' GROUP BY user_id ORDER BY count(*) DESC, user_id"
                " LIMIT 1",
                [organization.id],
            )
            (top_user,) = cursor.fetchone()
            cursor.execute(
                "SELECT user_id FROM calls_call WHERE organization_id = %s"
                " AND user_id LIKE 'user-%%' GROUP BY user_id HAVING count(*) = 1"
                " ORDER BY user_id LIMIT 1",
                [organization.id],
            )
            (lone_user,) = cursor.fetchone()
            cursor.execute("SELECT id FROM bench_heavy ORDER BY id LIMIT 2")
            heavy_call, detail_call = (str(row[0]) for row in cursor.fetchall())
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        ctx = cls(
            organization_id=str(organization.id),
            client_key=client_key,
            agent_key=agent_key,
            workflow_id=str(workflow_id),
            workflow_slug=workflow_slug,
            quiet_workflow_id=str(quiet_workflow_id),
            top_user=top_user,
            lone_user=lone_user,
            heavy_call=heavy_call,
            detail_call=detail_call,
            window=(now - datetime.timedelta(days=60), now - datetime.timedelta(days=30)),
        )
        ctx.notes.append(
            f"limits: {BENCH_ORG} is exempt from the create throttle "
            f"(THROTTLE_EXEMPT_ORGANIZATIONS={settings.THROTTLE_EXEMPT_ORGANIZATIONS}) and "
            "the concurrency limit (CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS="
            f"{settings.CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS}) except in the POST /calls "
            "headline (bench/http_load.py LIMITS_ON)"
        )
        if BENCH_ORG not in settings.THROTTLE_EXEMPT_ORGANIZATIONS or (
            BENCH_ORG not in settings.CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS
        ):
            raise SystemExit(f"bench: {BENCH_ORG} must be exempt from the limits (bench/env.py)")
        return ctx


def _iso(value: datetime.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _routed(path: str) -> bool:
    """A named route answers `path` (unknown API paths fall through to an unnamed 404)."""
    try:
        return resolve(path).url_name is not None
    except Resolver404:
        return False


def _get(client: GunicornClient, path: str, params: dict | None = None) -> bytes:
    response = client.get(path, params or {})
    if response.status_code != 200:
        raise AssertionError(f"GET {path} {params}: {response.status_code} {response.content!r}")
    return response.content


def _window(
    label: str,
    start: datetime.datetime,
    end: datetime.datetime,
    query: dict,
    where: str,
    params: list,
) -> tuple[str, dict, str, list]:
    """A started window, the floor given the creation range it implies as the stack is
    (a call starts within MAX_START_DELAY of its creation)."""
    from calls.models import MAX_START_DELAY

    return (
        label,
        {**query, "started_after": _iso(start), "started_before": _iso(end)},
        f"{where} AND started_at >= %s AND started_at < %s"
        " AND created_at >= %s AND created_at < %s",
        [*params, start, end, start - MAX_START_DELAY, end],
    )


def list_filters(ctx: Context) -> list[tuple[str, dict, str, list]]:
    """(label, query parameters, the floor's SQL condition, its parameters)."""
    start, end = ctx.window
    return [
        ("no filter", {}, "", []),
        ("status=completed", {"status": "completed"}, " AND status IN (%s)", ["completed"]),
        ("status=failed", {"status": "failed"}, " AND status IN (%s)", ["failed"]),
        ("user_id (top user)", {"user_id": ctx.top_user}, " AND user_id = %s", [ctx.top_user]),
        _window(
            "workflow_id + 30-day window",
            start,
            end,
            {"workflow_id": ctx.workflow_id},
            " AND workflow_id = %s",
            [ctx.workflow_id],
        ),
        ("direction=outbound", {"direction": "outbound"}, " AND direction = %s", ["outbound"]),
    ]


# End reasons (bench/load.py): a rare one (~0.6 % of the calls), a campaign's unreached
# calls, and the widest direction with a status (~345,000 calls counted).
_END_REASON_AND_DIRECTION_FILTERS: list[tuple[str, dict, str, list]] = [
    (
        "end_reason=no_answer",
        {"end_reason": "no_answer"},
        " AND end_reason IN (%s)",
        ["no_answer"],
    ),
    (
        "direction=outbound + end_reason=voicemail,no_answer,busy",
        {"direction": "outbound", "end_reason": "voicemail,no_answer,busy"},
        " AND direction = %s AND end_reason IN (%s, %s, %s)",
        ["outbound", "voicemail", "no_answer", "busy"],
    ),
    (
        "direction=inbound + status=completed",
        {"direction": "inbound", "status": "completed"},
        " AND direction = %s AND status IN (%s)",
        ["inbound", "completed"],
    ),
]


def _analysis_filters(ctx: Context) -> list[tuple[str, dict, str, list]]:
    """The analysis filters, on the call's copy of its analysis (bench/load.py): a
    verdict belongs to a completed analysis, which the floor says as the stack does."""
    return [
        (
            "success=true",
            {"success": "true"},
            " AND analysis_status = 'completed' AND analysis_success",
            [],
        ),
        (
            "workflow_id + success=false",
            {"workflow_id": ctx.workflow_id, "success": "false"},
            " AND workflow_id = %s AND analysis_status = 'completed' AND NOT analysis_success",
            [ctx.workflow_id],
        ),
        (
            "analysis_status=failed",
            {"analysis_status": "failed"},
            " AND analysis_status = 'failed'",
            [],
        ),
        (
            "no-analysis workflow_id + success=true",
            {"workflow_id": ctx.quiet_workflow_id, "success": "true"},
            " AND workflow_id = %s AND analysis_status = 'completed' AND analysis_success",
            [ctx.quiet_workflow_id],
        ),
    ]


def one_page_filters(ctx: Context) -> list[tuple[str, dict, str, list]]:
    """Lists measured on page 1 only: windows of several sizes and ages, a one-call
    list, the analysis filters, end reasons and directions."""
    now = ctx.window[1] + datetime.timedelta(days=30)
    day = datetime.timedelta(days=1)
    return [
        _window("started in the last 7 days", now - 7 * day, now, {}, "", []),
        _window("started in 30 days a year back", now - 365 * day, now - 335 * day, {}, "", []),
        _window(
            "workflow_id + status=completed + 90-day window",
            now - 90 * day,
            now,
            {"workflow_id": ctx.workflow_id, "status": "completed"},
            " AND workflow_id = %s AND status IN (%s)",
            [ctx.workflow_id, "completed"],
        ),
        ("user_id (one call)", {"user_id": ctx.lone_user}, " AND user_id = %s", [ctx.lone_user]),
        *_analysis_filters(ctx),
        *_END_REASON_AND_DIRECTION_FILTERS,
        # The widest: every completed call of the year (~490,000, most of the
        # organization's), all counted (issue 19: no page 1 over 100 ms).
        _window(
            "status=completed + started in the last year",
            now - 366 * day,
            now,
            {"status": "completed"},
            " AND status IN (%s)",
            ["completed"],
        ),
    ]


def list_scenarios(ctx: Context, client: GunicornClient, conn: object) -> list[Scenario]:
    pages = [(f, page) for f in list_filters(ctx) for page in (1, PAGE_500)]
    pages += [(f, 1) for f in one_page_filters(ctx)]
    return [
        Scenario(
            name=f"GET /calls {label}, page {page}",
            stack=lambda _, q=({**query, "page": page} if page != 1 else query): _get(
                client, f"{API}/calls", q
            ),
            floor=lambda _, w=where, p=params, n=page: floor.call_list(
                conn, organization_id=ctx.organization_id, where=w, params=p, page=n
            ),
        )
        for (label, query, where, params), page in pages
    ]


def build(ctx: Context) -> list[Scenario]:
    client = GunicornClient(ctx.port, HTTP_AUTHORIZATION=f"Bearer {ctx.client_key}")
    conn = floor.connect()
    writes = floor.connect(prepare=True)
    org = ctx.organization_id
    scenarios = list_scenarios(ctx, client, conn)
    scenarios += [
        Scenario(
            name="GET /calls/active",
            stack=lambda _: _get(client, f"{API}/calls/active"),
            floor=lambda _: floor.active_calls(conn, organization_id=org),
            # Calls come and go while it runs (duration_seconds counts on): same shape only.
            compare=False,
        ),
        Scenario(
            name="GET /calls/{id}",
            stack=lambda _: _get(client, f"{API}/calls/{ctx.detail_call}"),
            floor=lambda _: floor.call_detail(conn, organization_id=org, call_id=ctx.detail_call),
        ),
        Scenario(
            name="GET /calls/{id}/metrics",
            stack=lambda _: _get(client, f"{API}/calls/{ctx.detail_call}/metrics"),
            floor=lambda _: floor.call_metrics(conn, organization_id=org, call_id=ctx.detail_call),
        ),
        Scenario(
            name="GET /calls/{id}/transcript (5,000 entries)",
            stack=lambda _: _get(client, f"{API}/calls/{ctx.heavy_call}/transcript"),
            floor=lambda _: floor.transcript(conn, organization_id=org, call_id=ctx.heavy_call),
        ),
        _usage_daily(ctx, client, conn),
        _create_call(ctx, client, writes),
    ]
    scenarios += _agent_events(ctx, writes)
    return scenarios


USAGE_DAYS = 30


def _usage_daily(ctx: Context, client: GunicornClient, conn: object) -> Scenario:
    """The default 30 days, ending yesterday: the calls the write scenarios add (today)
    never change it between the stack's answer and the floor's."""
    end = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
    start = end - datetime.timedelta(days=USAGE_DAYS - 1)
    query = {"from": start.isoformat(), "to": end.isoformat()}
    return Scenario(
        name=f"GET /usage/daily ({USAGE_DAYS} days)",
        stack=lambda _: _get(client, f"{API}/usage/daily", query),
        floor=lambda _: floor.usage_daily(
            conn, organization_id=ctx.organization_id, start=start, end=end
        ),
    )


def _create_call_body(n: int) -> dict:
    return {
        "workflow_slug": "flow-00",
        "user_id": f"bench-user-{n % 1000}",
        "user_data": {"name": "Bench User", "language": "en"},
        "metadata": {"source": "bench", "n": n},
    }


def _create_call(ctx: Context, client: GunicornClient, conn: object) -> Scenario:
    counter = iter(range(10**9))

    def stack(body: dict | None) -> bytes:
        response = client.post(
            f"{API}/calls",
            json.dumps(body or _create_call_body(0)),
            content_type="application/json",
        )
        if response.status_code != 201:
            raise AssertionError(f"POST /calls: {response.status_code} {response.content!r}")
        return response.content

    def raw(body: dict | None) -> bytes:
        body = body or _create_call_body(0)
        return floor_create.call_create(
            conn,
            organization_id=ctx.organization_id,
            workflow_slug=body["workflow_slug"],
            user_id=body["user_id"],
            user_data=body["user_data"],
            metadata=body["metadata"],
        )

    return Scenario(
        name="POST /calls (one client)",
        stack=stack,
        floor=raw,
        prepare=lambda: _create_call_body(next(counter)),
        compare=False,  # a new call id and token each time
    )


def _agent_events(ctx: Context, conn: object) -> list[Scenario]:
    """Agent event batches and LiveKit webhooks (issue 5's endpoints), when they exist."""
    from bench import ingest

    scenarios = []
    if _routed(f"{API}/agent/calls/{uuid.uuid4()}/events"):
        scenarios += ingest.event_scenarios(ctx, conn)
    else:
        ctx.notes.append("no agent events endpoint on this branch yet: not measured")
    if _routed(ingest.WEBHOOK_URL):
        scenarios.append(ingest.webhook_scenario(ctx, conn))
    else:
        ctx.notes.append("no LiveKit webhook endpoint on this branch yet: not measured")
    return scenarios
