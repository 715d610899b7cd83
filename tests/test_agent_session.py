from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import Call
from tests import sessions
from tests.factories import (
    CallFactory,
    ProviderKeyFactory,
    WorkflowFactory,
)
from tests.sessions import session_url
from tests.test_workflows_api import DEFAULT_SETTINGS
from workflows.demo import DEMO_DEFINITION
from workflows.models import Workflow
from workflows.services import workflow_delete, workflow_update

DEEPGRAM_KEY = "dg-secret-0001"
OPENAI_KEY = "sk-openai-secret-0002"

# The shared fixture (tests/sessions.py), bound here for pytest to find.
call = sessions.call


@pytest.fixture
def keys(organization: Organization) -> None:
    ProviderKeyFactory(
        organization=organization,
        provider_type="stt",
        provider_name="deepgram",
        api_key=DEEPGRAM_KEY,
        is_default=True,
    )
    ProviderKeyFactory(
        organization=organization,
        provider_type="llm",
        provider_name="openai",
        api_key=OPENAI_KEY,
    )


def test_it_returns_the_whole_session_to_an_agent_key(
    agent_api: APIClient, call: Call, keys: None
) -> None:
    response = agent_api.get(session_url(call))

    assert response.status_code == 200, response.json()
    assert "no-store" in response["Cache-Control"]
    stt = {
        "provider": "deepgram",
        "model": "nova-3",
        "voice": None,
        "api_key": DEEPGRAM_KEY,
        "missing_key": False,
        "fallbacks": [],
    }
    llm = {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "voice": None,
        "api_key": OPENAI_KEY,
        "missing_key": False,
        "fallbacks": [],
        "timeout_seconds": 5.0,
    }
    tts = {
        "provider": "cartesia",
        "model": "sonic-2",
        "voice": "f786b574-daa5-4673-aa0c-cbe3e8534c02",
        "api_key": None,
        "missing_key": True,
        "fallbacks": [],
    }
    save_meal = copy.deepcopy(DEMO_DEFINITION["agents"][1]["tools"][0])
    assert response.json() == {
        "call_id": str(call.id),
        "room_name": f"call-{call.id}",
        "status": "connecting",
        "started_at": None,
        "current_agent": None,
        "end_reason": None,
        "direction": "inbound",
        "channel": "web",
        "phone_number": None,
        "from_number": None,
        "user_id": call.user_id,
        "user_data": {"name": "Ada", "language": "fr"},
        "metadata": {"source": "app"},
        "conversation": [],
        "conversation_truncated": False,
        "tool_signing_secrets": [],
        "workflow": {
            "id": str(call.workflow_id),
            "slug": "daily-call",
            "version": 1,
            "start_agent": "greeter-agent",
            "settings": DEFAULT_SETTINGS,
            "agents": [
                {
                    "name": "greeter-agent",
                    "instructions": (
                        "You are a warm assistant making a daily check-in call to Ada. "
                        "Speak fr. Ask how they are, then hand off to the meal agent."
                    ),
                    "greeting": "Hello Ada! How are you today?",
                    "tools": [],
                    "handoffs": ["meal-agent"],
                    "stt": stt,
                    "llm": llm,
                    "tts": tts,
                },
                {
                    "name": "meal-agent",
                    "instructions": (
                        "Ask Ada what they ate today, one meal at a time, and record each "
                        "with save_meal. Then hand off to the feedback agent."
                    ),
                    "greeting": "",
                    "tools": [
                        {
                            **save_meal,
                            "type": "function",
                            "url": None,
                            "destinations": [],
                            "message": "",
                        }
                    ],
                    "handoffs": ["feedback-agent"],
                    "stt": stt,
                    "llm": llm,
                    "tts": tts,
                },
                {
                    "name": "feedback-agent",
                    "instructions": (
                        "Ask how the call went and whether anything could be better, thank "
                        "Ada and say goodbye."
                    ),
                    "greeting": "",
                    "tools": [],
                    "handoffs": [],
                    "stt": stt,
                    "llm": llm,
                    "tts": tts,
                },
            ],
        },
    }


def test_missing_user_values_render_their_defaults(
    agent_api: APIClient, organization: Organization, workflow: Workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow, user_data={})

    agents = agent_api.get(session_url(call)).json()["workflow"]["agents"]

    assert agents[0]["greeting"] == "Hello there! How are you today?"
    assert "call to the user. Speak en." in agents[0]["instructions"]


def test_an_organization_agent_key_reaches_its_own_calls(
    org_agent_api: APIClient, call: Call
) -> None:
    assert org_agent_api.get(session_url(call)).status_code == 200


