"""The voice-agent worker's API under /api/v1/agent/ (agent keys only)."""

from __future__ import annotations

from django.urls import path

from calls.agent_events_api import AgentCallEventsView
from calls.agent_session import AgentInboundSessionView, AgentSessionView
from telephony.views import AgentCallTransferView
from voicecalls import routing  # noqa: F401  (registers <any_uuid:>)

urlpatterns: list = [
    path("inbound-calls", AgentInboundSessionView.as_view(), name="agent-inbound-session"),
    path("calls/<any_uuid:call_id>/session", AgentSessionView.as_view(), name="agent-call-session"),
    path(
        "calls/<any_uuid:call_id>/events", AgentCallEventsView.as_view(), name="agent-call-events"
    ),
    path(
        "calls/<any_uuid:call_id>/transfer",
        AgentCallTransferView.as_view(),
        name="agent-call-transfer",
    ),
]
