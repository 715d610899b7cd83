"""Writes from the voice side: agent event batches and LiveKit webhooks, each with its
raw floor (plain INSERT … ON CONFLICT DO NOTHING of the same rows; the webhook's
insert and conditional UPDATE by hand)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import uuid
from collections.abc import Iterator

import psycopg
from django.conf import settings
from livekit import api
from psycopg.types.json import Jsonb

from bench import floor
from bench.http_client import GunicornClient
from bench.load import PHRASES
from bench.runner import Scenario

EVENTS_URL = "/api/v1/agent/calls/{call_id}/events"
WEBHOOK_URL = "/api/v1/webhooks/livekit"
TRANSCRIPT_COLUMNS = (
    "call_id, event_id, role, content, agent_name, tool_call, timestamp, created_at"
)


def _batch(size: int) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    events = []
    for i in range(size):
        event = {
            "id": str(uuid.uuid4()),
            "type": "transcript",
            "timestamp": (now + datetime.timedelta(milliseconds=i)).isoformat(),
            "role": "assistant" if i % 2 else "user",
            "content": PHRASES[i % len(PHRASES)],
            "agent_name": "greeter-agent",
        }
        if i % 25 == 24:
            event["tool_call"] = {"name": "save_meal", "arguments": {"meal_type": "lunch"}}
        events.append(event)
    return json.dumps({"events": events}).encode()


def _insert_floor(conn: psycopg.Connection, call_id: str, body: bytes) -> bytes:
    events = json.loads(body)["events"]
    now = datetime.datetime.now(datetime.UTC)
    params: list = []
    for e in events:
        tool_call = e.get("tool_call")
        params += [
            call_id,
            e["id"],
            e["role"],
            e["content"],
            e.get("agent_name"),
            None if tool_call is None else Jsonb(tool_call),
            e["timestamp"],
            now,
        ]
    row = "(" + ", ".join(["%s"] * 8) + ")"
    cursor = conn.execute(
        f"INSERT INTO calls_transcriptentry ({TRANSCRIPT_COLUMNS}) VALUES "
        + ", ".join([row] * len(events))
        + " ON CONFLICT (call_id, event_id) DO NOTHING",
        params,
    )
    accepted = cursor.rowcount
    return floor.dumps({"accepted": accepted, "duplicates": len(events) - accepted})


def _active_call(conn: psycopg.Connection, organization_id: str) -> str:
    """The organization's newest active call; a small load (a few thousand calls) has
    none running now, so one is started."""
    row = conn.execute(
        "SELECT id FROM calls_call WHERE organization_id = %s AND status = 'active'"
        " ORDER BY created_at DESC LIMIT 1",
        [organization_id],
    ).fetchone()
    if row is not None:
        return str(row[0])
    (call_id,) = _connecting_calls(conn, organization_id, 1)
    conn.execute(
        "UPDATE calls_call SET status = 'active', started_at = now(), last_event_at = now()"
        " WHERE id = %s",
        [call_id],
    )
    return call_id


def event_scenarios(ctx, conn: psycopg.Connection) -> list[Scenario]:
    client = GunicornClient(ctx.port, HTTP_AUTHORIZATION=f"Bearer {ctx.agent_key}")
    call_id = _active_call(conn, ctx.organization_id)
    url = EVENTS_URL.format(call_id=call_id)

    def stack(body: bytes) -> bytes:
        response = client.post(url, body, content_type="application/json")
        if response.status_code != 200:
            raise AssertionError(f"POST events: {response.status_code} {response.content!r}")
        return response.content

    return [
        Scenario(
            name=f"POST agent events, batch of {size}",
            stack=stack,
            floor=lambda body: _insert_floor(conn, call_id, body),
            prepare=lambda size=size: _batch(size),
            rows=size,
            compare=False,
        )
        for size in (100, 500)
    ]


def _connecting_calls(conn: psycopg.Connection, organization_id: str, n: int) -> list[str]:
    """Fresh `connecting` calls for webhooks to start, one per request."""
    rows = conn.execute(
        "INSERT INTO calls_call (id, organization_id, workflow_id, workflow_version_id,"
        " workflow_slug, user_id, user_data, metadata, direction, status, agent_history,"
        " connect_timeout_seconds, max_duration_seconds, stt_latency_ms_sum,"
        " stt_latency_count, llm_latency_ms_sum, llm_latency_count, tts_latency_ms_sum,"
        " tts_latency_count, total_tokens, agent_handoffs, created_at, room_name)"
        " SELECT g.id, w.organization_id, w.workflow_id, w.version_id, w.slug,"
        " NULL, '{}', '{}', 'inbound', 'connecting', '[]', 60, 1800,"
        " 0, 0, 0, 0, 0, 0, 0, 0, now(), 'call-' || g.id FROM bench_workflow w,"
        " (SELECT gen_random_uuid() AS id FROM generate_series(1, %s)) g"
        " WHERE w.organization_id = %s AND w.idx = 0 RETURNING id",
        [n, organization_id],
    ).fetchall()
    return [str(row[0]) for row in rows]


def _signed_joined(call_id: str) -> tuple[str, bytes, str]:
    body = json.dumps(
        {
            "event": "participant_joined",
            "room": {"sid": "RM_" + call_id[:12], "name": f"call-{call_id}"},
            "participant": {
                "sid": "PA_" + call_id[:12],
                "identity": f"user-{call_id}",
                "state": "ACTIVE",
                "joinedAt": str(int(datetime.datetime.now().timestamp())),
            },
            "id": f"EV_{uuid.uuid4().hex[:12]}",
            "createdAt": str(int(datetime.datetime.now().timestamp())),
        }
    )
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_sha256(digest)
        .to_jwt()
    )
    return call_id, body.encode(), token


def _webhook_floor(conn: psycopg.Connection, payload: tuple[str, bytes, str]) -> bytes:
    call_id, body, _ = payload
    event = json.loads(body)
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO calls_livekitwebhookevent (event_id, event, room_name,"
            " participant_identity, received_at) VALUES (%s, %s, %s, %s, now())"
            " ON CONFLICT (event_id) DO NOTHING RETURNING id",
            [event["id"], event["event"], event["room"]["name"], event["participant"]["identity"]],
        ).fetchone()
        if inserted:
            conn.execute(
                "UPDATE calls_call c SET status = 'active', started_at = now(),"
                " last_event_at = now(),"
                " agent_history = jsonb_build_array(v.definition ->> 'start_agent'),"
                " current_agent = v.definition ->> 'start_agent'"
                " FROM workflows_workflowversion v"
                " WHERE c.id = %s AND v.id = c.workflow_version_id AND c.status = 'connecting'",
                [call_id],
            )
    return floor.dumps({"result": "handled" if inserted else "duplicate"})


def webhook_scenario(ctx, conn: psycopg.Connection) -> Scenario:
    client = GunicornClient(ctx.port)
    pool: Iterator[str] | None = None

    def next_call() -> str:
        nonlocal pool
        if pool is None:
            # Inserted when this scenario first runs, after the lists: made at build time,
            # 5,000 new rows on pages no VACUUM has seen were the newest calls every list
            # read, and a deep page fetched half its skipped entries from the heap.
            pool = iter(_connecting_calls(conn, ctx.organization_id, 5000))
        return next(pool)

    def stack(payload: tuple[str, bytes, str]) -> bytes:
        _, body, token = payload
        response = client.post(
            WEBHOOK_URL, body, content_type="application/webhook+json", HTTP_AUTHORIZATION=token
        )
        if response.status_code != 200:
            raise AssertionError(f"webhook: {response.status_code} {response.content!r}")
        return response.content

    return Scenario(
        name="POST LiveKit webhook (participant_joined)",
        stack=stack,
        floor=lambda payload: _webhook_floor(conn, payload),
        prepare=lambda: _signed_joined(next_call()),
        compare=False,
    )
