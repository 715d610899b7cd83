"""The statements `bench.load` generates the bulk data with (its docstring gives the
shape), each an `INSERT … SELECT` run inside PostgreSQL; the organizations' sizes in
CALLS_SQL are those of `bench.load.ORGANIZATIONS`."""

CALLS_SQL = """
WITH base AS (
    SELECT g,
           CASE WHEN g %% 10 < 6 THEN 0 WHEN g %% 10 < 9 THEN 1 ELSE 2 END AS org_no,
           random() AS r_wf, random() AS r_user, random() AS r_status, random() AS r_time,
           random() AS r_dur, random() AS r_misc, random() AS r_dir
    FROM generate_series(1, %(calls)s) AS g
), planned AS MATERIALIZED (
    SELECT b.*,
           -- Growth: more calls lately. Created, then joined 2-15 s later, then talked.
           now() - interval '365 days' * power(b.r_time, 1.25) AS created,
           interval '2 seconds' + interval '13 seconds' * b.r_misc AS delay,
           interval '30 seconds' + interval '870 seconds' * power(b.r_dur, 2) AS talk,
           CASE b.org_no WHEN 0 THEN 40000 WHEN 1 THEN 20000 ELSE 7000 END AS users,
           CASE b.org_no WHEN 0 THEN 10 WHEN 1 THEN 6 ELSE 4 END AS workflows
    FROM base b
), lived AS MATERIALIZED (
    SELECT p.*,
           CASE
               WHEN p.created + p.delay > now() THEN
                   CASE WHEN p.r_status < 0.05 THEN 'pending' ELSE 'connecting' END
               WHEN p.created + p.delay + p.talk > now() THEN 'active'
               WHEN p.r_status < 0.82 THEN 'completed'
               WHEN p.r_status < 0.90 THEN 'disconnected'
               WHEN p.r_status < 0.96 THEN 'timeout'
               ELSE 'failed'
           END AS status,
           -- Half the timeouts and failures never had the user in the room; an
           -- outbound call that failed was never answered (busy, no answer, ...).
           (p.r_status >= 0.90 AND p.r_dir < 0.5)
               OR (p.r_status >= 0.96 AND p.r_dir >= 0.7) AS never_joined,
           floor(p.r_misc * 3)::int AS handoffs
    FROM planned p
), final AS MATERIALIZED (
    SELECT l.*,
           CASE WHEN l.status IN ('pending', 'connecting')
                     OR (l.status IN ('timeout', 'failed') AND l.never_joined) THEN NULL
                ELSE l.created + l.delay END AS started,
           l.status NOT IN ('pending', 'connecting', 'active') AS ended,
           (hashint4(l.g)::bigint + 2147483648) %% 100 AS h_analysis,
           (hashtext(l.g::text)::bigint + 2147483648) %% 100 AS h_success,
           (hashtext('end' || l.g)::bigint + 2147483648) %% 100 AS h_reason
    FROM lived l
)
INSERT INTO calls_call (
    id, organization_id, workflow_id, workflow_version_id, workflow_slug, user_id,
    user_data, metadata, direction, status, end_reason, hangup_requested_at,
    agent_history, current_agent, connect_timeout_seconds, max_duration_seconds,
    stt_latency_ms_sum, stt_latency_count, llm_latency_ms_sum, llm_latency_count,
    tts_latency_ms_sum, tts_latency_count, total_tokens, agent_handoffs,
    created_at, started_at, ended_at, last_event_at, analysis_status, analysis_success
)
SELECT gen_random_uuid(), w.organization_id, w.workflow_id, w.version_id, w.slug,
       CASE WHEN f.r_user < 0.1 THEN NULL
            ELSE 'user-' || floor(f.users * power((f.r_user - 0.1) / 0.9, 1.5))::int END,
       jsonb_build_object('name', 'User ' || f.g, 'language', 'en'),
       jsonb_build_object('source', 'mobile-app', 'session_id', md5(f.g::text)),
       CASE WHEN f.r_dir < 0.7 THEN 'inbound' ELSE 'outbound' END,
       f.status,
       -- Outbound calls end as a dialing campaign's do: 15 in 100 of those answered
       -- reach a voicemail and 3 are transferred; a failed one was busy, not answered, ...
       -- (from a hash, so the other columns' random draws stay those of earlier rounds).
       CASE f.status
           WHEN 'completed' THEN CASE
               WHEN f.r_dir >= 0.7 AND f.h_reason < 15 THEN 'voicemail'
               WHEN f.r_dir >= 0.7 AND f.h_reason < 18 THEN 'transferred'
               ELSE (ARRAY['user_hangup', 'agent_hangup', 'api_request'])[
                   1 + floor(f.r_misc * 3)::int] END
           WHEN 'disconnected' THEN 'connection_lost'
           WHEN 'timeout' THEN CASE WHEN f.never_joined THEN 'connect_timeout'
                                    ELSE 'max_duration' END
           WHEN 'failed' THEN CASE
               WHEN f.r_dir >= 0.7 THEN CASE
                   WHEN f.h_reason < 50 THEN 'no_answer' WHEN f.h_reason < 75 THEN 'busy'
                   WHEN f.h_reason < 85 THEN 'rejected'
                   WHEN f.h_reason < 92 THEN 'invalid_number' ELSE 'sip_error' END
               WHEN f.never_joined THEN 'join_failure'
               ELSE 'agent_error' END
       END,
       NULL,
       CASE WHEN f.started IS NULL THEN '[]'::jsonb
            ELSE (ARRAY['["greeter-agent"]', '["greeter-agent", "meal-agent"]',
                        '["greeter-agent", "meal-agent", "feedback-agent"]'])[1 + f.handoffs]::jsonb
       END,
       CASE WHEN f.started IS NULL THEN NULL
            ELSE (ARRAY['greeter-agent', 'meal-agent', 'feedback-agent'])[1 + f.handoffs] END,
       60, 1800,
       CASE WHEN f.started IS NULL THEN 0 ELSE 110.5 * (3 + f.handoffs * 4) END,
       CASE WHEN f.started IS NULL THEN 0 ELSE 3 + f.handoffs * 4 END,
       CASE WHEN f.started IS NULL THEN 0 ELSE 290.25 * (3 + f.handoffs * 4) END,
       CASE WHEN f.started IS NULL THEN 0 ELSE 3 + f.handoffs * 4 END,
       CASE WHEN f.started IS NULL THEN 0 ELSE 85.0 * (3 + f.handoffs * 4) END,
       CASE WHEN f.started IS NULL THEN 0 ELSE 3 + f.handoffs * 4 END,
       CASE WHEN f.started IS NULL THEN 0 ELSE 450 * (3 + f.handoffs * 4) END,
       CASE WHEN f.started IS NULL THEN 0 ELSE f.handoffs END,
       f.created,
       f.started,
       CASE WHEN NOT f.ended THEN NULL
            WHEN f.started IS NULL THEN f.created + interval '60 seconds'
            WHEN f.status = 'timeout' THEN f.started + interval '1800 seconds'
            ELSE f.started + f.talk END,
       CASE WHEN NOT f.ended THEN coalesce(f.started, f.created)
            WHEN f.started IS NULL THEN f.created + interval '60 seconds'
            WHEN f.status = 'timeout' THEN f.started + interval '1800 seconds'
            ELSE f.started + f.talk END,
       -- The analysis (ANALYSES_SQL copies it into its table): from a hash of the row
       -- number, so the other columns' random draws stay those of earlier rounds.
       CASE WHEN f.ended AND w.idx %% 2 = 0 THEN
           CASE WHEN f.h_analysis < 3 THEN 'skipped' WHEN f.h_analysis < 8 THEN 'failed'
                ELSE 'completed' END
       END,
       CASE WHEN f.ended AND w.idx %% 2 = 0 AND f.h_analysis >= 8 THEN f.h_success < 70 END
FROM final f
JOIN bench_workflow w
  ON w.org_no = f.org_no AND w.idx = floor(f.workflows * power(f.r_wf, 1.6))::int
-- In creation order, as a live table fills: rows in random order made every counted list
-- ~1.5x slower than on such a table (bench/README.md, "eighth round").
ORDER BY f.created
"""

