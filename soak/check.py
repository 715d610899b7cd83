"""The invariants, checked at the end of the run against the generator's own record
(record.json), LiveKit's stats (livekit.json) and the receiver's log (receiver.jsonl),
after a drain period in which the fleet finishes what is in flight. Writes check.json:
{"violations": [...], "figures": {...}}.

    python -m soak.check WORK_DIR DRAIN_SECONDS
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: Django is set up by then
    from calls.models import Call

ENDED = ("completed", "failed", "timeout", "disconnected")
SHOWN = 10  # violations listed per invariant


def drain(organization_id: int, call_ids: list[str], seconds: float) -> float:
    """Wait until every call ended and no delivery is pending; the seconds it took."""
    from calls.models import Call
    from webhooks.models import DeliveryStatus, WebhookDelivery

    started = time.monotonic()
    while time.monotonic() - started < seconds:
        open_calls = Call.objects.filter(pk__in=call_ids).exclude(status__in=ENDED).count()
        pending = WebhookDelivery.objects.filter(
            event__organization_id=organization_id, status=DeliveryStatus.PENDING
        ).count()
        if not open_calls and not pending:
            break
        time.sleep(5)
    return time.monotonic() - started


def _calls(calls: list[dict], gave_up: set[str], run_started: float) -> tuple[list[str], dict]:
    """Every call terminal with the right end reason; its transcript and metrics exact."""
    from calls import selectors
    from calls.models import Call

    bad: dict[str, list[str]] = defaultdict(list)
    # A reconciled call ends when it last showed life: how far that is from its real end.
    reconciled_end_offsets: list[float] = []
    by_id = {str(c.pk): c for c in Call.objects.filter(pk__in=[r["call_id"] for r in calls])}
    for record in calls:
        call = by_id.get(record["call_id"])
        if call is None:
            bad["calls missing"].append(record["call_id"])
            continue
        status, reason = record["expected"]
        if call.room_name in gave_up and call.status in ENDED:
            # LiveKit gave up on one of the room's webhooks (as it does after 30 s): a
            # lost join times the call out, a lost departure leaves it to reconciliation.
            status, reason = call.status, call.end_reason
            bad["ended otherwise: LiveKit gave up on a webhook (not a violation)"].append("")
        if (call.status, call.end_reason) != (status, reason):
            bad["wrong end"].append(f"{call.pk} {record['plan']}: {call.status}/{call.end_reason}")
        # Present when the create was sent again: anything but the first call (another
        # call, or an error answered, which names none) breaks the key's promise.
        if "replayed" in record and record["replayed"] != record["call_id"]:
            answered = record.get("replay_status")
            bad["idempotent replay made another call or was refused"].append(
                f"{call.pk} → {record['replayed']} ({answered})"
            )
        if record["plan"] == "reconciled" and call.ended_at:
            offset = call.ended_at.timestamp() - run_started - record["ended_at"]
            reconciled_end_offsets.append(offset)
        lines = [row[2] for row in selectors.call_transcript_rows(call=call)]
        lines, expected = _lines_compared(record, lines, ended=(call.status, call.end_reason))
        if lines != expected:
            bad["transcript not exactly once in order"].append(
                f"{call.pk}: {len(lines)}/{len(expected)}"
            )
        if (metrics := _metrics_mismatch(call, record)) is not None:
            bad["metrics sums"].append(f"{call.pk}: {metrics}")
    figures = {"reconciled_end_offsets": sorted(round(s, 1) for s in reconciled_end_offsets)}
    figures["livekit_lost_ends"] = len(
        bad.pop("ended otherwise: LiveKit gave up on a webhook (not a violation)", [])
    )
    return _listed(bad), figures


def _notes(plan: str) -> list[str]:
    """The system's note on the agent's absence that the plan's end writes in the
    transcript after every line sent (calls.agent_presence), word for word."""
    from django.conf import settings

    from soak.scenario import AGENT_LOST_REASON

    if plan == "agent_not_joined":
        seconds = settings.CALL_AGENT_JOIN_TIMEOUT_SECONDS
        return [f"No agent joined the call within {seconds} seconds."]
    if plan == "agent_lost":
        return [f"The agent left the call unexpectedly ({AGENT_LOST_REASON})."]
    return []


def _lines_compared(
    record: dict, lines: list[str], *, ended: tuple[str, str | None]
) -> tuple[list[str], list[str]]:
    """(the lines kept, the lines owed): every line sent, then the plan's note. A call
    that ended otherwise (LiveKit gave up on one of its webhooks: see `_calls`) may or
    may not have heard of the agent's absence first: its note is left out of both."""
    from soak.scenario import content

    sent = [content(record["n"], index) for index in range(record.get("lines", 0))]
    notes = _notes(record["plan"])
    if ended == tuple(record["expected"]):
        return lines, sent + notes
    return [line for line in lines if line not in notes], sent


