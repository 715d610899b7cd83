"""The reporter's batching and retry rules, against a stand-in HTTP transport (the real
endpoint is exercised in test_call_against_api.py)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from agent.api import AgentAPI
from agent.reporter import EventReporter


class Endpoint:
    """Answers `POST .../events` from a list of scripted outcomes, then 200."""

    def __init__(self, outcomes: list[object] | None = None) -> None:
        self.outcomes = list(outcomes or [])
        self.batches: list[list[dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        self.batches.append(events)
        outcome = self.outcomes.pop(0) if self.outcomes else 200
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, httpx.Response):
            return outcome
        if outcome == 200:
            return httpx.Response(200, json={"accepted": len(events), "duplicates": 0})
        return httpx.Response(outcome, json={"type": "error", "errors": []})


def reporter_for(endpoint: Endpoint, **kwargs: object) -> EventReporter:
    api = AgentAPI("http://api.invalid", "agent-key", transport=httpx.MockTransport(endpoint))
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_cap", 0.02)
    return EventReporter(api, "6f1c1f0e-0000-4000-8000-000000000001", **kwargs)


def say(reporter: EventReporter, n: int) -> list[dict]:
    return [reporter.transcript(role="user", content=f"line {i}", agent_name="a") for i in range(n)]


async def test_events_go_out_about_once_per_interval_without_a_flush() -> None:
    endpoint = Endpoint()
    reporter = reporter_for(endpoint, flush_interval=0.05)
    reporter.start()
    say(reporter, 3)
    await asyncio.sleep(0.5)
    assert [len(batch) for batch in endpoint.batches] == [3]
    await reporter.aclose()


async def test_each_event_has_a_uuid_id_type_and_timestamp() -> None:
    endpoint = Endpoint()
    reporter = reporter_for(endpoint)
    event = reporter.metrics(llm_latency_ms=12.5, tokens=None, agent_name="a")
    await reporter.aclose()
    assert set(event) == {"id", "type", "timestamp", "llm_latency_ms", "agent_name"}
    assert event["type"] == "metrics"
    assert len(event["id"]) == 36
    assert event["timestamp"].endswith("+00:00")
    assert endpoint.batches == [[event]]


async def test_a_metrics_sample_without_any_measurement_is_not_sent() -> None:
    endpoint = Endpoint()
    reporter = reporter_for(endpoint)
    assert reporter.metrics(llm_latency_ms=None, agent_name="a") is None
    await reporter.aclose()
    assert endpoint.batches == []


async def test_network_errors_and_5xx_are_retried_with_the_same_events() -> None:
    endpoint = Endpoint([httpx.ConnectError("refused"), 502, 429, 200])
    reporter = reporter_for(endpoint)
    sent = say(reporter, 2)
    await reporter.aclose()
    assert endpoint.batches == [sent, sent, sent, sent]
    assert reporter.accepted == 2
    assert reporter.dropped == []


async def test_a_request_timeout_is_retried_with_the_same_events() -> None:
    """A 408 (a proxy or load balancer gave up waiting for the request) says the
    request was not processed and may be sent again; it cost the batch its lines."""
    endpoint = Endpoint([408, 200])
    reporter = reporter_for(endpoint)
    sent = say(reporter, 2)
    await reporter.aclose()
    assert endpoint.batches == [sent, sent]
    assert reporter.accepted == 2
    assert reporter.dropped == []


async def test_a_refused_request_is_not_retried() -> None:
    endpoint = Endpoint([403])
    reporter = reporter_for(endpoint)
    sent = say(reporter, 2)
    await reporter.aclose()
    assert len(endpoint.batches) == 1
    assert reporter.dropped == [{"id": e["id"], "type": e["type"]} for e in sent]


async def test_a_400_naming_an_event_drops_only_that_event() -> None:
    refusal = httpx.Response(
        400,
        json={
            "type": "validation_error",
            "errors": [{"code": "invalid_choice", "detail": "x", "attr": "events.1.role"}],
        },
    )
    endpoint = Endpoint([refusal])
    reporter = reporter_for(endpoint)
    first, bad, last = say(reporter, 3)
    await reporter.aclose()
    assert endpoint.batches == [[first, bad, last], [first, last]]
    assert reporter.dropped == [{"id": bad["id"], "type": "transcript"}]


async def test_a_413_splits_the_batch() -> None:
    endpoint = Endpoint([413])
    reporter = reporter_for(endpoint)
    sent = say(reporter, 4)
    await reporter.aclose()
    assert endpoint.batches == [sent, sent[:2], sent[2:]]
    assert reporter.accepted == 4


async def test_batches_stay_under_the_byte_limit() -> None:
    endpoint = Endpoint()
    reporter = reporter_for(endpoint, max_batch_bytes=4000)
    for _ in range(6):
        reporter.transcript(role="assistant", content="x" * 1500, agent_name="a")
    await reporter.aclose()
    assert [len(batch) for batch in endpoint.batches] == [2, 2, 2]
    assert all(len(json.dumps(batch)) < 4000 for batch in endpoint.batches)


async def test_aclose_gives_up_at_its_deadline_when_the_api_stays_down() -> None:
    endpoint = Endpoint([503] * 1000)
    reporter = reporter_for(endpoint)
    say(reporter, 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await reporter.aclose(timeout=0.3)
    assert loop.time() - started < 2
    assert reporter.accepted == 0
    assert len(endpoint.batches) > 1


async def test_reporting_does_not_wait_for_the_network() -> None:
    """`report` is synchronous: a slow API delays delivery, never the caller."""

    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={"accepted": 1, "duplicates": 0})

    api = AgentAPI("http://api.invalid", "k", transport=httpx.MockTransport(slow))
    reporter = EventReporter(api, "c", flush_interval=0)
    reporter.start()
    say(reporter, 1)
    await asyncio.sleep(0.05)  # the first batch is now stuck in flight
    loop = asyncio.get_running_loop()
    started = loop.time()
    say(reporter, 1000)
    assert loop.time() - started < 0.5
    assert reporter.pending == 1000
    release.set()
    await reporter.aclose()
    assert reporter.pending == 0


STT_USAGE = [{"component": "stt", "provider": "deepgram", "model": "nova-3", "audio_seconds": 1.5}]


async def test_usage_goes_in_a_post_of_its_own_and_only_the_newest_waits() -> None:
    endpoint = Endpoint()
    reporter = reporter_for(endpoint)
    first = say(reporter, 1)[0]
    reporter.usage(STT_USAGE)
    newest = reporter.usage([{**STT_USAGE[0], "audio_seconds": 3.0}])
    last = say(reporter, 1)[0]
    assert reporter.pending == 3
    await reporter.aclose()

    assert endpoint.batches == [[first, last], [newest]]
    assert set(newest) == {"id", "type", "timestamp", "usage", "session"}
    assert newest["type"] == "usage"
    assert newest["usage"] == [{**STT_USAGE[0], "audio_seconds": 3.0}]


async def test_each_reporter_names_its_own_usage_session() -> None:
    """A job re-dispatched after its worker died gets a new reporter: its totals, counted
    from zero, must not replace the first run's."""
    endpoint = Endpoint()
    first, second = reporter_for(endpoint), reporter_for(endpoint)

    one = first.usage(STT_USAGE)
    again = first.usage(STT_USAGE)
    other = second.usage(STT_USAGE)

    assert one["session"] == again["session"] == first.session
    assert other["session"] == second.session != first.session
    await first.aclose()
    await second.aclose()


