"""The raw floor of POST /calls (`bench.floor` holds the reads'): the workflow's current
version, one INSERT, the user's token, by hand through psycopg, written from the API
contract as the reads' floors are."""

from __future__ import annotations

import time
import uuid

import psycopg
from psycopg.types.json import Jsonb

from bench.floor import dumps

INSERT = (
    "INSERT INTO calls_call (id, organization_id, workflow_id, workflow_version_id,"
    " workflow_slug, user_id, user_data, metadata, direction, status, agent_history,"
    " connect_timeout_seconds, max_duration_seconds, stt_latency_ms_sum,"
    " stt_latency_count, llm_latency_ms_sum, llm_latency_count, tts_latency_ms_sum,"
    " tts_latency_count, total_tokens, agent_handoffs, created_at, room_name)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'inbound', 'connecting', '[]', %s, %s,"
    " 0, 0, 0, 0, 0, 0, 0, 0, now(), %s)"
)


def call_create(
    conn: psycopg.Connection,
    *,
    organization_id: str,
    workflow_slug: str,
    user_id: str | None,
    user_data: dict,
    metadata: dict,
    concurrency_limit: int | None = None,
) -> bytes:
    """POST /calls: the workflow's current version, one INSERT, the user's token. With
    a `concurrency_limit`, the limits done the constant-time way: the rate's upsert, then
    the open-call counter's conditional UPDATE in the INSERT's transaction."""
    from django.conf import settings

    from voicecalls.livekit import participant_token

    call_id = _call_insert(
        conn,
        organization_id=organization_id,
        workflow_slug=workflow_slug,
        user_id=user_id,
        user_data=user_data,
        metadata=metadata,
        concurrency_limit=concurrency_limit,
    )
    name = user_data.get("name")
    token = participant_token(
        room_name=f"call-{call_id}",
        identity=f"user-{call_id}",
        name=name if isinstance(name, str) and name else None,
        call_id=str(call_id),
    )
    return dumps(
        {
            "call_id": str(call_id),
            "room_name": f"call-{call_id}",
            "livekit_url": settings.LIVEKIT_URL,
            "token": token,
            "status": "connecting",
        }
    )


def _call_insert(
    conn: psycopg.Connection,
    *,
    organization_id: str,
    workflow_slug: str,
    user_id: str | None,
    user_data: dict,
    metadata: dict,
    concurrency_limit: int | None,
) -> uuid.UUID:
    workflow_id, version_id, limits = conn.execute(
        "SELECT w.id, v.id, v.definition -> 'settings' FROM workflows_workflow w"
        " JOIN workflows_workflowversion v ON v.id = w.current_version_id"
        " WHERE w.organization_id = %s AND w.slug = %s AND w.deleted_at IS NULL",
        [organization_id, workflow_slug],
    ).fetchone()
    limits = limits or {}
    call_id = uuid.uuid4()
    params = [
        call_id,
        organization_id,
        workflow_id,
        version_id,
        workflow_slug,
        user_id,
        Jsonb(user_data),
        Jsonb(metadata),
        int(limits.get("connect_timeout_seconds", 60)),
        int(limits.get("max_duration_seconds", 1800)),
        f"call-{call_id}",
    ]
    if concurrency_limit is None:
        conn.execute(INSERT, params)
        return call_id
    _rate_hit(conn, organization_id=organization_id)
    with conn.transaction():  # in calls.services.call_insert's order
        conn.execute(INSERT, params)
        conn.execute(
            "UPDATE accounts_organization SET open_calls = open_calls + 1"
            " WHERE id = %s AND open_calls < coalesce(concurrency_limit, %s)",
            [organization_id, concurrency_limit],
        )
    return call_id


def _rate_hit(conn: psycopg.Connection, *, organization_id: str) -> None:
    """accounts/rates.py's statement (microseconds), at a rate the benchmark never
    reaches (a million a minute)."""
    from accounts.rates import RATE_HIT_SQL

    window_us = 60_000_000
    conn.execute(
        RATE_HIT_SQL.format(greatest="GREATEST"),
        {
            "key": f"floor:{organization_id}",
            "now": int(time.time() * 1_000_000),
            "interval": window_us // 1_000_000,
            "window": window_us,
        },
    )