def test_an_organization_agent_key_gets_404_for_another_organizations_call(
    org_agent_api: APIClient, outsider: Organization
) -> None:
    foreign = CallFactory(organization=outsider)

    response = org_agent_api.get(session_url(foreign))

    assert response.status_code == 404


def test_a_platform_agent_key_reaches_any_organizations_call(
    agent_api: APIClient, outsider: Organization
) -> None:
    foreign = CallFactory(organization=outsider)

    assert agent_api.get(session_url(foreign)).status_code == 200


def test_a_client_key_gets_403_and_no_key_401(
    api: APIClient, anonymous_api: APIClient, call: Call, keys: None
) -> None:
    response = api.get(session_url(call))
    assert response.status_code == 403
    assert DEEPGRAM_KEY not in response.content.decode()

    response = anonymous_api.get(session_url(call))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_unknown_call_is_404(agent_api: APIClient) -> None:
    assert (
        agent_api.get(
            "/api/v1/agent/calls/8b0d8c55-2b9f-4d8c-9a5e-6d9f1d2a1b3c/session"
        ).status_code
        == 404
    )
    assert agent_api.get("/api/v1/agent/calls/nope/session").status_code == 404


def test_the_default_key_wins_over_a_newer_key_for_the_same_provider(
    agent_api: APIClient, organization: Organization, call: Call, keys: None
) -> None:
    ProviderKeyFactory(
        organization=organization,
        provider_type="stt",
        provider_name="deepgram",
        api_key="dg-newer-but-not-default",
    )

    agents = agent_api.get(session_url(call)).json()["workflow"]["agents"]

    assert agents[0]["stt"]["api_key"] == DEEPGRAM_KEY


def test_a_key_of_another_type_or_organization_is_not_used(
    agent_api: APIClient, organization: Organization, outsider: Organization, call: Call
) -> None:
    ProviderKeyFactory(organization=organization, provider_type="tts", provider_name="deepgram")
    ProviderKeyFactory(organization=outsider, provider_type="stt", provider_name="deepgram")

    stt = agent_api.get(session_url(call)).json()["workflow"]["agents"][0]["stt"]

    assert (stt["api_key"], stt["missing_key"]) == (None, True)


def test_a_key_no_configured_cryptography_key_opens_is_missing_not_a_500(
    agent_api: APIClient, organization: Organization, call: Call, keys: None, settings, caplog
) -> None:
    """The worker took the 500 for a passing fault and retried for 12 s while the caller
    heard nothing; a missing key fails the call with its reason."""
    settings.CRYPTOGRAPHY_KEY = "another-key-than-they-were-written-with"
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    response = agent_api.get(session_url(call))

    assert response.status_code == 200
    stt = response.json()["workflow"]["agents"][0]["stt"]
    assert (stt["api_key"], stt["missing_key"]) == (None, True)
    assert "opens with no configured CRYPTOGRAPHY_KEY" in caplog.text


def test_a_call_made_before_an_edit_keeps_its_old_prompts(
    agent_api: APIClient, call: Call, workflow: Workflow
) -> None:
    definition = copy.deepcopy(workflow.current_version.definition)
    definition["agents"][0]["greeting"] = "Bonjour {{ user.name }}, version two."
    workflow_update(workflow=workflow, slug="daily-call", name="Daily", definition=definition)
    workflow.refresh_from_db()
    new_call = CallFactory(
        organization=call.organization,
        workflow=workflow,
        workflow_version=workflow.current_version,
        user_data={"name": "Bo"},
    )

    old = agent_api.get(session_url(call)).json()["workflow"]
    new = agent_api.get(session_url(new_call)).json()["workflow"]

    assert (old["version"], old["agents"][0]["greeting"]) == (1, "Hello Ada! How are you today?")
    assert (new["version"], new["agents"][0]["greeting"]) == (2, "Bonjour Bo, version two.")


def test_a_deleted_workflows_calls_keep_their_session(
    agent_api: APIClient, call: Call, workflow: Workflow
) -> None:
    workflow_delete(workflow=workflow)

    response = agent_api.get(session_url(call))

    assert response.status_code == 200
    assert response.json()["workflow"]["agents"][0]["greeting"] == "Hello Ada! How are you today?"


@pytest.mark.parametrize(
    "user_data",
    [
        {"name": "{{ 7*7 }}"},
        {"name": "{% for i in range(10) %}x{% endfor %}"},
        {"name": "x" * 200_000},
        {"name": {"first": {"deep": [1, {"a": None}]}}},
        {"name": ["a", "b"]},
        {"name": None},
        {"__class__": "x", "name": "{{ ''.__class__.__mro__ }}"},
    ],
)
def test_hostile_user_data_is_data_not_template(
    agent_api: APIClient, organization: Organization, workflow: Workflow, user_data: dict
) -> None:
    call = CallFactory(organization=organization, workflow=workflow, user_data=user_data)

    response = agent_api.get(session_url(call))

    assert response.status_code == 200
    greeting = response.json()["workflow"]["agents"][0]["greeting"]
    name = user_data["name"]
    if isinstance(name, str):
        # the value appears verbatim (bounded), never evaluated
        assert greeting.startswith(f"Hello {name[:100]}")
        assert "49" not in greeting
    assert len(greeting) <= 64 * 1024


