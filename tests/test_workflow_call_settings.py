"""A workflow's call behaviour: language, turn-taking, silence, the error message, and
provider fallbacks per component, as the workflows API takes and validates them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.test_workflows_api import DEFAULT_SETTINGS, body, errors
from workflows.models import Workflow


def with_fallbacks(component: str, fallbacks: list, agent: int = 0) -> dict:
    data = body()
    data["agents"][agent][component]["fallbacks"] = fallbacks
    return data


def with_voice(agent: dict, **components: dict) -> dict:
    agent = copy.deepcopy(agent)
    for name, config in components.items():
        agent[name] = config
    return agent


def test_call_settings_are_stored_and_returned(api: APIClient) -> None:
    settings = {
        "language": "es",
        "error_message": "Lo siento, algo salió mal.",
        "allow_interruptions": False,
        "min_endpointing_delay": 0.2,
        "max_endpointing_delay": 1.5,
        "false_interruption_timeout": None,
        "resume_false_interruption": False,
        "silence_timeout_seconds": 20,
    }

    response = api.post("/api/v1/workflows", body(settings=settings), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["settings"] == {**DEFAULT_SETTINGS, **settings}
    assert Workflow.objects.get().current_version.settings["language"] == "es"


def test_a_version_saved_before_the_call_settings_reads_back_with_their_defaults(
    api: APIClient, workflow: Workflow
) -> None:
    version = workflow.current_version
    version.definition["settings"] = {"connect_timeout_seconds": 30}
    for agent in version.definition["agents"]:
        for component in ("stt", "llm", "tts"):
            agent[component].pop("fallbacks", None)
    version.save()

    response = api.get(f"/api/v1/workflows/{workflow.id}")

    assert response.json()["settings"] == {**DEFAULT_SETTINGS, "connect_timeout_seconds": 30}
    assert {a["llm"]["fallbacks"] == [] for a in response.json()["agents"]} == {True}


def test_fallbacks_are_kept_in_order_with_their_defaults(api: APIClient) -> None:
    data = with_fallbacks(
        "llm",
        [{"provider": "anthropic", "model": "claude-haiku"}, {"provider": "groq", "model": "x"}],
    )

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["agents"][0]["llm"]["fallbacks"] == [
        {"provider": "anthropic", "model": "claude-haiku", "voice": None},
        {"provider": "groq", "model": "x", "voice": None},
    ]


def test_a_patch_of_one_setting_keeps_the_others(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(settings={"language": "fr"}), format="json").json()

    response = api.patch(
        f"/api/v1/workflows/{created['id']}",
        {"settings": {"silence_timeout_seconds": 30}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["settings"]["language"] == "fr"
    assert response.json()["settings"]["silence_timeout_seconds"] == 30


STT_FALLBACK = {"provider": "openai", "model": "gpt-4o-mini-transcribe"}


@pytest.mark.parametrize(
    ("data", "attr", "code"),
    [
        (body(settings={"language": "English"}), "settings.language", "invalid"),
        (body(settings={"language": "e"}), "settings.language", "invalid"),
        (body(settings={"language": 7}), "settings.language", "invalid"),
        (body(settings={"error_message": "x" * 501}), "settings.error_message", "max_length"),
        (body(settings={"allow_interruptions": "no"}), "settings.allow_interruptions", "invalid"),
        (
            body(settings={"min_endpointing_delay": -0.1}),
            "settings.min_endpointing_delay",
            "min_value",
        ),
        (
            body(settings={"min_endpointing_delay": 5.5}),
            "settings.min_endpointing_delay",
            "max_value",
        ),
        (
            body(settings={"max_endpointing_delay": 0.4}),
            "settings.max_endpointing_delay",
            "min_value",
        ),
        (
            body(settings={"max_endpointing_delay": 31}),
            "settings.max_endpointing_delay",
            "max_value",
        ),
        (
            body(settings={"min_endpointing_delay": 2.0, "max_endpointing_delay": 1.0}),
            "settings.min_endpointing_delay",
            "min_over_max",
        ),
        (
            body(settings={"false_interruption_timeout": 0.1}),
            "settings.false_interruption_timeout",
            "min_value",
        ),
        (
            body(settings={"false_interruption_timeout": 11}),
            "settings.false_interruption_timeout",
            "max_value",
        ),
        (
            body(settings={"resume_false_interruption": 1}),
            "settings.resume_false_interruption",
            "invalid",
        ),
        (
            body(settings={"silence_timeout_seconds": 4}),
            "settings.silence_timeout_seconds",
            "min_value",
        ),
        (
            body(settings={"silence_timeout_seconds": 601}),
            "settings.silence_timeout_seconds",
            "max_value",
        ),
        (
            body(settings={"silence_timeout_seconds": 5.5}),
            "settings.silence_timeout_seconds",
            "invalid",
        ),
        # fallbacks
        (with_fallbacks("llm", {"provider": "groq"}), "agents.0.llm.fallbacks", "not_a_list"),
        (with_fallbacks("stt", [STT_FALLBACK] * 4), "agents.0.stt.fallbacks", "max_length"),
        (
            with_fallbacks("stt", [{"provider": "cartesia", "model": "x"}]),
            "agents.0.stt.fallbacks.0.provider",
            "invalid_choice",
        ),
        (
            with_fallbacks("tts", [{"provider": "openai"}]),
            "agents.0.tts.fallbacks.0.model",
            "required",
        ),
        (
            with_fallbacks("stt", [{"provider": "deepgram", "model": "nova-3"}]),
            "agents.0.stt.fallbacks.0",
            "duplicate",
        ),
        (
            with_fallbacks("stt", [STT_FALLBACK, STT_FALLBACK]),
            "agents.0.stt.fallbacks.1",
            "duplicate",
        ),
    ],
)
def test_invalid_call_settings_are_400_naming_the_field(
    api: APIClient, data: dict, attr: str, code: str
) -> None:
    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400, response.json()
    assert (attr, code) in errors(response), errors(response)
    assert Workflow.objects.count() == 0


@pytest.mark.parametrize(
    ("language", "components", "message"),
    [
        # Deepgram STT and Cartesia TTS state their languages in their plugins.
        ("xh", {}, "Deepgram speech-to-text does not support language 'xh'."),
        (
            "sw-KE",
            {"stt": {"provider": "openai", "model": "whisper-1"}},
            "Cartesia text-to-speech does not support language 'sw-KE'.",
        ),
        (
            "de",
            {
                "stt": {"provider": "openai", "model": "whisper-1"},
                "tts": {"provider": "deepgram", "model": "aura-2-thalia-en"},
            },
            "Deepgram voice 'aura-2-thalia-en' speaks 'en', not 'de'.",
        ),
        (
            "multi",
            {},
            "'multi' is for Deepgram speech-to-text only, not tts cartesia.",
        ),
    ],
)
def test_a_language_a_provider_does_not_support_is_refused(
    api: APIClient, language: str, components: dict, message: str
) -> None:
    data = body(settings={"language": language})
    data["agents"][1] = with_voice(data["agents"][1], **components)

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400, response.json()
    assert {"code": "unsupported_language", "detail": message, "attr": "settings.language"} in (
        response.json()["errors"]
    )


def test_a_fallback_that_does_not_speak_the_language_is_refused_too(api: APIClient) -> None:
    data = with_fallbacks("tts", [{"provider": "deepgram", "model": "aura-2-thalia-en"}])
    data["settings"] = {"language": "fr"}

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert errors(response) == [("settings.language", "unsupported_language")]


@pytest.mark.parametrize(
    ("language", "components"),
    [
        ("es-MX", {"stt": {"provider": "openai", "model": "whisper-1"}}),
        ("fr-CA", {}),
        ("en", {"tts": {"provider": "deepgram", "model": "aura-2-thalia-en"}}),
        (
            "sw",
            {
                "stt": {"provider": "speechmatics", "model": "x"},
                "tts": {"provider": "openai", "model": "tts-1"},
            },
        ),
    ],
)
def test_languages_the_providers_state_they_support_are_accepted(
    api: APIClient, language: str, components: dict[str, Any]
) -> None:
    data = body(settings={"language": language})
    for index in (0, 1):
        data["agents"][index] = with_voice(data["agents"][index], **components)

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 201, response.json()


# --- the model's wait: llm.timeout_seconds -----------------------------------------


def with_llm_timeout(value: object, agent: int = 0) -> dict:
    data = body()
    data["agents"][agent]["llm"]["timeout_seconds"] = value
    return data


def test_an_llm_timeout_is_stored_and_returned(api: APIClient) -> None:
    """A model that thinks before its first token (o-series, Gemini 2.5 on a long
    prompt) needs more than the 5 s an attempt every model used to get."""
    response = api.post("/api/v1/workflows", with_llm_timeout(45), format="json")

    assert response.status_code == 201, response.json()
    agents = response.json()["agents"]
    assert [agent["llm"]["timeout_seconds"] for agent in agents] == [45.0, 5.0]
    stored = Workflow.objects.get().current_version.definition["agents"]
    assert stored[0]["llm"]["timeout_seconds"] == 45


def test_a_version_saved_before_the_llm_timeout_reads_back_with_five_seconds(
    api: APIClient, workflow: Workflow
) -> None:
    version = workflow.current_version
    for agent in version.definition["agents"]:
        agent["llm"].pop("timeout_seconds", None)
    version.save()

    response = api.get(f"/api/v1/workflows/{workflow.id}")

    assert {a["llm"]["timeout_seconds"] for a in response.json()["agents"]} == {5.0}


@pytest.mark.parametrize(
    ("value", "code"),
    [(0.5, "min_value"), (121, "max_value"), ("30", "invalid"), (True, "invalid"), (None, "null")],
)
def test_an_llm_timeout_out_of_bounds_or_not_a_number_is_400(
    api: APIClient, value: object, code: str
) -> None:
    response = api.post("/api/v1/workflows", with_llm_timeout(value, agent=1), format="json")

    assert response.status_code == 400, response.json()
    assert errors(response) == [("agents.1.llm.timeout_seconds", code)]
    assert Workflow.objects.count() == 0