# Every call that started and ended is priced: a usage snapshot and a six-line breakdown
# of the demo providers (their sizes as the stack stores them), the total from its
# minutes and tokens.
COSTS_SQL = """
INSERT INTO billing_callcost (
    call_id, organization_id, workflow_id, call_created_at, usage, usage_sessions, usage_at,
    total_usd, breakdown, complete, computed_at
)
SELECT c.id, c.organization_id, c.workflow_id, c.created_at, %(usage)s::jsonb, '{}'::jsonb,
       c.ended_at,
       round((extract(epoch FROM c.ended_at - c.started_at) / 60 * 0.0412
              + c.total_tokens * 0.0000008)::numeric, 6),
       %(breakdown)s::jsonb, true, c.ended_at
FROM calls_call c
WHERE c.started_at IS NOT NULL AND c.ended_at IS NOT NULL
"""
_LINE = (
    '{{"component": "{}", "provider": "{}", "model": "{}", "quantity": "{}", "unit": "{}",'
    ' "unit_price_usd": "{}", "amount_usd": "{}", "phase": "call"}}'
)
COST_BREAKDOWN = (
    "["
    + ", ".join(
        _LINE.format(*line)
        for line in (
            ("stt", "deepgram", "nova-3", "2.92", "minute", "0.0077", "0.022484"),
            ("llm_prompt", "openai", "gpt-4.1-mini", "4200", "token", "0.0000004", "0.001680"),
            ("llm_cached", "openai", "gpt-4.1-mini", "1200", "token", "0.0000001", "0.000120"),
            ("llm_completion", "openai", "gpt-4.1-mini", "410", "token", "0.0000016", "0.000656"),
            ("tts", "cartesia", "sonic-2", "2300", "character", "0.00003", "0.069000"),
            ("room", "livekit", "room", "3", "minute", "0.0005", "0.001500"),
        )
    )
    + "]"
)
COST_USAGE = (
    '[{"component": "stt", "provider": "deepgram", "model": "nova-3", "audio_seconds": 175.2},'
    ' {"component": "llm", "provider": "openai", "model": "gpt-4.1-mini", "prompt_tokens": 5400,'
    ' "completion_tokens": 410, "cached_tokens": 1200},'
    ' {"component": "tts", "provider": "cartesia", "model": "sonic-2", "characters": 2300}]'
)

