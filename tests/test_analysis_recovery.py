"""An analysis never stays open for good: a degenerate answer, a key no configured
CRYPTOGRAPHY_KEY opens, an unexpected error, a lost wake-up and a dead worker each end
the run or run it again."""

from __future__ import annotations

import datetime
import time

import pytest
import urllib3
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts.models import Organization
from analysis.models import AnalysisStatus, CallAnalysis
from analysis.recovery import _stale_run_take_back, analyses_wake_overdue
from analysis.services import STALE_RUN_SECONDS, call_analysis_rerun
from calls.models import Call
from tests.fake_llm import FakeLLM, Outcome
from tests.test_analysis_run import VALID, analysis_of, ended_call, run_worker

pytestmark = pytest.mark.django_db(transaction=True)


DEEP = "[" * 100_000 + "]" * 100_000


def test_an_answer_nested_too_deeply_is_an_invalid_answer_and_fails_the_analysis(
    organization: Organization, fake_llm: FakeLLM
) -> None:
    """json.loads raises RecursionError, not ValueError: it escaped the attempt after the
    run was claimed, and the analysis stayed `running` for good."""
    call = ended_call(organization)
    fake_llm.default = Outcome(content=DEEP)

    run_worker()

    analysis = analysis_of(call)
    assert (analysis.status, analysis.error) == (
        "failed",
        "Invalid answer after one retry: The answer is nested too deeply.",
    )
    assert len(fake_llm.requests) == 2


def test_an_llm_key_no_configured_key_opens_fails_the_analysis_with_the_reason(
    organization: Organization, fake_llm: FakeLLM, settings: object
) -> None:
    call = ended_call(organization)
    settings.CRYPTOGRAPHY_KEY = "a-key-the-llm-key-was-not-encrypted-with"
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    run_worker()

    analysis = analysis_of(call)
    assert (analysis.status, analysis.error) == (
        "failed",
        "The organization's LLM key for 'openai' cannot be decrypted with the configured "
        "CRYPTOGRAPHY_KEY (or its fallbacks).",
    )
    assert fake_llm.requests == []


def test_an_unexpected_error_in_an_attempt_is_retried_then_fails_never_left_running(
    organization: Organization, fake_llm: FakeLLM, settings: object, monkeypatch
) -> None:
    settings.ANALYSIS_MAX_ATTEMPTS = 2
    call = ended_call(organization)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an error nobody foresaw")

    monkeypatch.setattr(urllib3.PoolManager, "request", broken)
    run_worker()  # the retry is due at once (no backoff here): the same worker runs it

    analysis = analysis_of(call)
    assert (analysis.status, analysis.attempts, analysis.error) == (
        "failed",
        2,
        "The analysis stopped on an internal error.",
    )


def lose_wake_ups() -> None:
    """What a crash between the end's commit and the enqueue leaves: no task."""
    DBTaskResult.objects.filter(queue_name="analysis").delete()


def test_a_rerun_of_a_pending_analysis_whose_wake_up_was_lost_wakes_it(
    organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization)
    lose_wake_ups()
    overdue = timezone.now() - datetime.timedelta(minutes=3)
    CallAnalysis.objects.filter(call=call).update(next_attempt_at=overdue)
    fake_llm.default = Outcome.answer(VALID)

    rerun = call_analysis_rerun(call=Call.objects.get(pk=call.pk))
    run_worker()

    assert (rerun.status, rerun.run) == ("pending", 1)
    assert analysis_of(call).status == "completed"


def test_wake_analyses_wakes_lost_runs_and_takes_back_those_of_dead_workers(
    organization: Organization, outsider: Organization, fake_llm: FakeLLM, settings: object
) -> None:
    settings.ANALYSIS_MAX_ATTEMPTS = 2
    fake_llm.default = Outcome.answer(VALID)
    lost, dead, dead_last, due = (ended_call(organization) for _ in range(4))
    # Another organization's (one running holds up its own organization's others).
    busy = ended_call(outsider)
    lose_wake_ups()
    now = timezone.now()
    long_ago = now - datetime.timedelta(seconds=STALE_RUN_SECONDS + 60)
    analyses = CallAnalysis.objects
    analyses.filter(call=lost).update(next_attempt_at=now - datetime.timedelta(minutes=3))
    running = {"status": AnalysisStatus.RUNNING, "next_attempt_at": long_ago}
    analyses.filter(call=dead).update(**running, updated_at=long_ago, attempts=1)
    analyses.filter(call=dead_last).update(**running, updated_at=long_ago, attempts=2)
    analyses.filter(call=busy).update(**running, updated_at=now, attempts=1)
    analyses.filter(call=due).update(next_attempt_at=now)  # its wake-up may still come

    call_command("wake_analyses")
    run_worker()

    outcomes = {
        name: (analysis_of(call).status, analysis_of(call).error)
        for name, call in [
            ("lost", lost),
            ("dead", dead),
            ("dead_last", dead_last),
            ("busy", busy),
            ("due", due),
        ]
    }
    assert outcomes == {
        "lost": ("completed", ""),
        "dead": ("completed", ""),
        "dead_last": ("failed", "The worker running the analysis stopped."),
        "busy": ("running", ""),
        "due": ("pending", ""),
    }


