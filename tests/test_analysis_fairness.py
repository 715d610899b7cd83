"""One organization's slow LLM provider and the others' analyses: an organization has
at most ANALYSIS_ORGANIZATION_MAX_RUNNING analyses asking its provider at once
(docs/reliability.md, "Fairness between organizations")."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from django.utils import timezone

from accounts.models import Organization
from analysis.models import AnalysisStatus, CallAnalysis
from analysis.recovery import analyses_wake_overdue
from analysis.services import STALE_RUN_SECONDS, call_analysis_attempt
from tests.fake_llm import FakeLLM, Outcome
from tests.tasks import run_task_worker
from tests.test_analysis_run import VALID, analysis_of, ended_call

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def one_analysis_running(settings: object) -> None:
    """A cap of one, so one run held shows it (the default is larger)."""
    settings.ANALYSIS_ORGANIZATION_MAX_RUNNING = 1


def attempt(analysis: CallAnalysis) -> str:
    return call_analysis_attempt(call_id=analysis.call_id, run=analysis.run)


def attempt_out(analysis: CallAnalysis, fake_llm: FakeLLM) -> threading.Thread:
    """The analysis's attempt, in a thread, once its request reached the provider."""
    thread = threading.Thread(target=attempt, args=(analysis,))
    thread.start()
    while not fake_llm.requests:
        time.sleep(0.02)
    return thread


def test_a_slow_provider_holds_one_worker_while_other_organizations_analyses_go_on(
    organization: Organization, outsider: Organization, fake_llm: FakeLLM
) -> None:
    """Each analysis of an organization whose provider answers slowly took a worker for
    its requests (up to two of 60 s each): with a campaign's calls ending, every worker
    waited on that one provider, and every other organization's analyses (and webhooks)
    waited behind them."""
    first, second = (analysis_of(ended_call(organization)) for _ in range(2))
    theirs = analysis_of(ended_call(outsider, name="Bob"))
    fake_llm.outcomes = [Outcome.answer(VALID, delay=1.0)]
    fake_llm.default = Outcome.answer(VALID)
    out = attempt_out(first, fake_llm)

    started = time.monotonic()
    waited = attempt(second)  # a second worker is not held by that provider too
    assert attempt(theirs) == AnalysisStatus.COMPLETED
    elapsed = time.monotonic() - started
    asked_meanwhile = len(fake_llm.requests)
    out.join()

    assert elapsed < 0.9  # neither waited on the slow provider
    assert asked_meanwhile == 2  # the first's and theirs
    second.refresh_from_db()
    assert (waited, second.status, second.attempts) == ("waiting", AnalysisStatus.PENDING, 0)
    assert second.next_attempt_at > timezone.now()
    assert analysis_of(first.call).status == AnalysisStatus.COMPLETED


def test_a_run_whose_worker_died_holds_its_organization_only_until_taken_back(
    organization: Organization, fake_llm: FakeLLM
) -> None:
    first, second = (analysis_of(ended_call(organization)) for _ in range(2))
    fake_llm.default = Outcome.answer(VALID)
    long_ago = timezone.now() - datetime.timedelta(seconds=STALE_RUN_SECONDS + 1)
    CallAnalysis.objects.filter(pk=first.pk).update(
        status=AnalysisStatus.RUNNING, attempts=1, updated_at=long_ago, next_attempt_at=long_ago
    )

    assert attempt(second) == AnalysisStatus.COMPLETED
    assert analyses_wake_overdue() == 1


def test_a_failing_providers_retries_go_after_other_organizations_analyses(
    organization: Organization, outsider: Organization, fake_llm: FakeLLM, settings: object
) -> None:
    """A retry is queued for its time (run_after) and the queue takes those before any
    queued for at once: an organization whose provider failed had its retries go before
    every other organization's analyses due, each holding the worker up to the timeout."""
    settings.ANALYSIS_RETRY_BASE_SECONDS = 0.2
    failing = analysis_of(ended_call(organization))
    fake_llm.outcomes = [Outcome(status=500)]
    fake_llm.default = Outcome.answer(VALID)
    run_task_worker("analysis")  # a 500: again in 0.2 s
    assert analysis_of(failing.call).status == AnalysisStatus.PENDING
    time.sleep(0.3)
    theirs = analysis_of(ended_call(outsider, name="Bob"))

    run_task_worker("analysis", "--max-tasks", "1")

    assert analysis_of(theirs.call).status == AnalysisStatus.COMPLETED
    assert analysis_of(failing.call).status == AnalysisStatus.PENDING
