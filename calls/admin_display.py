"""How the staff console shows a call: its status badge, durations and latencies, and
the call page's transcript and metrics (calls.admin)."""

from __future__ import annotations

import json

from django.utils.html import format_html

from calls import selectors
from calls.models import Call, CallStatus

STATUS_COLORS = {
    CallStatus.PENDING: "#8a8a8a",
    CallStatus.CONNECTING: "#b58900",
    CallStatus.ACTIVE: "#2a9d3f",
    CallStatus.COMPLETED: "#417690",
    CallStatus.FAILED: "#c0392b",
    CallStatus.DISCONNECTED: "#d35400",
    CallStatus.TIMEOUT: "#7f5a83",
}


def status_badge(status: str) -> str:
    return format_html(
        '<span class="vc-status vc-status-{}" style="background:{};color:#fff;'
        'padding:2px 8px;border-radius:10px;font-size:11px">{}</span>',
        status,
        STATUS_COLORS.get(status, "#666"),
        status,
    )


def format_seconds(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    # A call of hours: "3:05:07", not "185:07".
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _ms(value: int | None) -> str:
    return "—" if value is None else f"{value} ms"


def call_page_context(call: Call) -> dict:
    """The call page's transcript (each line's time into the call), agent timeline,
    signals and metrics."""
    origin = call.started_at or call.created_at
    transcript = []
    for entry in selectors.call_transcript(call=call):
        offset = (entry["timestamp"] - origin).total_seconds()
        transcript.append(
            {
                **entry,
                "offset": ("-" if offset < 0 else "") + format_seconds(abs(offset)),
                "tool_call_json": (
                    json.dumps(entry["tool_call"].get("arguments"), indent=2)
                    if entry["tool_call"]
                    else None
                ),
            }
        )
    metrics = call.metrics()
    return {
        "call": call,
        "status_colors": {str(status): color for status, color in STATUS_COLORS.items()},
        "transcript": transcript,
        "agent_timeline": call.agent_history,
        "signals": selectors.call_signals(call=call),
        "metrics_rows": [
            ("duration", format_seconds(metrics["duration_seconds"])),
            ("STT latency (mean)", _ms(metrics["stt_latency_ms"])),
            ("LLM latency (mean)", _ms(metrics["llm_latency_ms"])),
            ("TTS latency (mean)", _ms(metrics["tts_latency_ms"])),
            ("end of utterance (mean)", _ms(metrics["eou_latency_ms"])),
            ("turn, end to end (mean)", _ms(metrics["e2e_latency_ms"])),
            ("tokens", metrics["total_tokens"]),
            ("agent handoffs", metrics["agent_handoffs"]),
        ],
    }