def _metrics_mismatch(call: Call, record: dict) -> str | None:
    """How the call's stored sums and counts differ from those its agent sent, or None."""
    sums = record.get("sums") or {"stt": 0, "llm": 0, "tts": 0, "tokens": 0, "samples": 0}
    stored = (
        call.stt_latency_ms_sum,
        call.llm_latency_ms_sum,
        call.tts_latency_ms_sum,
        call.total_tokens,
        call.stt_latency_count,
        call.llm_latency_count,
        call.tts_latency_count,
        call.agent_handoffs,
    )
    # Every sample carries all three latencies: each count is the samples'.
    wanted = (
        sums["stt"],
        sums["llm"],
        sums["tts"],
        sums["tokens"],
        *[sums["samples"]] * 3,
        record.get("handoffs", 0),
    )
    return None if stored == wanted else f"{stored} != {wanted}"


def _listed(bad: dict[str, list[str]]) -> list[str]:
    return [
        f"{name} ({len(items)}): {'; '.join(items[:SHOWN])}" for name, items in bad.items() if items
    ]


def _counters(organization_id: int, call_ids: set[str]) -> list[str]:
    """`total` counters equal count(*); the open-call counter is back to 0; no
    Idempotency-Key made two calls (every call is one the generator made)."""
    from django.db.models import Count, Sum

    from accounts.models import Organization
    from calls.models import Call, CallCount

    bad = []
    counted = dict(
        Call.objects.filter(organization_id=organization_id)
        .values_list("status")
        .annotate(n=Count("id"))
    )
    stored = dict(
        CallCount.objects.filter(organization_id=organization_id)
        .values_list("status")
        .annotate(n=Sum("count"))
    )
    if {k: v for k, v in stored.items() if v} != counted:
        bad.append(f"call counters {stored} != count(*) {counted}")
    open_calls = Organization.objects.get(pk=organization_id).open_calls
    if (
        open_calls
        != Call.objects.filter(organization_id=organization_id).exclude(status__in=ENDED).count()
    ):
        bad.append(f"open_calls counter {open_calls} differs from the open calls")
    made = {
        str(pk)
        for pk in Call.objects.filter(organization_id=organization_id).values_list("pk", flat=True)
    }
    if made != call_ids:
        bad.append(f"calls the generator did not make: {sorted(made - call_ids)[:SHOWN]}")
    return bad


def _call_reports(
    calls: list[dict], accepted: list[dict], started: float, bad: dict[str, list[str]]
) -> int:
    """Each call's status changes received and its end-of-call report whole, added to
    `bad`; how many reports may predate lines sent after their call ended."""
    from calls.models import Call, CallStatus

    reports = {e["call_id"]: e for e in accepted if e["type"] == "call.ended"}
    # The status changes each call's endpoint was owed, by the call's own history: an
    # event the outbox never wrote is in no table, and "events lost" cannot see it.
    changes_received = {
        (e["call_id"], e.get("to_status")) for e in accepted if e["type"] == "call.status_changed"
    }
    rows = Call.objects.filter(pk__in=[r["call_id"] for r in calls])
    history = {
        str(pk): (status, reason, started_at, ended_at)
        for pk, status, reason, started_at, ended_at in rows.values_list(
            "pk", "status", "end_reason", "started_at", "ended_at"
        )
    }
    late = 0
    for record in calls:
        report = reports.get(record["call_id"])
        status, reason, started_at, end = history.get(record["call_id"], (None,) * 4)
        owed = ([CallStatus.ACTIVE] if started_at else []) + ([status] if end else [])
        missing = [to for to in owed if (record["call_id"], to) not in changes_received]
        if missing:
            bad["status changes not received"].append(f"{record['call_id']}: {missing}")
        if end and report is None:
            bad["no end-of-call report"].append(record["call_id"])
            continue
        # A reconciled call ends when last heard of, but its end (and report) is
        # recorded long after its last line: its report must hold every line.
        reconciled = record["plan"] == "reconciled"
        if end and not reconciled and record.get("talk_done_at", 0) + started > end.timestamp():
            late += 1  # lines still sent after the call ended: the report may predate them
            continue
        if report is None:
            bad["no end-of-call report"].append(record["call_id"])
            continue
        lines, expected = _lines_compared(record, report["lines"], ended=(status, reason))
        if lines != expected:
            bad["report missing lines"].append(f"{record['call_id']}: {len(lines)}/{len(expected)}")
    return late