async def test_a_refused_usage_report_costs_no_transcript_line_and_is_not_sent_again() -> None:
    """An API that predates usage events answers 400 naming the event's type."""
    unknown_type = httpx.Response(
        400,
        json={
            "type": "validation_error",
            "errors": [{"code": "invalid_choice", "detail": "x", "attr": "events.0.type"}],
        },
    )
    endpoint = Endpoint([200, unknown_type])
    reporter = reporter_for(endpoint)
    lines = say(reporter, 2)
    refused = reporter.usage(STT_USAGE)
    await reporter.flush()
    more = say(reporter, 1)
    assert reporter.usage(STT_USAGE) is None
    await reporter.aclose()

    assert endpoint.batches == [lines, [refused], more]
    assert reporter.dropped == [{"id": refused["id"], "type": "usage"}]
    assert reporter.accepted == 3


async def test_usage_is_taken_even_while_the_reporter_is_full() -> None:
    """At most one report waits, so it cannot fill the reporter."""
    endpoint = Endpoint([503, 503])
    reporter = reporter_for(endpoint, max_pending_events=2)
    say(reporter, 3)
    assert reporter.refused == 1
    assert reporter.usage(STT_USAGE) is not None
    await reporter.aclose()

    assert [event["type"] for event in endpoint.batches[-1]] == ["usage"]
    assert reporter.accepted == 3


