"""Writes of post-call analysis: schedule it when a call ends, run it (one chat
completion, validated, retried), re-run it on request.

A run is woken by the task queue (`analysis.tasks`), no sooner than
`WEBHOOKS_END_REPORT_DELAY` after the end, the same rule as the end-of-call report, so
the agent's late transcript lines are in it. The `CallAnalysis` row decides: a wake-up
for an older run, or one that finds the run already claimed, does nothing. A run nothing
else will wake (its wake-up lost, its worker dead) is woken by `analysis.recovery`.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from analysis import llm, turns
from analysis.models import AnalysisStatus, CallAnalysis
from analysis.prompt import answer_problem, answer_schema, messages, transcript_text
from analysis.settings import analysis_llm
from analysis.signals import call_analysis_usage_reported, call_analyzed
from calls import selectors
from calls.models import ENDED_STATUSES, ERASED_CONTENT, Call, TranscriptRole
from providerkeys.crypto import UndecryptableValue
from providerkeys.selectors import provider_key_for
from voicecalls.task_queue import LATER_PRIORITY, due_within_clock_skew

logger = logging.getLogger(__name__)
# Lines someone said; system and tool lines alone are no conversation.
SPOKEN_ROLES = frozenset({TranscriptRole.USER, TranscriptRole.ASSISTANT})

MAX_RETRY_DELAY_SECONDS = 3600.0
# A run claimed longer ago than this is taken for lost (its worker died): a re-run may
# start over.
STALE_RUN_SECONDS = 900
# A pending run this far past its time has lost its wake-up (a crash between the end's
# commit and the enqueue, a failed enqueue): it is woken again.
WAKE_GRACE = datetime.timedelta(seconds=120)


class CallNotEnded(Exception):
    pass


class AnalysisNotConfigured(Exception):
    pass


class CallTranscriptRemoved(Exception):
    """The call's transcript was erased or is past its retention: there is nothing left
    to analyse, and the verdict it had is kept."""


def _transcript_removed(call_id: UUID | str) -> bool:
    return Call.objects.filter(
        Q(erased_at__isnull=False) | Q(transcript_expired_at__isnull=False), pk=call_id
    ).exists()


def call_status_changed_receiver(signal: object, sender: type, **change: Any) -> None:
    """`calls.signals.call_status_changed` → schedule the analysis of an ended call."""
    if change["to_status"] in ENDED_STATUSES:
        call_analysis_schedule(call_id=change["call_id"], at=change["at"])


def call_analysis_wake(
    *, call_id: UUID | str, run: int, at: datetime.datetime, later: bool = False
) -> None:
    """Enqueue the run's attempt at `at`, once the current transaction commits; `later`
    (a retry, a wait for its organization's turn) at LATER_PRIORITY."""
    from analysis.tasks import analyse_call

    def enqueue() -> None:
        task = analyse_call.using(priority=LATER_PRIORITY) if later else analyse_call
        if at > timezone.now() and task.get_backend().supports_defer:
            task = task.using(run_after=at)
        task.enqueue(str(call_id), run)

    # robust: a failed enqueue must not fail the change that already committed.
    transaction.on_commit(enqueue, robust=True)


def call_analysis_schedule(*, call_id: UUID | str, at: datetime.datetime) -> CallAnalysis | None:
    """Create the pending analysis of a call that just ended, if its workflow version
    asks for one. Call it in the transaction that ended the call."""
    definition = (
        Call.objects.filter(pk=call_id)
        .values_list("workflow_version__definition", flat=True)
        .first()
    )
    chosen = analysis_llm(definition or {})
    if chosen is None:
        return None
    due = max(at, timezone.now()) + datetime.timedelta(seconds=settings.WEBHOOKS_END_REPORT_DELAY)
    analysis, created = CallAnalysis.objects.get_or_create(
        call_id=call_id,
        defaults={"provider": chosen[0], "model": chosen[1], "next_attempt_at": due},
    )
    if created:
        call_analysis_wake(call_id=call_id, run=analysis.run, at=due)
    return analysis


def call_analysis_lock(*, call_id: UUID | str) -> None:
    """Lock the call's row before its analysis's: a status change of the analysis
    updates the call too (its copy of it, by trigger: analysis migration 0002), and
    `_finish` locks the call first. The other order could deadlock with it."""
    Call.objects.select_for_update().filter(pk=call_id).values_list("pk", flat=True).first()


@transaction.atomic
def call_analysis_rerun(*, call: Call) -> CallAnalysis:
    """Analyse an ended call again. While a run is pending or running, that run is the
    answer (idempotent); CallNotEnded for an open call; AnalysisNotConfigured when its
    workflow version has no analysis."""
    if call.status not in ENDED_STATUSES:
        raise CallNotEnded()
    chosen = analysis_llm(call.workflow_version.definition)
    if chosen is None:
        raise AnalysisNotConfigured()
    now = timezone.now()
    call_analysis_lock(call_id=call.pk)
    # Read under the call's lock, which the erasure and retention take too.
    if _transcript_removed(call.pk):
        raise CallTranscriptRemoved()
    current = CallAnalysis.objects.select_for_update().filter(call=call).first()
    if current is None:
        try:
            with transaction.atomic():
                current = CallAnalysis.objects.create(
                    call=call, provider=chosen[0], model=chosen[1], next_attempt_at=now
                )
        except IntegrityError:  # a concurrent re-run created it: that run answers
            return CallAnalysis.objects.get(call=call)
        call_analysis_wake(call_id=call.pk, run=current.run, at=now)
        return current
    stale = now - datetime.timedelta(seconds=STALE_RUN_SECONDS)
    if current.status == AnalysisStatus.PENDING:
        if current.next_attempt_at <= now - WAKE_GRACE:
            call_analysis_wake(call_id=call.pk, run=current.run, at=now)  # its wake-up was lost
        return current
    if current.status == AnalysisStatus.RUNNING and current.updated_at > stale:
        return current
    current.run += 1
    current.status = AnalysisStatus.PENDING
    current.provider, current.model = chosen
    current.summary = current.structured_data = current.success = None
    current.error = ""
    current.attempts = 0
    current.next_attempt_at = current.updated_at = now
    current.finished_at = None
    current.save()
    call_analysis_wake(call_id=call.pk, run=current.run, at=now)
    return current


@dataclass
class _Outcome:
    status: str
    error: str = ""
    result: dict = field(default_factory=dict)
    retry_in: float | None = None


def call_analysis_attempt(*, call_id: UUID | str, run: int) -> str:
    """The task's work: claim the run if it is due, make the request, store the outcome.
    Returns what happened (for the task result and tests)."""
    now = timezone.now()
    if turns.organization_full(call_id, now=now, stale_seconds=STALE_RUN_SECONDS):
        at = turns.run_wait(call_id, run=run, now=now)
        if at is not None:
            call_analysis_wake(call_id=call_id, run=run, at=at, later=True)
            return "waiting"
    with transaction.atomic():
        call_analysis_lock(call_id=call_id)
        claimed = CallAnalysis.objects.filter(
            call_id=call_id, run=run, status=AnalysisStatus.PENDING, next_attempt_at__lte=now
        ).update(
            status=AnalysisStatus.RUNNING,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    if not claimed:
        # Early by less than the hosts' clocks may differ (the run made due by another
        # host's clock, its wake-up queued for at once): woken again at its time.
        pending = CallAnalysis.objects.filter(
            call_id=call_id, run=run, status=AnalysisStatus.PENDING
        )
        due = due_within_clock_skew(pending, now=now)
        if due is not None:
            call_analysis_wake(call_id=call_id, run=run, at=due)
        return "not due"
    analysis = CallAnalysis.objects.select_related("call__workflow_version").get(call_id=call_id)
    # The tokens each answer of this attempt reported: billed whatever the outcome.
    spent: list[dict[str, int]] = []
    try:
        outcome = _outcome(analysis, spent)
    except Exception:
        # Claimed, the run must end or be retried: left `running`, nothing would.
        logger.exception("analysis attempt failed", extra={"call_id": str(call_id)})
        outcome = _retry_or_fail(analysis, "The analysis stopped on an internal error.")
    try:
        return _finish(analysis, outcome, spent)
    except (DatabaseError, UnicodeEncodeError):
        # A result no column takes (what the checks above missed): retried, not left
        # `running` until the sweep takes it back.
        logger.exception("analysis result not stored", extra={"call_id": str(call_id)})
        return _finish(
            analysis, _retry_or_fail(analysis, "The analysis stopped on an internal error."), spent
        )


def _retry_or_fail(
    analysis: CallAnalysis, error: str, retry_after: float | None = None
) -> _Outcome:
    """Pending again after a backoff while attempts remain, else failed."""
    if analysis.attempts >= settings.ANALYSIS_MAX_ATTEMPTS:
        return _Outcome(AnalysisStatus.FAILED, error)
    backoff = settings.ANALYSIS_RETRY_BASE_SECONDS * 2 ** (analysis.attempts - 1)
    delay = min(max(backoff, retry_after or 0.0), MAX_RETRY_DELAY_SECONDS)
    return _Outcome(AnalysisStatus.PENDING, error, retry_in=delay)


def _outcome(analysis: CallAnalysis, spent: list[dict[str, int]]) -> _Outcome:
    """Skipped or failed before asking (nothing said, no key), else `_answer`'s."""
    call = analysis.call
    rows = selectors.call_transcript_rows(call=call)
    if skipped := _nothing_to_judge(call, rows):
        return skipped
    try:
        key = provider_key_for(
            organization=call.organization_id, provider_type="llm", provider_name=analysis.provider
        )
    except UndecryptableValue:
        return _Outcome(
            AnalysisStatus.FAILED,
            f"The organization's LLM key for {analysis.provider!r} cannot be decrypted with "
            "the configured CRYPTOGRAPHY_KEY (or its fallbacks).",
        )
    if key is None:
        return _Outcome(
            AnalysisStatus.SKIPPED,
            f"The organization has no LLM key for {analysis.provider!r}.",
        )
    return _answer(analysis, transcript_text(rows), key.api_key, spent)


def _answer(
    analysis: CallAnalysis, transcript: str, api_key: str, spent: list[dict[str, int]]
) -> _Outcome:
    """Ask the provider (once more on an invalid answer), adding the tokens each answer
    reported to `spent`."""
    call = analysis.call
    setting = call.workflow_version.analysis or {}
    asked = messages(analysis=setting, call=call, transcript=transcript)
    request = {"provider": analysis.provider, "model": analysis.model, "api_key": api_key}
    schema_for_answer = answer_schema(setting)

    def ask(asked: list[dict]) -> llm.Completion:
        completion = llm.chat_completion(**request, messages=asked, schema=schema_for_answer)
        if completion.usage:
            spent.append(completion.usage)
        return completion

    try:
        completion = ask(asked)
        answer, problem = answer_problem(completion.content, setting)
        if problem:
            # Once more, telling the model what was wrong.
            asked = [
                *asked,
                {"role": "assistant", "content": completion.content},
                {"role": "user", "content": f"{problem} Answer again, matching the schema."},
            ]
            completion = ask(asked)
            answer, problem = answer_problem(completion.content, setting)
    except llm.ProviderError as exc:
        message = llm.scrub(str(exc), api_key)
        logger.warning("analysis request failed", extra={"call_id": str(call.pk)})
        if exc.retryable:
            return _retry_or_fail(analysis, message, exc.retry_after)
        return _Outcome(AnalysisStatus.FAILED, message)
    if problem:
        return _Outcome(AnalysisStatus.FAILED, f"Invalid answer after one retry: {problem}")
    return _Outcome(
        AnalysisStatus.COMPLETED,
        result={
            "summary": answer.get("summary"),
            "structured_data": answer.get("structured_data"),
            "success": answer.get("success") if setting.get("success_criteria") else None,
            "model": completion.model,
        },
    )


def _nothing_to_judge(call: Call, rows: list[tuple]) -> _Outcome | None:
    """Skipped, without asking the provider (on the organization's key), when the call's
    words are gone or were never said (a phone nobody answered, a call that never began)."""
    if call.erased_at is not None or call.transcript_expired_at is not None:
        # Erased before its run: the provider would judge `[erased]` lines.
        return _Outcome(AnalysisStatus.SKIPPED, "The call's transcript was removed.")
    if not any(role in SPOKEN_ROLES for _id, role, *_rest in rows):
        return _Outcome(AnalysisStatus.SKIPPED, "Nothing was said on the call.")
    return None


def _usage_items(analysis: CallAnalysis, spent: list[dict[str, int]]) -> list[dict]:
    """The attempt's requests as one usage item of the run's provider and model (the
    one asked, which the price table names: the answer may name a dated snapshot)."""
    names = ("prompt_tokens", "completion_tokens", "cached_tokens")
    counts = {name: sum(usage[name] for usage in spent) for name in names}
    return [{"component": "llm", "provider": analysis.provider, "model": analysis.model, **counts}]


def _finish(analysis: CallAnalysis, outcome: _Outcome, spent: list[dict[str, int]]) -> str:
    now = timezone.now()
    changes: dict[str, Any] = {"status": outcome.status, "error": outcome.error[:500]}
    changes["updated_at"] = now
    if outcome.retry_in is not None:
        changes["next_attempt_at"] = now + datetime.timedelta(seconds=outcome.retry_in)
    else:
        changes["finished_at"] = now
        changes.update(outcome.result)
    with transaction.atomic():
        # The call row's lock orders this against the end-of-call report being frozen
        # (webhooks.outbox.event_body): either the report has the result, or the
        # `call.analyzed` event goes to its endpoints.
        removed = (
            Call.objects.select_for_update()
            .filter(pk=analysis.call_id)
            .values_list("erased_at", "transcript_expired_at", "user_data_expired_at")
            .first()
        )
        # Only what went since the run read the call: user data gone before it (sooner
        # than the transcript) was never in the prompt, and the result stays.
        read = analysis.call
        before = (read.erased_at, read.transcript_expired_at, read.user_data_expired_at)
        if removed and any(at and was is None for at, was in zip(removed, before, strict=True)):
            # The call was erased (or its transcript or user data expired) while the
            # provider read it: the verdict stays, the words it wrote about the caller,
            # or quoted in why it failed, do not (privacy.scrub.analysis_erase).
            changes.update(summary=None, structured_data=None)
            if changes["error"] and outcome.status != AnalysisStatus.SKIPPED:
                changes["error"] = ERASED_CONTENT  # a skip's reason is ours, quoting nobody
        if spent:
            # Once per attempt (this transaction ends it), before `call_analyzed`: the
            # end-of-call report or `call.analyzed` it causes has the cost with it.
            call_analysis_usage_reported.send(
                sender=CallAnalysis, call_id=analysis.call_id, usage=_usage_items(analysis, spent)
            )
        updated = CallAnalysis.objects.filter(
            call_id=analysis.call_id, run=analysis.run, status=AnalysisStatus.RUNNING
        ).update(**changes)
        if not updated:
            return "superseded"
        if outcome.retry_in is not None:
            call_analysis_wake(
                call_id=analysis.call_id,
                run=analysis.run,
                at=changes["next_attempt_at"],
                later=True,
            )
        else:
            call_analyzed.send(sender=CallAnalysis, call_id=analysis.call_id, at=now)
    return str(outcome.status)
