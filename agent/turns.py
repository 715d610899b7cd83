"""A turn's metrics sample, as the API takes it: latencies in milliseconds within its
bounds, and the provider and model that served each component."""

from __future__ import annotations

MAX_LATENCY_MS = 10 * 60 * 1000  # the API refuses more: a clock or unit bug


def latency_ms(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    value = round(seconds * 1000, 1)
    return value if 0 <= value <= MAX_LATENCY_MS else None


def served(metrics: dict, component: str, names: dict) -> dict | None:
    """`{provider, model}` from a turn's `*_metadata`, within the API's bounds, the
    provider named as the catalog names it (`ComponentCache.provider_names`)."""
    metadata = metrics.get(f"{component}_metadata")
    if not metadata or not metadata.get("model_provider") or not metadata.get("model_name"):
        return None
    provider = names.get((component, metadata["model_provider"]), metadata["model_provider"])
    return {"provider": provider[:50], "model": metadata["model_name"][:100]}


def user_turn_sample(metrics: dict, names: dict) -> dict:
    """What a user's turn measured, kept until the agent's reply completes the sample."""
    return {
        "stt_latency_ms": latency_ms(metrics.get("transcription_delay")),
        "eou_latency_ms": latency_ms(metrics.get("end_of_turn_delay")),
        "providers": {"stt": served(metrics, "stt", names)},
    }


def agent_turn_sample(user: dict | None, metrics: dict, names: dict) -> dict:
    """The whole turn: the user's part (if any) and the agent's reply."""
    user = user or {"providers": {}}
    return {
        **user,
        "llm_latency_ms": latency_ms(metrics.get("llm_node_ttft")),
        "tts_latency_ms": latency_ms(metrics.get("tts_node_ttfb")),
        "e2e_latency_ms": latency_ms(metrics.get("e2e_latency")),
        "providers": {
            **user["providers"],
            "llm": served(metrics, "llm", names),
            "tts": served(metrics, "tts", names),
        },
    }