async def test_delivered_events_leave_the_reporter_and_refused_ones_keep_no_words(
    caplog,
) -> None:
    """Nothing of a caller's words stays in the worker once the API has answered: not
    in memory (erasure and retention could not reach it), not in the logs."""
    refusal = httpx.Response(
        400,
        json={
            "type": "validation_error",
            "errors": [
                {"code": "invalid", "detail": "'my secret' is wrong", "attr": "events.0.role"}
            ],
        },
    )
    endpoint = Endpoint([refusal, 200, 403])
    reporter = reporter_for(endpoint)
    bad = reporter.transcript(role="user", content="my secret allergy", agent_name="a")
    delivered = reporter.transcript(role="user", content="my secret address", agent_name="a")
    await reporter.flush()
    refused = reporter.transcript(role="user", content="my secret diagnosis", agent_name="a")
    await reporter.aclose()

    assert endpoint.batches == [[bad, delivered], [delivered], [refused]]
    assert reporter.pending == 0
    assert reporter._pending == [] and reporter._pending_bytes == 0
    assert reporter.dropped == [
        {"id": bad["id"], "type": "transcript"},
        {"id": refused["id"], "type": "transcript"},
    ]
    assert "secret" not in repr(vars(reporter))
    assert caplog.records and "secret" not in caplog.text
    assert f"transcript event {bad['id']}: invalid at events.0.role" in caplog.text


# -- what a batch could not be sent with -----------------------------------------------


def sent_ids(endpoint: Endpoint) -> list[str]:
    return [event["id"] for batch in endpoint.batches for event in batch]


async def test_a_lone_surrogate_is_sent_as_a_replacement_and_the_rest_of_the_call_goes_on():
    """Half of a pair split across streamed chunks: no UTF-8 has it, the body failed to
    encode, and the reporter's task died with every later event of the call."""
    endpoint = Endpoint()
    reporter = reporter_for(endpoint)
    reporter.start()
    line = reporter.transcript(role="user", content="I feel \ud83d", agent_name="a")
    await asyncio.sleep(0.05)
    kept = reporter.transcript(role="assistant", content="Glad to hear it.", agent_name="a")
    status = reporter.status("completed", reason="agent_hangup")

    await reporter.aclose(timeout=1.0)

    assert sent_ids(endpoint) == [line["id"], kept["id"], status["id"]]
    assert endpoint.batches[0][0]["content"] == "I feel \ufffd"


async def test_a_nan_measurement_is_left_out_and_the_rest_of_the_call_goes_on():
    endpoint = Endpoint()
    reporter = reporter_for(endpoint)
    reporter.start()
    sample = reporter.metrics(llm_latency_ms=float("nan"), tokens=3, agent_name="a")
    only_nan = reporter.metrics(tts_latency_ms=float("inf"), agent_name="a")
    await asyncio.sleep(0.05)
    kept = reporter.transcript(role="user", content="still here", agent_name="a")

    await reporter.aclose(timeout=1.0)

    assert only_nan is None  # nothing measured: the API wants one measurement
    assert sent_ids(endpoint) == [sample["id"], kept["id"]]
    assert "llm_latency_ms" not in endpoint.batches[0][0]


async def test_a_nul_character_is_left_out_of_a_line_the_api_would_refuse_whole():
    endpoint = Endpoint()
    reporter = reporter_for(endpoint)

    reporter.transcript(role="user", content="my card ends in 42\x00", agent_name="a")
    await reporter.aclose(timeout=1.0)

    assert endpoint.batches[0][0]["content"] == "my card ends in 42"


async def test_a_200_whose_body_is_not_the_apis_does_not_stop_the_reporter():
    """A proxy answering 200 in plain text: `result.get` on a str killed the task."""
    endpoint = Endpoint([httpx.Response(200, text="OK")])
    reporter = reporter_for(endpoint)
    reporter.start()
    first = reporter.transcript(role="user", content="first", agent_name="a")
    await asyncio.sleep(0.05)
    kept = reporter.transcript(role="user", content="second", agent_name="a")

    await reporter.aclose(timeout=1.0)

    assert sent_ids(endpoint) == [first["id"], kept["id"]]


async def test_a_429_is_retried_no_sooner_than_its_retry_after():
    times: list[float] = []

    class Timed(Endpoint):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            times.append(time.monotonic())
            return super().__call__(request)

    throttled = httpx.Response(429, headers={"Retry-After": "2"}, json={"errors": []})
    endpoint = Timed([throttled])
    reporter = reporter_for(endpoint, backoff_base=0.5, backoff_cap=10.0)
    reporter.transcript(role="user", content="hello", agent_name="a")

    await reporter.aclose(timeout=5.0)

    assert len(times) == 2
    assert times[1] - times[0] >= 2.0


