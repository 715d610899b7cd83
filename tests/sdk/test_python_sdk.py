"""The generated Python client (sdk/python) against the live server."""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.sdk.conftest import ROOT, SDK, LiveServer
from voicecalls.errors import ServiceUnavailable

sys.path.insert(0, str(SDK / "python"))

from voicecalls_client import AuthenticatedClient, Client
from voicecalls_client.api.calls import (
    calls_active,
    calls_analysis_rerun,
    calls_analysis_retrieve,
    calls_create,
    calls_end,
    calls_list,
    calls_metrics,
    calls_retrieve,
    calls_token,
    calls_transcript,
)
from voicecalls_client.api.prices import prices_list, prices_overrides_destroy, prices_overrides_set
from voicecalls_client.api.provider_keys import (
    provider_keys_create,
    provider_keys_destroy,
    provider_keys_list,
)
from voicecalls_client.api.tool_signing_secret import (
    tool_signing_secret_destroy,
    tool_signing_secret_retrieve,
    tool_signing_secret_rotate,
)
from voicecalls_client.api.usage import usage_daily
from voicecalls_client.api.webhook_endpoints import (
    webhook_endpoints_create,
    webhook_endpoints_destroy,
    webhook_endpoints_list,
    webhook_endpoints_replay_delivery,
    webhook_endpoints_test,
)
from voicecalls_client.api.workflows import workflows_list
from voicecalls_client.models import (
    ActiveCall,
    Call,
    CallCost,
    CallCreateRequest,
    CallCreateRequestMetadata,
    CallCreateRequestUserData,
    CallDirectionEnum,
    CallJoin,
    CallMetrics,
    CallStatusEnum,
    CostComponentEnum,
    CostPhaseEnum,
    ErrorResponse,
    OriginEnum,
    PaginatedCallSummaryList,
    PaginatedWebhookEndpointList,
    PaginatedWorkflowList,
    Price,
    PriceOverride,
    PriceOverrideRequest,
    ProviderKey,
    ProviderKeyCreateRequest,
    ProviderKeyList,
    ProviderNameEnum,
    ProviderTypeEnum,
    ToolSigningSecret,
    ToolSigningSecretWithSecret,
    TranscriptEntry,
    TranscriptRoleEnum,
    UnitEnum,
    UsageDaily,
    WebhookDelivery,
    WebhookEndpointWithSecret,
    WebhookEndpointWriteRequest,
    WebhookEventTypeEnum,
    WebhookSentEventTypeEnum,
)
from voicecalls_client.types import UNSET

ORG = "sdk-python"


@pytest.fixture(scope="module")
def client(api_server: LiveServer) -> Iterator[AuthenticatedClient]:
    with AuthenticatedClient(base_url=api_server.url, token=api_server.client_key(ORG)) as c:
        yield c


def _create_call(client: AuthenticatedClient, user_id: str) -> CallJoin:
    joined = calls_create.sync(
        client=client,
        body=CallCreateRequest(
            workflow_slug="daily-call",
            user_id=user_id,
            user_data=CallCreateRequestUserData.from_dict({"name": "John Doe", "language": "en"}),
            metadata=CallCreateRequestMetadata.from_dict(
                {"session_id": "abc123", "source": "mobile-app"}
            ),
            direction=CallDirectionEnum.OUTBOUND,
        ),
    )
    assert isinstance(joined, CallJoin), joined
    return joined


def test_provider_keys_are_created_listed_masked_and_deleted(client: AuthenticatedClient) -> None:
    created = provider_keys_create.sync(
        client=client,
        body=ProviderKeyCreateRequest(
            provider_type=ProviderTypeEnum.STT,
            provider_name=ProviderNameEnum.DEEPGRAM,
            api_key="dg_sdk_test_5678",
            is_default=True,
        ),
    )
    assert isinstance(created, ProviderKey), created
    assert (created.provider_type, created.provider_name) == (ProviderTypeEnum.STT, "deepgram")
    assert created.is_default is True
    assert created.masked_key == "••••5678"

    listed = provider_keys_list.sync(client=client)
    assert isinstance(listed, ProviderKeyList)
    assert [(k.id, k.masked_key) for k in listed.items] == [(created.id, "••••5678")]

    deleted = provider_keys_destroy.sync_detailed(created.id, client=client)
    assert deleted.status_code == 204
    again = provider_keys_destroy.sync_detailed(created.id, client=client)
    assert again.status_code == 404
    listed = provider_keys_list.sync(client=client)
    assert isinstance(listed, ProviderKeyList) and listed.items == []


