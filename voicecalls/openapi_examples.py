"""Examples for openapi.yaml, taken from the seed API document (shared/seed), so the
schema, Swagger UI and the generated SDKs' docs show what the contract shows.

The seed writes ids as "uuid"; real uuids stand in for them here. Fields the API adds to
the seed's (sequence, end_reason, room_name, ...) are filled in to match.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

CALL_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
WORKFLOW_ID = "3f2b8c1e-5a4d-4e8f-9b6a-2c1d0e9f8a7b"
ACTIVE_CALL_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
PROVIDER_KEY_ID = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"

SEED_METRICS = {
    "duration_seconds": 180,
    "stt_latency_ms": 120,
    "llm_latency_ms": 280,
    "tts_latency_ms": 85,
    "total_tokens": 1500,
    "agent_handoffs": 2,
    # Added to the seed's fields: the turn latencies' means, percentiles over the
    # reported samples, and who served the turns.
    "eou_latency_ms": 512,
    "e2e_latency_ms": 714,
    "latency": {
        "stt": {"p50": 119, "p95": 124, "max": 124, "count": 3},
        "llm": {"p50": 274, "p95": 301, "max": 301, "count": 3},
        "tts": {"p50": 85, "p95": 88, "max": 88, "count": 3},
        "e2e": {"p50": 701, "p95": 742, "max": 742, "count": 3},
        "eou": {"p50": 505, "p95": 531, "max": 531, "count": 3},
    },
    "providers": [
        {"component": "stt", "provider": "deepgram", "model": "nova-3", "turns": 3},
        {"component": "llm", "provider": "openai", "model": "gpt-4.1-mini", "turns": 2},
        {"component": "llm", "provider": "anthropic", "model": "claude-haiku-4-5", "turns": 1},
        {"component": "tts", "provider": "cartesia", "model": "sonic-2", "turns": 3},
    ],
}

CALL_CREATE = OpenApiExample(
    "Daily call",
    summary="Start the daily-call workflow for a user",
    value={
        "workflow_slug": "daily-call",
        "user_id": "user-123",
        "user_data": {"name": "John Doe", "language": "en"},
        "metadata": {"session_id": "abc123", "source": "mobile-app"},
    },
    request_only=True,
)

CALL_JOIN = OpenApiExample(
    "Connecting",
    summary="What the app needs to join the LiveKit room",
    value={
        "call_id": CALL_ID,
        "room_name": f"call-{CALL_ID}",
        "livekit_url": "wss://livekit.example.com",
        "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
        "status": "connecting",
        "channel": "web",
    },
    response_only=True,
)

CALL_ANALYSIS_VALUE = {
    "status": "completed",
    "summary": "John logged oatmeal for breakfast and said he felt fine.",
    "structured_data": {"meal_type": "breakfast", "calories": 350},
    "success": True,
    "error": None,
    "model": "gpt-4.1-mini",
}


def _cost_line(
    component: str, provider: str, model: str, *numbers: str, phase: str = "call"
) -> dict:
    quantity, unit, unit_price, amount = numbers
    return {
        "component": component,
        "provider": provider,
        "model": model,
        "quantity": quantity,
        "unit": unit,
        "unit_price_usd": unit_price,
        "amount_usd": amount,
        "phase": phase,
    }


CALL_COST_VALUE = {
    "total_usd": "0.096352",
    "breakdown": [
        _cost_line("stt", "deepgram", "nova-3", "2.92", "minute", "0.0077", "0.022484"),
        _cost_line(
            "llm_prompt", "openai", "gpt-4.1-mini", "4200", "token", "0.0000004", "0.001680"
        ),
        _cost_line(
            "llm_cached", "openai", "gpt-4.1-mini", "1200", "token", "0.0000001", "0.000120"
        ),
        _cost_line(
            "llm_completion", "openai", "gpt-4.1-mini", "410", "token", "0.0000016", "0.000656"
        ),
        _cost_line("tts", "cartesia", "sonic-2", "2300", "character", "0.00003", "0.069000"),
        _cost_line("room", "livekit", "room", "3", "minute", "0.0005", "0.001500"),
        _cost_line(
            "llm_prompt",
            "openai",
            "gpt-4.1-mini",
            *("1800", "token", "0.0000004", "0.000720"),
            phase="analysis",
        ),
        _cost_line(
            "llm_completion",
            "openai",
            "gpt-4.1-mini",
            *("120", "token", "0.0000016", "0.000192"),
            phase="analysis",
        ),
    ],
    "complete": True,
}

CALL = OpenApiExample(
    "Completed call",
    value={
        "id": CALL_ID,
        "workflow_id": WORKFLOW_ID,
        "workflow_slug": "daily-call",
        "user_id": "user-123",
        "status": "completed",
        "channel": "web",
        "direction": "outbound",
        "phone_number": None,
        "from_number": None,
        "sip_status": None,
        "sip_status_code": None,
        "end_reason_detail": None,
        "transfer_destination": None,
        "agent_joined_at": "2026-01-17T10:30:01Z",
        "agent_left_at": None,
        "duration_seconds": 180,
        "agent_history": ["greeter-agent", "meal-agent", "feedback-agent"],
        "current_agent": None,
        "end_reason": "user_hangup",
        "metrics": SEED_METRICS,
        "room_name": f"call-{CALL_ID}",
        "metadata": {"session_id": "abc123", "source": "mobile-app"},
        "user_data": {"name": "John Doe", "language": "en"},
        "analysis": CALL_ANALYSIS_VALUE,
        "cost": CALL_COST_VALUE,
        "recording": {"status": "complete", "duration_seconds": 178, "size_bytes": 1432104},
        "started_at": "2026-01-17T10:30:00Z",
        "ended_at": "2026-01-17T10:33:00Z",
        "created_at": "2026-01-17T10:29:55Z",
    },
    response_only=True,
)

CALL_METRICS = OpenApiExample("Completed call", value=SEED_METRICS, response_only=True)

# One element: drf-spectacular wraps it in the list (and the page) itself.
TRANSCRIPT_ENTRY = OpenApiExample(
    "Transcript line with a tool call",
    value={
        "role": "assistant",
        "content": "Great! What did you have for breakfast?",
        "timestamp": "2026-01-17T10:30:15Z",
        "agent_name": "meal-agent",
        "sequence": 4,
        "tool_call": {"name": "save_meal", "arguments": {"meal_type": "breakfast"}},
    },
    response_only=True,
)

CALL_SUMMARY = OpenApiExample(
    "Completed call",
    value={
        "id": CALL_ID,
        "workflow_id": WORKFLOW_ID,
        "workflow_slug": "daily-call",
        "user_id": "user-123",
        "status": "completed",
        "channel": "web",
        "direction": "outbound",
        "duration_seconds": 180,
        "agent_history": ["greeter-agent", "meal-agent"],
        "current_agent": None,
        "end_reason": "user_hangup",
        "started_at": "2026-01-17T10:30:00Z",
        "ended_at": "2026-01-17T10:33:00Z",
        "created_at": "2026-01-17T10:29:55Z",
    },
    response_only=True,
)

ACTIVE_CALL = OpenApiExample(
    "Active call",
    value={
        "id": ACTIVE_CALL_ID,
        "workflow_id": WORKFLOW_ID,
        "workflow_slug": "daily-call",
        "user_id": "user-456",
        "status": "active",
        "channel": "web",
        "direction": "inbound",
        "current_agent": "meal-agent",
        "started_at": "2026-01-17T10:35:00Z",
        "created_at": "2026-01-17T10:34:57Z",
    },
    response_only=True,
)

PROVIDER_KEY = {
    "id": PROVIDER_KEY_ID,
    "provider_type": "stt",
    "provider_name": "deepgram",
    "is_default": True,
    "created_at": "2026-01-17T10:30:00Z",
    "masked_key": "••••xxxx",
}

# No request example for creating a key: the schema carries no api_key value, not even a
# placeholder (tests/test_provider_keys_api.py).
PROVIDER_KEY_CREATED = OpenApiExample("Deepgram", value=PROVIDER_KEY, response_only=True)

PROVIDER_KEY_LIST = OpenApiExample("One key", value={"items": [PROVIDER_KEY]}, response_only=True)
