"""Bulk data for the benchmarks, generated inside PostgreSQL (`INSERT … SELECT` over
`generate_series`, the statements in `bench.load_sql`), never one ORM row at a time.

Shape (defaults; each can be changed through the environment):
- BENCH_CALLS=1000000 calls over 3 organizations (60 % / 30 % / 10 %) and 20 workflows
  (10 / 6 / 4, the first of each the most used), created over the last 365 days with
  more calls recently (growth). Each call has a start delay and a planned duration, so
  the calls still running *now* are `active`, the just-created ones `connecting` (a few
  `pending`), and the rest ended: 82 % completed, 8 % disconnected, 6 % timeout (half
  never joined), 4 % failed (half before joining). 70 % are inbound, 30 % outbound; an
  outbound call's end reason is a campaign's (15 % of those completed `voicemail`, 3 %
  `transferred`; those failed were never answered: half `no_answer`, a quarter `busy`,
  then `rejected`, `invalid_number`, `sip_error`).
- BENCH_HEAVY_CALLS=1000 completed calls of the benchmark organization with
  BENCH_HEAVY_ENTRIES=5000 transcript entries each; every other call that started has
  0..BENCH_TAIL_MAX (40) entries, inserted by BENCH_LOAD_JOBS (2) parallel connections.
- Every call that started and ended has its cost row (billing_callcost), as the stack
  stores it when a call ends.
- The even-numbered workflows ask for a post-call analysis: each of their ended calls has
  its analysis row (analysis_callanalysis) and the call its copy of the status and verdict,
  as the stack keeps them: 92 % `completed` (70 % of them judged successful), 5 % `failed`,
  3 % `skipped` (none still pending).

Secondary indexes and unique constraints are dropped during the load and rebuilt after
(as `pg_restore` does), with triggers off (foreign keys; the call counts are recounted
after); then VACUUM ANALYZE, which leaves the visibility map as autovacuum would in
steady state (index-only scans rely on it).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.core.management import call_command
from django.db import connection

from bench.load_sql import (
    ANALYSES_SQL,
    CALLS_SQL,
    COST_BREAKDOWN,
    COST_USAGE,
    COSTS_SQL,
    HEAVY_SQL,
    TRANSCRIPT_SQL,
)

ORGANIZATIONS = [("bench-a", 10, 40_000), ("bench-b", 6, 20_000), ("bench-c", 4, 7_000)]
BENCH_ORG = "bench-a"
LOADED_TABLES = (
    "calls_call",
    "calls_transcriptentry",
    "billing_callcost",
    "analysis_callanalysis",
)

PHRASES = [
    "Hello! This is your daily check-in. How are you feeling today?",
    "I'm doing well, thanks.",
    "Great! What did you have for breakfast?",
    "Two eggs, toast and a coffee with milk.",
    "That sounds like a balanced breakfast. Did you drink some water as well?",
    "Yes, a big glass before the coffee.",
    "Perfect. And how did you sleep last night, on a scale from one to ten?",
    "Maybe a six. I woke up twice because of the noise outside.",
    "Sorry to hear that. Would you like me to note it for your care team?",
    "Sure, go ahead.",
    "Done. Anything else you want to tell me about your day so far?",
    "No, that's all. Thank you!",
    "You're welcome. Talk to you tomorrow at the same time. Goodbye!",
    "Um, wait, could you repeat the last question please? The line was a bit noisy.",
]
TOOL_CALL = '{"name": "save_meal", "arguments": {"meal_type": "breakfast", "items": ["eggs"]}}'


@dataclass(frozen=True)
class Shape:
    calls: int
    heavy_calls: int
    heavy_entries: int
    tail_max: int
    jobs: int

    @classmethod
    def from_env(cls) -> Shape:
        return cls(
            calls=int(os.environ.get("BENCH_CALLS", 1_000_000)),
            heavy_calls=int(os.environ.get("BENCH_HEAVY_CALLS", 1_000)),
            heavy_entries=int(os.environ.get("BENCH_HEAVY_ENTRIES", 5_000)),
            tail_max=int(os.environ.get("BENCH_TAIL_MAX", 40)),
            jobs=int(os.environ.get("BENCH_LOAD_JOBS", 2)),
        )


def _step(timings: dict, name: str, sql: str, params: dict | None = None) -> int:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.rowcount
    timings[name] = round(time.perf_counter() - started, 2)
    print(f"bench load: {name}: {timings[name]} s ({rows} rows)", flush=True)
    return rows


def _cast() -> None:
    """Organizations, workflows (ORM: a few rows) and the staging table of workflows."""
    from accounts.services import organization_get_or_create
    from workflows.demo import DEMO_DEFINITION
    from workflows.services import workflow_create

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_workflow (org_no int, idx int, "
            "organization_id uuid, workflow_id uuid, version_id uuid, slug text, "
            "PRIMARY KEY (org_no, idx))"
        )
        cursor.execute("TRUNCATE bench_workflow")
    for org_no, (slug, workflows, _) in enumerate(ORGANIZATIONS):
        organization = organization_get_or_create(slug=slug)
        for idx in range(workflows):
            workflow = workflow_create(
                organization=organization,
                slug=f"flow-{idx:02d}",
                name=f"Flow {idx:02d}",
                definition=DEMO_DEFINITION,
            )
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO bench_workflow VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        org_no,
                        idx,
                        organization.id,
                        workflow.id,
                        workflow.current_version_id,
                        workflow.slug,
                    ],
                )


def _drop_secondary_indexes() -> list[tuple[str, str]]:
    """Drop every index and unique constraint but the primary keys; return (name, DDL)
    to recreate them."""
    recreate: list[tuple[str, str]] = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'u' AND conrelid::regclass::text = ANY(%s)",
            [list(LOADED_TABLES)],
        )
        for table, name, definition in cursor.fetchall():
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            recreate.append((name, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
            "FROM pg_index i WHERE NOT i.indisprimary AND i.indrelid::regclass::text = ANY(%s)",
            [list(LOADED_TABLES)],
        )
        for name, definition in cursor.fetchall():
            cursor.execute(f"DROP INDEX {name}")
            recreate.append((name, definition))
    return recreate


def _transcripts(timings: dict, shape: Shape) -> None:
    """Transcript entries in `shape.jobs` parallel connections, one slice of calls each."""

    def job(number: int) -> int:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = replica")
                cursor.execute("SELECT setseed(%s)", [0.1 + number / 100])
                cursor.execute(
                    TRANSCRIPT_SQL,
                    {
                        "heavy_entries": shape.heavy_entries,
                        "tail_max": shape.tail_max,
                        "phrases": PHRASES,
                        "phrase_count": len(PHRASES),
                        "tool_call": TOOL_CALL,
                        "jobs": shape.jobs,
                        "job": number,
                    },
                )
                return cursor.rowcount
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=shape.jobs) as pool:
        rows = sum(pool.map(job, range(shape.jobs)))
    timings["transcript entries"] = round(time.perf_counter() - started, 2)
    print(
        f"bench load: transcript entries: {timings['transcript entries']} s ({rows} rows, "
        f"{shape.jobs} connections)",
        flush=True,
    )


def _recount(timings: dict) -> None:
    """The per-status call counts, as migration calls/0003 starts them (the load ran
    with triggers off), and each organization's open-call counter, as calls/0008 does."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'accounts_organization' AND column_name = 'open_calls'"
        )
        if cursor.fetchone():
            cursor.execute(
                "UPDATE accounts_organization o SET open_calls = (SELECT count(*)"
                " FROM calls_call c WHERE c.organization_id = o.id"
                " AND c.status IN ('pending', 'connecting', 'active'))"
            )
        cursor.execute("SELECT to_regclass('calls_callcount') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return
        cursor.execute("DELETE FROM calls_callcount")
    _step(
        timings,
        "call counts",
        "INSERT INTO calls_callcount (organization_id, status, shard, count)"
        " SELECT organization_id, status, 0, count(*) FROM calls_call"
        " GROUP BY organization_id, status",
    )


def load(shape: Shape) -> dict:
    """Migrate, generate, rebuild indexes, VACUUM ANALYZE; return timings in seconds."""
    timings: dict = {}
    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("createcachetable", verbosity=0)
    timings["migrate"] = round(time.perf_counter() - started, 2)
    _cast()
    recreate = _drop_secondary_indexes()
    with connection.cursor() as cursor:
        # Foreign keys are enforced by triggers; the generator's keys are right by
        # construction, and the checks would cost more than the inserts.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SELECT setseed(0.42)")
    # The generator leaves room_name out (every call's room is call-<id>): filled after.
    _step(timings, "room_name nullable", "ALTER TABLE calls_call ALTER room_name DROP NOT NULL")
    _step(timings, "calls", CALLS_SQL, {"calls": shape.calls})
    _step(timings, "room names", "UPDATE calls_call SET room_name = 'call-' || id")
    _step(timings, "room_name not null", "ALTER TABLE calls_call ALTER room_name SET NOT NULL")
    _step(
        timings,
        "heavy calls",
        HEAVY_SQL,
        {"bench_org": BENCH_ORG, "heavy_calls": shape.heavy_calls},
    )
    _transcripts(timings, shape)
    _step(timings, "call costs", COSTS_SQL, {"usage": COST_USAGE, "breakdown": COST_BREAKDOWN})
    _step(timings, "call analyses", ANALYSES_SQL)
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = DEFAULT")
    _recount(timings)
    index_started = time.perf_counter()
    for name, ddl in recreate:
        _step(timings, f"index {name}", ddl)
    timings["indexes"] = round(time.perf_counter() - index_started, 2)
    for table in LOADED_TABLES:
        _step(timings, f"vacuum analyze {table}", f"VACUUM (ANALYZE) {table}")
    timings["total"] = round(time.perf_counter() - started, 2)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM calls_call),"
            " (SELECT count(*) FROM calls_transcriptentry),"
            " pg_size_pretty(pg_database_size(current_database()))"
        )
        calls, entries, size = cursor.fetchone()
    timings.update(rows_calls=calls, rows_transcript=entries, database_size=size)
    print(f"bench load: {calls} calls, {entries} transcript entries, {size}", flush=True)
    return timings