def test_a_call_is_created_driven_and_read_back(
    client: AuthenticatedClient, api_server: LiveServer
) -> None:
    joined = _create_call(client, "user-123")
    assert joined.status == CallStatusEnum.CONNECTING
    assert joined.room_name == f"call-{joined.call_id}"
    assert joined.livekit_url == api_server.env["LIVEKIT_URL"]
    assert joined.token.startswith("eyJ")

    active = calls_active.sync(client=client)
    assert isinstance(active, list)
    assert [(c.id, c.status, c.user_id) for c in active] == [
        (joined.call_id, CallStatusEnum.CONNECTING, "user-123")
    ]
    assert isinstance(active[0], ActiveCall) and active[0].current_agent is None

    fresh = calls_token.sync(joined.call_id, client=client)
    assert isinstance(fresh, CallJoin)
    assert (fresh.call_id, fresh.room_name) == (joined.call_id, joined.room_name)

    api_server.simulate_call(ORG, str(joined.call_id))

    call = calls_retrieve.sync(joined.call_id, client=client)
    assert isinstance(call, Call), call
    assert call.id == joined.call_id
    assert (call.workflow_slug, call.user_id) == ("daily-call", "user-123")
    assert (call.status, call.direction) == (CallStatusEnum.COMPLETED, CallDirectionEnum.OUTBOUND)
    assert call.agent_history == ["greeter-agent", "meal-agent", "feedback-agent"]
    assert call.current_agent is None
    assert call.user_data.to_dict() == {"name": "John Doe", "language": "en"}
    assert call.metadata.to_dict() == {"session_id": "abc123", "source": "mobile-app"}
    assert isinstance(call.started_at, dt.datetime) and isinstance(call.ended_at, dt.datetime)
    assert call.started_at <= call.ended_at
    assert call.duration_seconds == int((call.ended_at - call.started_at).total_seconds())
    # simulate_call reports three agents' latencies and tokens: means and the sum.
    seed_metrics = {
        "stt_latency_ms": 120,
        "llm_latency_ms": 280,
        "tts_latency_ms": 85,
        "total_tokens": 1500,
        "agent_handoffs": 2,
    }
    assert {k: call.metrics.to_dict()[k] for k in seed_metrics} == seed_metrics

    # The demo workflow asks for no post-call analysis: null, and its path says so.
    assert call.analysis is None
    assert calls_analysis_retrieve.sync_detailed(joined.call_id, client=client).status_code == 404
    rerun = calls_analysis_rerun.sync_detailed(joined.call_id, client=client)
    assert rerun.status_code == 409
    assert isinstance(rerun.parsed, ErrorResponse)
    assert rerun.parsed.errors[0].code == "analysis_not_configured"

    # simulate_call reports the demo providers' usage: the call is priced line by line.
    assert isinstance(call.cost, CallCost) and call.cost.complete is True
    assert [line.component.value for line in call.cost.breakdown][:2] == ["stt", "llm_prompt"]
    assert call.cost.breakdown[0].unit == UnitEnum.MINUTE
    assert {line.phase for line in call.cost.breakdown} == {CostPhaseEnum.CALL}  # no analysis
    assert float(call.cost.total_usd) > 0

    metrics = calls_metrics.sync(joined.call_id, client=client)
    assert isinstance(metrics, CallMetrics)
    assert metrics.to_dict() == call.metrics.to_dict()

    transcript = calls_transcript.sync(joined.call_id, client=client)
    assert isinstance(transcript, list) and all(isinstance(e, TranscriptEntry) for e in transcript)
    assert (transcript[0].role, transcript[0].content, transcript[0].agent_name) == (
        TranscriptRoleEnum.SYSTEM,
        "Call started",
        "greeter-agent",
    )
    assert [e.agent_name for e in transcript][-1] == "feedback-agent"
    with_tools = [e for e in transcript if e.tool_call is not UNSET]
    assert len(with_tools) == 1
    assert with_tools[0].tool_call.name == "save_meal"
    assert with_tools[0].tool_call.arguments.to_dict()["meal_type"] == "breakfast"
    assert [e.sequence for e in transcript] == sorted(e.sequence for e in transcript)

    assert calls_active.sync(client=client) == []
    assert calls_token.sync_detailed(joined.call_id, client=client).status_code == 409