async def test_the_calls_end_is_still_delivered_within_aclose_after_a_long_retry_after():
    """A proxy's 503 (a deploy) with `Retry-After: 30` as the call ends: a last try
    before the close's budget ends, or the call stays open on the API's side."""
    unavailable = httpx.Response(503, headers={"Retry-After": "30"}, json={"errors": []})
    endpoint = Endpoint([unavailable])
    reporter = reporter_for(endpoint)
    status = reporter.status("completed", reason="agent_hangup")

    await reporter.aclose(timeout=2.0)

    assert sent_ids(endpoint) == [status["id"]] * 2


async def test_a_redirect_is_not_taken_for_delivery() -> None:
    # The API behind SECURE_SSL_REDIRECT (on by default without DEBUG) answers an
    # http:// VOICECALLS_API_URL with a 301; httpx does not follow it. Nothing was
    # stored: the lines must be retried or at least counted as dropped, never lost in silence.
    redirect = httpx.Response(301, headers={"Location": "https://api.invalid/api/v1/agent/"})
    endpoint = Endpoint([redirect])
    reporter = reporter_for(endpoint)
    sent = say(reporter, 2)
    await reporter.aclose(timeout=1.0)
    delivered = reporter.accepted == len(sent)
    assert delivered or reporter.dropped == [{"id": e["id"], "type": e["type"]} for e in sent]


async def test_an_api_shedding_load_is_not_hammered_once_the_last_try_before_close_failed():
    """`Retry-After` is followed except for one last try before the close's budget ends;
    once that try failed too, there is no time left for another: no request storm."""
    unavailable = httpx.Response(503, headers={"Retry-After": "30"}, json={"errors": []})
    endpoint = Endpoint([unavailable] * 10_000)
    reporter = reporter_for(endpoint)
    reporter.status("completed", reason="agent_hangup")

    await reporter.aclose(timeout=1.0)

    assert len(endpoint.batches) <= 3


async def test_a_long_outage_does_not_kill_the_reporter():
    """Retried about 1,100 times (a long outage: at the 10 s cap about three hours of a
    call; here a tiny backoff), the reporter still delivers once the API is back."""
    endpoint = Endpoint([503] * 1100)
    reporter = reporter_for(endpoint, backoff_base=0.0001, backoff_cap=0.0001)
    line = reporter.transcript(role="user", content="still there?", agent_name="a")

    await asyncio.wait_for(reporter.flush(), 10)

    assert reporter.accepted == 1
    assert endpoint.batches[-1] == [line]
    await reporter.aclose()


async def test_a_400_in_another_error_shape_drops_its_batch_and_the_reporter_goes_on():
    """A proxy or gateway in front of the API may answer 400 in its own shape (here
    `{"errors": ["..."]}`): that batch is refused, the next one still goes out."""
    refusal = httpx.Response(400, json={"errors": ["Bad Request"]})
    endpoint = Endpoint([refusal])
    reporter = reporter_for(endpoint)
    first = say(reporter, 1)
    await asyncio.wait_for(reporter.flush(), 5)
    later = say(reporter, 1)
    await asyncio.wait_for(reporter.flush(), 5)

    assert reporter.dropped == [{"id": first[0]["id"], "type": "transcript"}]
    assert endpoint.batches[-1] == later
    await reporter.aclose()


async def test_a_retry_wait_begun_before_the_close_still_leaves_a_last_try_within_aclose():
    """A proxy's 503 with `Retry-After: 30` (a deploy) a moment before the call ends:
    the reporter is already waiting when aclose starts, yet the call's last lines and
    its end must still get their last try within the close's budget."""
    unavailable = httpx.Response(503, headers={"Retry-After": "30"}, json={"errors": []})
    endpoint = Endpoint([unavailable])
    reporter = reporter_for(endpoint)
    reporter.start()
    line = reporter.transcript(role="user", content="bye then", agent_name="a")
    await asyncio.wait_for(wait_for_batches(endpoint, 1), 5)  # refused: now waiting
    status = reporter.status("completed", reason="agent_hangup")

    await reporter.aclose(timeout=2.0)

    delivered = [event["id"] for batch in endpoint.batches[1:] for event in batch]
    assert line["id"] in delivered and status["id"] in delivered


async def wait_for_batches(endpoint: Endpoint, n: int) -> None:
    while len(endpoint.batches) < n:
        await asyncio.sleep(0.01)