def test_while_the_worker_is_down_the_sweep_queues_each_lost_run_once(
    organization: Organization, fake_llm: FakeLLM
) -> None:
    """Every pass used to queue every overdue run again: a worker down for an hour and
    a sweep each minute left sixty task rows per run."""
    fake_llm.default = Outcome.answer(VALID)
    calls = [ended_call(organization) for _ in range(2)]
    lose_wake_ups()
    overdue = timezone.now() - datetime.timedelta(minutes=3)
    CallAnalysis.objects.update(next_attempt_at=overdue)

    woken = [analyses_wake_overdue() for _ in range(3)]

    assert woken == [2, 0, 0]
    queued = DBTaskResult.objects.filter(queue_name="analysis")
    assert sorted(r.args_kwargs["args"] for r in queued) == sorted(
        [str(call.pk), 1] for call in calls
    )
    run_worker()  # the worker is back: the queue drains, and a lost run is woken again
    assert [analysis_of(call).status for call in calls] == ["completed", "completed"]
    lose_wake_ups()
    CallAnalysis.objects.filter(call=calls[0]).update(
        status=AnalysisStatus.PENDING, next_attempt_at=overdue
    )
    assert analyses_wake_overdue() == 1


def test_the_sweep_wakes_at_most_its_limit_of_lost_runs_most_overdue_first(
    organization: Organization, fake_llm: FakeLLM
) -> None:
    """A pass read every open run past its time at once: after a day's backlog (the
    worker down), every pass loaded and matched them all against the queue."""
    calls = [ended_call(organization) for _ in range(3)]
    lose_wake_ups()
    now = timezone.now()
    for minutes, call in zip([5, 30, 10], calls, strict=True):
        CallAnalysis.objects.filter(call=call).update(
            next_attempt_at=now - datetime.timedelta(minutes=minutes)
        )

    assert analyses_wake_overdue(now=now, limit=2) == 2

    queued = DBTaskResult.objects.filter(queue_name="analysis")
    assert {r.args_kwargs["args"][0] for r in queued} == {str(calls[1].pk), str(calls[2].pk)}


def test_the_sweep_leaves_alone_a_run_a_rerun_started_after_it_listed_the_dead_one(
    organization: Organization, fake_llm: FakeLLM, settings: object
) -> None:
    """The sweep lists run 1 (its worker dead, its attempts spent); a re-run then starts
    run 2, which a worker claims. The sweep read the call's analysis again by its call
    alone and failed run 2, whose worker's answer was then dropped as superseded."""
    settings.ANALYSIS_MAX_ATTEMPTS = 2
    call = ended_call(organization)
    now = timezone.now()
    stale = now - datetime.timedelta(seconds=STALE_RUN_SECONDS)
    long_ago = stale - datetime.timedelta(seconds=60)
    analyses = CallAnalysis.objects.filter(call=call)
    analyses.update(status=AnalysisStatus.RUNNING, attempts=2, updated_at=long_ago)
    listed = list(analyses.values_list("call_id", "run", "attempts"))  # what the sweep saw
    assert call_analysis_rerun(call=Call.objects.get(pk=call.pk)).run == 2
    analyses.update(status=AnalysisStatus.RUNNING, attempts=1, updated_at=now)  # claimed

    for call_id, run, attempts in listed:
        _stale_run_take_back(call_id, run=run, last=attempts, stale=stale, now=now)

    analysis = analysis_of(call)
    assert (analysis.run, analysis.status, analysis.error) == (2, "running", "")


def test_a_wake_up_that_comes_before_its_run_is_due_by_clock_skew_is_not_lost(
    organization: Organization, fake_llm: FakeLLM
) -> None:
    """The run was made due by the clock of the host that ended the call (or asked for
    a re-run), its wake-up queued for at once; the worker's clock runs behind it and
    it took the task before the run was due by its own: "not due", the task ended, and
    the analysis waited for `wake_analyses` (WAKE_GRACE past its time)."""
    from analysis.services import call_analysis_attempt

    call = ended_call(organization)
    fake_llm.default = Outcome.answer(VALID)
    # Early by 2 s (under CLOCK_SKEW): room enough for a loaded machine's attempt.
    skew = datetime.timedelta(seconds=2)
    CallAnalysis.objects.filter(call=call).update(next_attempt_at=timezone.now() + skew)
    DBTaskResult.objects.filter(queue_name="analysis").update(status="SUCCESSFUL")  # taken

    assert call_analysis_attempt(call_id=str(call.pk), run=1) == "not due"
    time.sleep(skew.total_seconds() + 0.1)
    run_worker()

    assert analysis_of(call).status == "completed"