def test_usage_per_day_and_prices_are_typed(client: AuthenticatedClient) -> None:
    today = dt.datetime.now(dt.UTC).date()
    daily = usage_daily.sync(client=client, from_=today - dt.timedelta(days=1), to=today)
    assert isinstance(daily, UsageDaily)
    assert [day.date for day in daily.days] == [today - dt.timedelta(days=1), today]
    assert daily.total.calls == sum(day.calls for day in daily.days)

    override = prices_overrides_set.sync(
        client=client,
        body=PriceOverrideRequest(
            component=CostComponentEnum.TTS,
            provider="cartesia",
            model="*",
            unit_price_usd="0.00002",
        ),
    )
    assert isinstance(override, PriceOverride) and override.unit == "character"
    table = prices_list.sync(client=client)
    assert all(isinstance(price, Price) for price in table)
    mine = [p for p in table if p.origin == OriginEnum.ORGANIZATION]
    assert [(p.component, p.provider, p.model) for p in mine] == [
        (CostComponentEnum.TTS, "cartesia", "*")
    ]
    assert prices_overrides_destroy.sync_detailed(override.id, client=client).status_code == 204


def test_the_demo_workflow_is_listed(client: AuthenticatedClient) -> None:
    page = workflows_list.sync(client=client)
    assert isinstance(page, PaginatedWorkflowList), page
    assert [(w.slug, w.start_agent) for w in page.items] == [("daily-call", "greeter-agent")]
    assert [a.name for a in page.items[0].agents] == [
        "greeter-agent",
        "meal-agent",
        "feedback-agent",
    ]


def test_a_webhook_endpoint_shows_its_secret_once(client: AuthenticatedClient) -> None:
    created = webhook_endpoints_create.sync(
        client=client,
        body=WebhookEndpointWriteRequest(
            url="http://127.0.0.1:9/voicecalls", events=[WebhookEventTypeEnum.CALL_ENDED]
        ),
    )
    assert isinstance(created, WebhookEndpointWithSecret), created
    assert created.secret.startswith("whsec_")
    assert (created.events, created.enabled) == ([WebhookEventTypeEnum.CALL_ENDED], True)

    page = webhook_endpoints_list.sync(client=client)
    assert isinstance(page, PaginatedWebhookEndpointList)
    assert [(e.id, e.url) for e in page.items] == [(created.id, "http://127.0.0.1:9/voicecalls")]
    assert "secret" not in page.items[0].to_dict()

    assert webhook_endpoints_destroy.sync_detailed(created.id, client=client).status_code == 204


def test_the_tool_signing_secret_is_shown_once_on_creation_and_rotation(
    client: AuthenticatedClient,
) -> None:
    first = tool_signing_secret_rotate.sync_detailed(client=client)
    second = tool_signing_secret_rotate.sync_detailed(client=client)

    assert (first.status_code, second.status_code) == (201, 200)
    assert isinstance(first.parsed, ToolSigningSecretWithSecret), first.parsed
    assert isinstance(second.parsed, ToolSigningSecretWithSecret), second.parsed
    assert first.parsed.secret.startswith("whsec_")
    assert second.parsed.secret != first.parsed.secret
    assert isinstance(second.parsed.previous_secret_expires_at, dt.datetime)
    shown = tool_signing_secret_retrieve.sync(client=client)
    assert isinstance(shown, ToolSigningSecret) and shown.exists is True
    assert "secret" not in shown.to_dict()

    assert tool_signing_secret_destroy.sync_detailed(client=client).status_code == 204
    assert tool_signing_secret_retrieve.sync(client=client).exists is False
    assert tool_signing_secret_destroy.sync_detailed(client=client).status_code == 404


def test_a_test_event_is_queued_and_its_pending_delivery_not_replayed(
    client: AuthenticatedClient,
) -> None:
    created = webhook_endpoints_create.sync(
        client=client,
        body=WebhookEndpointWriteRequest(
            url="http://127.0.0.1:9/voicecalls", events=[WebhookEventTypeEnum.CALL_ENDED]
        ),
    )
    assert isinstance(created, WebhookEndpointWithSecret), created

    delivery = webhook_endpoints_test.sync(created.id, client=client)
    assert isinstance(delivery, WebhookDelivery), delivery
    assert delivery.event_type == WebhookSentEventTypeEnum.WEBHOOK_TEST
    assert (delivery.call_id, delivery.attempts) == (None, [])

    # Nothing answers on port 9: it stays pending (retried), and is not replayed yet.
    refused = webhook_endpoints_replay_delivery.sync(created.id, delivery.id, client=client)
    assert isinstance(refused, ErrorResponse), refused
    assert refused.errors[0].code == "delivery_pending"

    assert webhook_endpoints_destroy.sync_detailed(created.id, client=client).status_code == 204