def test_hostile_templates_render_empty_instead_of_failing(
    agent_api: APIClient, organization: Organization
) -> None:
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["agents"][0]["instructions"] = "{{ cycler.__init__.__globals__.os }}"
    definition["agents"][0]["greeting"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    hostile = WorkflowFactory(organization=organization, definition=definition)
    call = CallFactory(organization=organization, workflow=hostile)

    response = agent_api.get(session_url(call))

    assert response.status_code == 200
    agent = response.json()["workflow"]["agents"][0]
    assert (agent["instructions"], agent["greeting"]) == ("", "")


class _SessionTooSlow(BaseException):
    """Raised by the alarm; a BaseException, so nothing in the request path catches it."""


def test_the_prompts_of_one_session_share_a_deadline(
    agent_api: APIClient, organization: Organization
) -> None:
    """Twenty agents, each prompt stopped only by a render's own half-second deadline,
    held the worker answering the agent for 20 s (41 renders)."""
    import signal

    # A tuple nested 14 deep (the most a template may build) is 16,384 leaves hashed on
    # every lookup: a step the work budget counts as one, so each render runs to its
    # own deadline.
    slow = "{% set t0 = (1, 2) %}" + "".join(
        f"{{% set t{i} = (t{i - 1}, t{i - 1}) %}}" for i in range(1, 15)
    )
    slow += "{% set d = {} %}{% for i in range(19000) %}{{ d[t14] }}{% endfor %}"
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["agents"] = [
        {
            **copy.deepcopy(definition["agents"][2]),
            "name": f"agent-{i}",
            "instructions": slow,
            "greeting": slow,
        }
        for i in range(20)
    ]
    definition["start_agent"] = "agent-0"
    call = CallFactory(
        organization=organization,
        workflow=WorkflowFactory(organization=organization, definition=definition),
    )

    def too_slow(signum: int, frame: object) -> None:
        raise _SessionTooSlow()

    previous = signal.signal(signal.SIGALRM, too_slow)
    # MAX_SESSION_RENDER_SECONDS is 2; far above it for a loaded CI machine, and far
    # below the 20 s of forty renders at their own bound.
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        response = agent_api.get(session_url(call))
    except _SessionTooSlow:
        pytest.fail("the session was still rendering after 10 s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert response.status_code == 200
    agents = response.json()["workflow"]["agents"]
    assert {(a["instructions"], a["greeting"]) for a in agents} == {("", "")}


def test_query_count_does_not_grow_with_agents(
    agent_api: APIClient, organization: Organization, django_assert_num_queries: Any
) -> None:
    small = CallFactory(organization=organization)
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["agents"] = [
        {**copy.deepcopy(definition["agents"][2]), "name": f"agent-{i}"} for i in range(12)
    ]
    definition["start_agent"] = "agent-0"
    big = CallFactory(
        organization=organization,
        workflow=WorkflowFactory(organization=organization, definition=definition),
    )

    # key lookup + the call with its version and organization + one per distinct provider
    # + the conversation so far + the tool signing secrets
    with django_assert_num_queries(7):
        agent_api.get(session_url(small))
    with django_assert_num_queries(7):
        agent_api.get(session_url(big))


def test_plaintext_keys_appear_nowhere_but_the_session(
    api: APIClient, call: Call, workflow: Workflow, keys: None
) -> None:
    bodies = [
        api.get(f"/api/v1/workflows/{workflow.id}"),
        api.get("/api/v1/workflows"),
        api.get(f"/api/v1/workflows/{workflow.id}/versions"),
        api.patch(f"/api/v1/workflows/{workflow.id}", {"name": "x"}, format="json"),
        api.get(f"/api/v1/calls/{call.id}"),
    ]

    for response in bodies:
        assert response.status_code == 200
        text = json.dumps(response.json())
        assert DEEPGRAM_KEY not in text and OPENAI_KEY not in text
        assert "api_key" not in text


def test_each_fallback_gets_its_key_by_the_components_rule(
    agent_api: APIClient, organization: Organization, keys: None
) -> None:
    definition = copy.deepcopy(DEMO_DEFINITION)
    for agent in definition["agents"]:
        agent["llm"] = {
            **agent["llm"],
            "fallbacks": [
                {"provider": "anthropic", "model": "claude-haiku"},
                {"provider": "groq", "model": "llama"},
            ],
        }
    ProviderKeyFactory(
        organization=organization,
        provider_type="llm",
        provider_name="anthropic",
        api_key="sk-ant-older",
    )
    ProviderKeyFactory(
        organization=organization,
        provider_type="llm",
        provider_name="anthropic",
        api_key="sk-ant-newest",
    )
    workflow = WorkflowFactory(organization=organization, definition=definition)
    call = CallFactory(organization=organization, workflow=workflow)

    llm = agent_api.get(session_url(call)).json()["workflow"]["agents"][0]["llm"]

    assert (llm["provider"], llm["api_key"]) == ("openai", OPENAI_KEY)
    assert llm["fallbacks"] == [
        {
            "provider": "anthropic",
            "model": "claude-haiku",
            "voice": None,
            "api_key": "sk-ant-newest",
            "missing_key": False,
        },
        {
            "provider": "groq",
            "model": "llama",
            "voice": None,
            "api_key": None,
            "missing_key": True,
        },
    ]


def test_the_call_settings_reach_the_worker(
    agent_api: APIClient, organization: Organization
) -> None:
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["settings"] = {"language": "fr", "silence_timeout_seconds": 20}
    workflow = WorkflowFactory(organization=organization, definition=definition)
    call = CallFactory(organization=organization, workflow=workflow)

    settings = agent_api.get(session_url(call)).json()["workflow"]["settings"]

    assert settings == {**DEFAULT_SETTINGS, "language": "fr", "silence_timeout_seconds": 20}


def test_each_agents_llm_timeout_reaches_the_worker(
    agent_api: APIClient, organization: Organization
) -> None:
    """The worker gives each attempt of the model this long: a version saved before the
    setting (or an agent without it) gets the 5 s every model had."""
    definition = copy.deepcopy(DEMO_DEFINITION)
    definition["agents"][1]["llm"] = {**definition["agents"][1]["llm"], "timeout_seconds": 30}
    workflow = WorkflowFactory(organization=organization, definition=definition)
    call = CallFactory(organization=organization, workflow=workflow)

    agents = agent_api.get(session_url(call)).json()["workflow"]["agents"]

    assert [agent["llm"]["timeout_seconds"] for agent in agents] == [5.0, 30.0, 5.0]
    assert all("timeout_seconds" not in agent["stt"] for agent in agents)


@pytest.mark.parametrize("status", ["completed", "failed", "disconnected", "timeout"])
def test_an_ended_call_is_409_call_ended_without_keys(
    agent_api: APIClient, call: Call, keys: None, status: str
) -> None:
    Call.objects.filter(pk=call.pk).update(status=status)

    response = agent_api.get(session_url(call))

    assert response.status_code == 409
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "call_ended",
                "detail": "The call has ended: its session (and its provider keys) is gone.",
                "attr": None,
            }
        ],
    }
    assert DEEPGRAM_KEY not in response.content.decode()
    assert OPENAI_KEY not in response.content.decode()