def _webhooks(
    organization_id: int, calls: list[dict], received: list[dict], started: float
) -> tuple[list[str], dict]:
    """Every event delivered, received and verified, with one id; every report whole."""
    from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEvent

    bad: dict[str, list[str]] = defaultdict(list)
    undelivered = WebhookDelivery.objects.filter(event__organization_id=organization_id).exclude(
        status=DeliveryStatus.SUCCEEDED
    )
    for delivery_id, status in undelivered.values_list("pk", "status")[:SHOWN]:
        bad["deliveries not delivered"].append(f"{delivery_id} {status}")
    accepted = [entry for entry in received if entry["answer"] == 200]
    bad["bad signatures"] = [e["id"] for e in accepted if not e.get("verified")]
    ids_by_event: dict[tuple, set[str]] = defaultdict(set)
    for entry in received:
        if entry["answer"] == 200:
            ids_by_event[(entry["type"], entry["call_id"], entry.get("to_status"))].add(entry["id"])
            if entry["id"] != entry.get("body_id"):
                bad["header id differs from body id"].append(entry["id"])
    bad["one event, several ids"] = [
        f"{k}: {sorted(v)}" for k, v in ids_by_event.items() if len(v) > 1
    ]
    got = {entry["id"] for entry in accepted}
    events = WebhookEvent.objects.filter(organization_id=organization_id).values_list(
        "id", "type", "call_id"
    )
    lost = [
        f"{type} {call_id} {event_id}" for event_id, type, call_id in events if event_id not in got
    ]
    bad["events lost"] = lost
    late = _call_reports(calls, accepted, started, bad)
    figures = {
        "events": len(events),
        "events_lost": len(lost),
        "deliveries_received": len(received),
        "answered_500": len(received) - len(accepted),
        "duplicates_received": len(accepted) - len(got),
        "reports_predating_late_lines": late,
    }
    return _listed(bad), figures


def main(work: Path, drain_seconds: float) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")
    import django

    django.setup()
    state = json.loads((work / "state.json").read_text())
    record = json.loads((work / "record.json").read_text())
    calls = [c for c in record["calls"] if c.get("call_id")]
    call_ids = [c["call_id"] for c in calls]
    drained = drain(state["organization_id"], call_ids, drain_seconds)
    time.sleep(2)  # the receiver's last lines
    livekit = json.loads((work / "livekit.json").read_text())
    gave_up = {event["room"] for event in livekit["given_up"]}
    received = [json.loads(line) for line in (work / "receiver.jsonl").read_text().splitlines()]
    violations, figures = _calls(calls, gave_up, record["started"])
    violations += _counters(state["organization_id"], set(call_ids))
    hooks, hook_figures = _webhooks(state["organization_id"], calls, received, record["started"])
    violations += hooks
    failed_creates = [c for c in record["calls"] if c.get("error")]
    if failed_creates:
        violations.append(
            f"creates that never succeeded ({len(failed_creates)}): {failed_creates[:3]}"
        )
    plans = Counter(c["plan"] for c in calls)
    figures.update(
        hook_figures, drain_seconds=round(drained, 1), calls=len(calls), plans=dict(plans)
    )
    figures["transcript_lines"] = sum(c.get("lines", 0) for c in calls)
    (work / "check.json").write_text(
        json.dumps({"violations": violations, "figures": figures}, indent=1)
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