ANALYSES_SQL = """
INSERT INTO analysis_callanalysis (
    call_id, status, summary, structured_data, success, error, provider, model, run,
    attempts, next_attempt_at, created_at, updated_at, finished_at
)
SELECT c.id, c.analysis_status,
       CASE WHEN c.analysis_status = 'completed'
            THEN 'The user reported their meals and sleep.' END,
       CASE WHEN c.analysis_status = 'completed' THEN '{"meals": 2, "sleep_score": 6}'::jsonb END,
       c.analysis_success,
       CASE c.analysis_status WHEN 'failed' THEN 'The provider answered 503 four times.'
                              WHEN 'skipped' THEN 'The organization has no LLM key for ''openai''.'
                              ELSE '' END,
       'openai', 'gpt-4.1-mini', 1, CASE WHEN c.analysis_status = 'failed' THEN 4 ELSE 1 END,
       c.ended_at + interval '5 seconds', c.ended_at, c.ended_at + interval '9 seconds',
       c.ended_at + interval '9 seconds'
FROM calls_call c
WHERE c.analysis_status IS NOT NULL
"""

HEAVY_SQL = """
CREATE TABLE bench_heavy AS
SELECT c.id FROM calls_call c
JOIN accounts_organization o ON o.id = c.organization_id
WHERE o.slug = %(bench_org)s AND c.status = 'completed'
ORDER BY md5(c.id::text)
LIMIT %(heavy_calls)s
"""

TRANSCRIPT_SQL = """
WITH spoken AS (
    SELECT c.id, c.started_at, coalesce(c.ended_at, now()) - c.started_at AS span,
           c.agent_history,
           CASE WHEN h.id IS NOT NULL THEN %(heavy_entries)s
                ELSE floor(random() * (%(tail_max)s + 1))::int END AS entries
    FROM calls_call c LEFT JOIN bench_heavy h ON h.id = c.id
    WHERE c.started_at IS NOT NULL AND abs(hashtext(c.id::text)) %% %(jobs)s = %(job)s
)
INSERT INTO calls_transcriptentry (
    call_id, event_id, role, content, agent_name, tool_call, timestamp, created_at
)
SELECT s.id, gen_random_uuid(),
       CASE WHEN n %% 25 = 1 AND n > 1 THEN 'tool' WHEN n %% 2 = 1 THEN 'assistant'
            ELSE 'user' END,
       (%(phrases)s::text[])[1 + (n * 7) %% %(phrase_count)s],
       s.agent_history ->> least(n * jsonb_array_length(s.agent_history) / (s.entries + 1),
                                 jsonb_array_length(s.agent_history) - 1),
       CASE WHEN n %% 25 = 0 THEN %(tool_call)s::jsonb END,
       s.started_at + s.span * (n::float8 / (s.entries + 1)),
       s.started_at + s.span * (n::float8 / (s.entries + 1)) + interval '300 milliseconds'
FROM spoken s CROSS JOIN LATERAL generate_series(1, s.entries) AS n
"""
