"""accounts/rates.py: `limit` requests per `window` seconds per key (GCRA), in one
statement per request, exact under concurrency and without a window boundary."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import RateLimitState
from accounts.rates import RateDecision, rate_hit, rate_refund

ALLOWED = RateDecision(allowed=True, retry_after=0)


def _hits(key: str, times: list[float], limit: int = 3, window: float = 60) -> list[RateDecision]:
    return [rate_hit(key=key, limit=limit, window=window, now=t) for t in times]


def test_a_burst_of_the_limit_passes_and_the_next_waits_one_interval(db):
    decisions = _hits("k", [1000.0] * 4)

    assert decisions == [ALLOWED] * 3 + [RateDecision(allowed=False, retry_after=20)]


@pytest.mark.parametrize(
    ("limit", "window"),
    [
        (7, 60),
        (9, 60),
        (11, 60),
        (13, 60),
        (14, 60),
        (21, 60),
        (300, 60),
        (19, 3600),
        (7745, 60),
        (999, 1),
        (3, 86400),
        (2000, 1),  # an interval shorter than the limit in microseconds
        (10_000, 60),
    ],
)
def test_a_whole_burst_passes_at_todays_clock_and_one_more_does_not(db, limit, window):
    """In float seconds at ~1.75e9, `limit` intervals added one by one rounded past
    `now + window` for many limits."""
    decisions = _hits("k", [1_751_234_567.891] * (limit + 1), limit=limit, window=window)

    assert decisions[:limit] == [ALLOWED] * limit
    assert decisions[limit].allowed is False


def test_after_one_interval_exactly_one_more_request_passes(db):
    _hits("k", [1000.0] * 3)

    assert _hits("k", [1020.0, 1020.0]) == [ALLOWED, RateDecision(allowed=False, retry_after=20)]


def test_requests_at_the_allowed_rate_all_pass(db):
    assert _hits("k", [1000.0 + 20 * i for i in range(30)]) == [ALLOWED] * 30


def test_there_is_no_window_boundary_letting_twice_the_limit_through(db):
    """A fixed window resetting at t=1020 would let 2 more through at once."""
    _hits("k", [1019.0, 1019.0], limit=2, window=20)

    assert _hits("k", [1021.0], limit=2, window=20) == [RateDecision(allowed=False, retry_after=8)]


def test_a_refused_request_does_not_push_the_next_one_back(db):
    _hits("k", [1000.0] * 3)
    _hits("k", [1001.0] * 50)

    assert _hits("k", [1020.0]) == [ALLOWED]


def test_a_limit_of_zero_lets_nothing_through_for_a_window(db):
    assert _hits("k", [1000.0], limit=0) == [RateDecision(allowed=False, retry_after=60)]


def test_keys_are_limited_apart(db):
    _hits("a", [1000.0] * 3)

    assert _hits("b", [1000.0]) == [ALLOWED]
    assert RateLimitState.objects.count() == 2


def test_a_request_that_passes_costs_one_statement(db, django_assert_num_queries):
    _hits("k", [1000.0])

    with django_assert_num_queries(1):
        assert _hits("k", [1000.0]) == [ALLOWED]


@pytest.mark.postgres
def test_on_postgresql_its_statement_is_prepared_once_it_runs_often(db):
    _hits("k", [1000.0 + 20 * i for i in range(10)])

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert any(s.lstrip().startswith("INSERT INTO accounts_ratelimitstate") for s in prepared)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_pass_exactly_the_limit() -> None:
    barrier = threading.Barrier(10)
    decisions: list[bool] = []

    def hit() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(3):
                decisions.append(rate_hit(key="race", limit=7, window=3600).allowed)
        finally:
            connection.close()

    threads = [threading.Thread(target=hit) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(decisions) == [False] * 23 + [True] * 7


@pytest.mark.django_db(transaction=True)
def test_the_migration_carries_each_rates_state_over_in_microseconds_and_back() -> None:
    executor = MigrationExecutor(connection)
    before, after = (
        ("accounts", "0007_privacy_retention"),
        (
            "accounts",
            "0008_rate_limit_state_microseconds",
        ),
    )
    try:
        executor.migrate([before])
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO accounts_ratelimitstate (key, tat) VALUES ('k', 1751234567.25)"
            )
        executor.loader.build_graph()
        executor.migrate([after])
        carried = list(RateLimitState.objects.values_list("key", "tat_us"))
        executor.loader.build_graph()
        executor.migrate([before])  # back: the float column comes back, empty
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM accounts_ratelimitstate")
            (left,) = cursor.fetchone()
    finally:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert carried == [("k", 1_751_234_567_250_000)]
    assert left == 0


def _burst(key: str, *, now: float) -> int:
    allowed = 0
    while rate_hit(key=key, limit=10, window=10, now=now).allowed:
        allowed += 1
    return allowed


def test_a_refund_gives_back_what_the_request_still_holds_of_the_rate(db):
    hit = rate_hit(key="k", limit=10, window=10, now=1000.0)

    rate_refund(key="k", limit=10, window=10, hit_tat_us=hit.tat_us, now=1000.0)

    assert _burst("k", now=1000.0) == 10


def test_a_refund_after_the_requests_slot_ran_out_frees_no_other_requests_slot(db):
    """A whole interval given back once the slot had run out took the slot of a create
    counted since: eleven went through at once, the limit ten."""
    replay = rate_hit(key="k", limit=10, window=10, now=1000.0)
    assert rate_hit(key="k", limit=10, window=10, now=1005.0).allowed  # a real create

    rate_refund(key="k", limit=10, window=10, hit_tat_us=replay.tat_us, now=1005.0)

    assert _burst("k", now=1005.0) == 9