def test_every_session_read_is_logged_with_who_and_whose_call_but_no_key(
    agent_api: APIClient,
    agent_key: str,
    organization: Organization,
    call: Call,
    keys: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="calls.agent_session"):
        agent_api.get(session_url(call))
        Call.objects.filter(pk=call.pk).update(status="completed")
        agent_api.get(session_url(call))

    reads = [r.getMessage() for r in caplog.records if r.name == "calls.agent_session"]
    prefix = agent_key.split(".")[0]
    assert reads == [
        f"agent session read: agent key {prefix}, organization {organization.slug}, "
        f"call {call.id}, status connecting",
        f"agent session read: agent key {prefix}, organization {organization.slug}, "
        f"call {call.id}, status completed",
    ]
    assert all(r.levelname == "INFO" for r in caplog.records if r.name == "calls.agent_session")
    logged = caplog.text
    assert DEEPGRAM_KEY not in logged and OPENAI_KEY not in logged


def test_a_phone_calls_session_says_it_is_a_phone_call_and_whom_it_dials(
    agent_api: APIClient, organization: Organization, workflow: Workflow
) -> None:
    call = CallFactory(
        organization=organization,
        workflow=workflow,
        channel="phone",
        direction="outbound",
        phone_number="+14155550123",
        from_number="+14155550100",
    )

    body = agent_api.get(session_url(call)).json()

    assert (body["channel"], body["direction"]) == ("phone", "outbound")
    assert (body["phone_number"], body["from_number"]) == ("+14155550123", "+14155550100")
    assert body["workflow"]["settings"]["ring_timeout_seconds"] == 30