def test_the_list_filters_and_pages(client: AuthenticatedClient, api_server: LiveServer) -> None:
    done = _create_call(client, "user-list-done")
    api_server.simulate_call(ORG, str(done.call_id))
    waiting = _create_call(client, "user-list-waiting")
    call = calls_retrieve.sync(done.call_id, client=client)
    assert isinstance(call, Call) and isinstance(call.started_at, dt.datetime)

    page = calls_list.sync(client=client, user_id="user-list-done")
    assert isinstance(page, PaginatedCallSummaryList), page
    assert (page.total, page.page, page.page_size, page.pages) == (1, 1, 20, 1)
    assert [(c.id, c.status) for c in page.items] == [(done.call_id, CallStatusEnum.COMPLETED)]
    assert page.items[0].agent_history == ["greeter-agent", "meal-agent", "feedback-agent"]

    both = calls_list.sync(
        client=client,
        status=[CallStatusEnum.COMPLETED, CallStatusEnum.CONNECTING],
        workflow_id=call.workflow_id,
        page_size=100,
    )
    assert isinstance(both, PaginatedCallSummaryList)
    ids = [c.id for c in both.items]
    assert ids.index(waiting.call_id) < ids.index(done.call_id)  # newest first

    # How it ended, and which way: the campaign's filters (several reasons: a list).
    ended_so = calls_list.sync(
        client=client,
        user_id="user-list-done",
        direction=call.direction,
        end_reason=[call.end_reason, "voicemail"],
    )
    assert isinstance(ended_so, PaginatedCallSummaryList)
    assert [c.id for c in ended_so.items] == [done.call_id]
    other_way = next(way for way in CallDirectionEnum if way != call.direction)
    none = calls_list.sync(client=client, user_id="user-list-done", direction=other_way)
    assert isinstance(none, PaginatedCallSummaryList) and none.total == 0

    connecting = calls_list.sync(client=client, status=[CallStatusEnum.CONNECTING])
    assert isinstance(connecting, PaginatedCallSummaryList)
    assert [c.id for c in connecting.items] == [waiting.call_id]

    window = calls_list.sync(
        client=client,
        started_after=call.started_at,
        started_before=call.started_at + dt.timedelta(seconds=1),
        user_id="user-list-done",
    )
    assert isinstance(window, PaginatedCallSummaryList) and window.total == 1
    before = calls_list.sync(
        client=client, started_before=call.started_at, user_id="user-list-done"
    )
    assert isinstance(before, PaginatedCallSummaryList) and before.total == 0

    small = calls_list.sync(client=client, page=2, page_size=1)
    assert isinstance(small, PaginatedCallSummaryList)
    assert (small.page, small.page_size, small.pages) == (2, 1, small.total)
    assert len(small.items) == 1

    past_the_end = calls_list.sync(client=client, page=1000, page_size=1)
    assert isinstance(past_the_end, PaginatedCallSummaryList)
    assert past_the_end.items == [] and past_the_end.total == small.total

    ended = calls_end.sync(waiting.call_id, client=client)
    assert isinstance(ended, Call), ended
    assert (ended.status, ended.end_reason) == (CallStatusEnum.COMPLETED, "api_request")
    assert calls_active.sync(client=client) == []


def test_a_wrong_key_is_a_typed_401(api_server: LiveServer) -> None:
    with AuthenticatedClient(base_url=api_server.url, token="not-a-key") as bad:
        response = calls_list.sync_detailed(client=bad)
    assert response.status_code == 401
    assert isinstance(response.parsed, ErrorResponse)
    assert response.parsed.errors[0].code == "authentication_failed"


def test_a_database_outage_is_a_typed_503_on_every_operation() -> None:
    """The server's answer while its database is unavailable (503 `service_unavailable`,
    tests/test_database_unavailable.py) parses as an ErrorResponse on every operation
    but the index, which reads no database: only the live stream typed a 503 before,
    and every other operation returned None for it."""
    body = {
        "type": "server_error",
        "errors": [
            {
                "code": ServiceUnavailable.default_code,
                "detail": ServiceUnavailable.default_detail,
                "attr": None,
            }
        ],
    }
    answer = httpx.Response(503, json=body, headers={"Retry-After": "5"})
    untyped = []
    with Client(base_url="http://unused") as client:
        for module in _operation_modules():
            if module.__name__.endswith(".api_index"):
                continue
            parsed = module._parse_response(client=client, response=answer)
            if not (
                isinstance(parsed, ErrorResponse)
                and parsed.errors[0].code == body["errors"][0]["code"]
            ):
                untyped.append(module.__name__)
    assert untyped == []


def _operation_modules() -> list[ModuleType]:
    import voicecalls_client.api

    names = pkgutil.walk_packages(voicecalls_client.api.__path__, "voicecalls_client.api.")
    modules = [importlib.import_module(name) for _, name, is_package in names if not is_package]
    assert len(modules) > 50
    return modules


def test_another_organization_sees_none_of_it(api_server: LiveServer) -> None:
    key = api_server.client_key("sdk-python-outsider")
    with AuthenticatedClient(base_url=api_server.url, token=key) as outsider:
        page = calls_list.sync(client=outsider)
        assert isinstance(page, PaginatedCallSummaryList) and page.total == 0
        missing = calls_retrieve.sync_detailed(uuid.uuid4(), client=outsider)
        assert missing.status_code == 404


def test_the_python_example_runs(api_server: LiveServer) -> None:
    key = api_server.client_key("sdk-python-example")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env={
            **api_server.env,
            "PYTHONPATH": str(SDK / "python"),
            "VOICECALLS_BASE_URL": api_server.url,
            "VOICECALLS_API_KEY": key,
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(ROOT),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Call ") and lines[0].endswith(" is connecting")
    call_id = lines[0].split()[1]
    assert f"Join room call-{call_id}" in lines[1]
    assert lines[2] == "Active calls: 1"


def test_an_outbound_phone_call_through_the_sdk(api_server: LiveServer) -> None:
    """A trunk (created in the fake LiveKit), the caller id, then a phone call: 201
    `pending`, `channel` phone; a country staff did not allow is an ErrorResponse."""
    from voicecalls_client.api.organization import organization_partial_update
    from voicecalls_client.api.telephony import sip_trunks_create
    from voicecalls_client.models import (
        CallChannelEnum,
        PatchedOrganizationUpdateRequest,
        SipTrunk,
        SipTrunkCreateRequest,
    )
    from voicecalls_client.models import (
        Organization as OrganizationSettings,
    )

    from accounts.models import Organization

    key = api_server.client_key("sdk-python-phone")
    with api_server.db_blocker.unblock():  # staff allow the US (the admin's job)
        Organization.objects.filter(slug="sdk-python-phone").update(
            allowed_destination_countries=["US"]
        )
    with AuthenticatedClient(base_url=api_server.url, token=key) as phone_client:
        trunk = sip_trunks_create.sync(
            client=phone_client,
            body=SipTrunkCreateRequest(
                name="Twilio",
                direction=CallDirectionEnum.OUTBOUND,
                address="acme.pstn.twilio.com",
                numbers=["+14155550100"],
                auth_username="acme",
                auth_password="sdk-trunk-secret",
            ),
        )
        assert isinstance(trunk, SipTrunk), trunk
        assert trunk.auth_password_masked == "••••"
        settings = organization_partial_update.sync(
            client=phone_client,
            body=PatchedOrganizationUpdateRequest(default_caller_number="+14155550100"),
        )
        assert isinstance(settings, OrganizationSettings), settings
        assert settings.default_caller_number == "+14155550100"

        joined = calls_create.sync(
            client=phone_client,
            # `direction` left out: the SDK sends none, and a phone call is outbound.
            body=CallCreateRequest(workflow_slug="daily-call", phone_number="+14155550123"),
        )
        assert isinstance(joined, CallJoin), joined
        assert (joined.status, joined.channel) == (CallStatusEnum.PENDING, CallChannelEnum.PHONE)
        call = calls_retrieve.sync(joined.call_id, client=phone_client)
        assert isinstance(call, Call)
        assert (call.phone_number, call.from_number) == ("+14155550123", "+14155550100")
        assert call.direction == CallDirectionEnum.OUTBOUND

        refused = calls_create.sync(
            client=phone_client,
            body=CallCreateRequest(
                workflow_slug="daily-call",
                phone_number="+442071838750",
                direction=CallDirectionEnum.OUTBOUND,
            ),
        )
        assert isinstance(refused, ErrorResponse), refused
        assert refused.errors[0].code == "destination_not_allowed"
