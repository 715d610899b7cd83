"""`GET /api/v1/agent/calls/{id}/session`: everything the voice-agent worker needs to
run a call, on the workflow version the call started with.

The only place provider keys and tool signing secrets leave the service in plaintext:
agent keys only, never cached (`Cache-Control: no-store`).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.agent_presence import call_agent_seen
from calls.lifecycle import EndReason
from calls.models import Call, CallChannel, CallDirection, CallStatus
from calls.selectors import agent_call_queryset, call_conversation_recent
from calls.serializers import TranscriptEntrySerializer
from providerkeys.crypto import UndecryptableValue
from providerkeys.selectors import provider_key_for
from telephony.inbound import (
    BUSY_ANSWER_SECONDS,
    CALLER_MAX,
    InboundCaller,
    inbound_call_get_or_create,
)
from voicecalls.auth import IsAgentKey
from voicecalls.errors import Conflict, error_responses
from voicecalls.fields import JSONTypedSerializer, NulRemovedCharField
from webhooks.models import MAX_PREVIOUS_SECRETS
from webhooks.selectors import tool_signing_secrets_live
from workflows.components import DEFAULT_LLM_TIMEOUT_SECONDS
from workflows.prompts import (
    MAX_SESSION_RENDER_SECONDS,
    agents_rendered,
    render,
    renders_within,
    template_context,
)
from workflows.serializers import WorkflowSettingsSerializer
from workflows.settings import default_voicemail
from workflows.tools import WorkflowToolSerializer

COMPONENTS = ("stt", "llm", "tts")
# What the agent may send as the caller id; only CALLER_MAX of it is kept.
CALLER_ID_SENT_MAX = 1024
# The conversation so far that an agent dispatched again mid-call goes on from: its
# unbroken end, the caller waiting in silence while the session is read. 100 lines are
# some fifty exchanges, ten minutes and more of talk; 24,000 characters (some 6,000
# tokens, which every catalog model takes beside its instructions) hold a tool's
# longest answer (the worker's 16,000) with the talk around it.
CONVERSATION_MAX_LINES = 100
CONVERSATION_MAX_CHARS = 24_000

logger = logging.getLogger(__name__)


class CallEnded(Conflict):
    default_detail = "The call has ended: its session (and its provider keys) is gone."
    default_code = "call_ended"


def _with_key(config: dict, component: str, call: Call, keys: dict) -> dict:
    """`config` with its provider's key: the same rule for a component and its fallbacks."""
    lookup = (component, config["provider"])
    if lookup not in keys:
        keys[lookup] = _key_plaintext(call, *lookup)
    return {**config, "api_key": keys[lookup], "missing_key": keys[lookup] is None}


def _key_plaintext(call: Call, component: str, provider: str) -> str | None:
    """The key's plaintext, or None: there is none, or (logged) no configured
    CRYPTOGRAPHY_KEY opens it; the worker then fails the call, saying the key is missing."""
    try:
        found = provider_key_for(
            organization=call.organization, provider_type=component, provider_name=provider
        )
    except UndecryptableValue:
        logger.error(
            "call %s: the %s key for %s opens with no configured CRYPTOGRAPHY_KEY",
            call.pk,
            component,
            provider,
        )
        return None
    return found.api_key if found is not None else None


def _settings_rendered(version: Any, context: dict) -> dict:
    """The version's settings, the voicemail message rendered for this call (the
    serializer fills what versions saved before a setting existed lack)."""
    voicemail = version.settings.get("voicemail") or default_voicemail()
    return {
        **version.settings,
        "connect_timeout_seconds": version.connect_timeout_seconds,
        "max_duration_seconds": version.max_duration_seconds,
        "ring_timeout_seconds": version.ring_timeout_seconds,
        "dial_deadline_seconds": version.dial_deadline_seconds,
        "voicemail": {**voicemail, "message": render(voicemail["message"], context)},
    }


def agent_session(*, call: Call) -> dict:
    """The call's session: its data, and its workflow version with prompts rendered and
    each component's (and fallback's) provider key resolved, one query per distinct
    provider."""
    version = call.workflow_version
    context = template_context(
        user_data=call.user_data, metadata=call.metadata, call_id=str(call.id)
    )
    keys: dict[tuple[str, str], str | None] = {}
    with renders_within(MAX_SESSION_RENDER_SECONDS):
        agents = agents_rendered(definition=version.definition, context=context)
        settings = _settings_rendered(version, context)
    for agent in agents:
        for component in COMPONENTS:
            config = _with_key(agent[component], component, call, keys)
            config["fallbacks"] = [
                _with_key(fallback, component, call, keys)
                for fallback in agent[component].get("fallbacks", [])
            ]
            agent[component] = config
    conversation, truncated = call_conversation_recent(
        call=call, max_lines=CONVERSATION_MAX_LINES, max_chars=CONVERSATION_MAX_CHARS
    )
    return {
        "call_id": call.id,
        "room_name": call.room_name,
        "status": call.status,
        "started_at": call.started_at,
        "current_agent": call.current_agent,
        "end_reason": call.end_reason,
        "direction": call.direction,
        "channel": call.channel,
        "phone_number": call.phone_number,
        "from_number": call.from_number,
        "user_id": call.user_id,
        "user_data": call.user_data,
        "metadata": call.metadata,
        "workflow": {
            "id": call.workflow_id,
            "slug": call.workflow_slug,
            "version": version.number,
            "start_agent": version.start_agent,
            "settings": settings,
            "agents": agents,
        },
        "conversation": conversation,
        "conversation_truncated": truncated,
        "tool_signing_secrets": tool_signing_secrets_live(organization=call.organization),
    }


class SessionFallbackSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    voice = serializers.CharField(allow_null=True, default=None)
    api_key = serializers.CharField(
        allow_null=True, help_text="The organization's key for this provider, decrypted."
    )
    missing_key = serializers.BooleanField(
        help_text="True when the organization has no key for this provider."
    )


class SessionComponentSerializer(SessionFallbackSerializer):
    fallbacks = SessionFallbackSerializer(
        many=True, help_text="Tried in order when the one before fails, each with its key."
    )


class SessionLanguageModelSerializer(SessionComponentSerializer):
    # A version saved before the setting reads back with the 5 s every model had.
    timeout_seconds = serializers.FloatField(
        default=DEFAULT_LLM_TIMEOUT_SECONDS,
        help_text="Seconds the worker waits on each attempt of the model (and each fallback).",
    )


class SessionAgentSerializer(serializers.Serializer):
    name = serializers.CharField()
    instructions = serializers.CharField(help_text="Rendered for this call.")
    greeting = serializers.CharField(allow_blank=True, help_text="Rendered for this call.")
    tools = WorkflowToolSerializer(many=True)
    handoffs = serializers.ListField(child=serializers.CharField())
    stt = SessionComponentSerializer()
    llm = SessionLanguageModelSerializer()
    tts = SessionComponentSerializer()


class SessionWorkflowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.CharField(help_text="The slug when the call was made.")
    version = serializers.IntegerField(help_text="The version the call started with.")
    start_agent = serializers.CharField()
    settings = WorkflowSettingsSerializer()
    agents = SessionAgentSerializer(many=True)


class AgentSessionSerializer(serializers.Serializer):
    call_id = serializers.UUIDField()
    room_name = serializers.CharField()
    status = serializers.ChoiceField(choices=CallStatus.choices)
    started_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the call became active; null before. An agent dispatched again "
        "mid-call times `max_duration_seconds` from it.",
    )
    current_agent = serializers.CharField(
        allow_null=True,
        help_text="The agent the call is with (null before it starts): an agent dispatched "
        "again mid-call resumes with it rather than the start agent.",
    )
    end_reason = serializers.CharField(
        allow_null=True,
        help_text="Set only on an inbound call over the concurrency limit (`failed`, "
        "`concurrency_limit`): say `workflow.settings.busy_message` and hang up.",
    )
    direction = serializers.ChoiceField(choices=CallDirection.choices)
    channel = serializers.ChoiceField(
        choices=CallChannel.choices,
        help_text="`phone`: the user is a callee dialed over SIP (`user-<call_id>`, kind "
        "SIP); greet once its `sip.callStatus` is `active`.",
    )
    phone_number = serializers.CharField(
        allow_null=True, help_text="Phone calls: the callee's number (E.164)."
    )
    from_number = serializers.CharField(
        allow_null=True, help_text="Phone calls: the caller id the callee sees (E.164)."
    )
    user_id = serializers.CharField(allow_null=True)
    user_data = serializers.DictField()
    metadata = serializers.DictField()
    workflow = SessionWorkflowSerializer()
    conversation = TranscriptEntrySerializer(
        many=True,
        help_text="The conversation so far (user, assistant and tool lines; not system "
        "notes), as the transcript gives it: an agent dispatched again mid-call goes on "
        f"from it rather than greeting again. Its most recent {CONVERSATION_MAX_LINES} "
        f"lines at most, no more of them than fit in {CONVERSATION_MAX_CHARS:,} characters "
        "(content and tool calls; the newest line alone over that is cut to fit); empty "
        "before anybody spoke.",
    )
    conversation_truncated = serializers.BooleanField(
        help_text="Earlier lines of the conversation were left out of `conversation`."
    )
    tool_signing_secrets = serializers.ListField(
        child=serializers.CharField(),
        help_text="The organization's tool signing secrets (`whsec_...`), the newest first: "
        "each tool request carries Standard Webhooks headers with a signature by each "
        "(after a rotation, the secrets it and earlier ones replaced, each for its 24 hours: "
        f"{MAX_PREVIOUS_SECRETS + 1} at most). Empty: the organization has none, send unsigned.",
    )


class AgentSessionView(APIView):
    permission_classes = [IsAgentKey]

    @extend_schema(
        summary="Get a call's agent session",
        operation_id="agent_calls_session",
        description=(
            "Everything the voice-agent worker needs for a call: its data, and the "
            "workflow version it started with, prompts rendered and provider keys "
            "decrypted. Agent keys only; never cache it. A call that has ended is 409 "
            "`call_ended`, without keys: a late or duplicate dispatch must not run it."
        ),
        responses={200: AgentSessionSerializer, **error_responses(409)},
    )
    @method_decorator(never_cache)  # it carries provider keys and signing secrets
    def get(self, request: Request, call_id: str) -> Response:
        return self.respond(request, call_id=call_id)

    @staticmethod
    def respond(request: Request, *, call_id: object, busy_answer: bool = False) -> Response:
        """The session; `busy_answer`: an inbound call just refused for the concurrency
        limit gets it too, so the agent can tell the caller with the workflow's voice."""
        calls = agent_call_queryset(organization=request.user.organization).select_related(
            "workflow_version", "organization"
        )
        call = get_object_or_404(calls, pk=call_id)
        # Who read which customer's keys, for audit; never the keys themselves.
        logger.info(
            "agent session read: agent key %s, organization %s, call %s, status %s",
            request.auth.prefix,
            call.organization.slug,
            call.id,
            call.status,
        )
        if call.is_ended and not (busy_answer and _just_refused_busy(call)):
            raise CallEnded()
        return Response(AgentSessionSerializer(agent_session(call=call)).data)


def _just_refused_busy(call: Call) -> bool:
    return (
        call.end_reason == EndReason.CONCURRENCY_LIMIT
        and call.ended_at is not None
        and timezone.now() - call.ended_at < datetime.timedelta(seconds=BUSY_ANSWER_SECONDS)
    )


class InboundSessionRequestSerializer(JSONTypedSerializer):
    """The caller's SIP participant as the agent sees it in the room LiveKit's dispatch
    rule made (its attributes `sip.phoneNumber`, `sip.trunkPhoneNumber`, `sip.trunkID`)."""

    room_name = serializers.CharField(max_length=200)
    participant_identity = serializers.CharField(max_length=200)
    phone_number = serializers.CharField(
        max_length=16, help_text="The number called: `sip.trunkPhoneNumber`."
    )
    caller = NulRemovedCharField(
        max_length=CALLER_ID_SENT_MAX,
        allow_blank=True,
        help_text=f"The caller's number: `sip.phoneNumber` (over {CALLER_MAX} characters, "
        "the call is answered as from an unknown caller). A U+0000 in it is removed.",
    )
    sip_trunk_id = serializers.CharField(
        max_length=100, required=False, default="", allow_blank=True, help_text="`sip.trunkID`."
    )


class InboundCallUnknown(NotFound):
    default_detail = "No verified number of this organization was called: hang up."
    default_code = "unknown_number"


class AgentInboundSessionView(APIView):
    permission_classes = [IsAgentKey]

    @extend_schema(
        summary="Get or create an inbound phone call's agent session",
        operation_id="agent_inbound_calls_session",
        description=(
            "For a room LiveKit's dispatch rule made for a caller of one of the "
            "organization's verified numbers: the room's call, created unless the SIP "
            "participant's `participant_joined` webhook created it first (exactly one call "
            "per room), and its session as `GET /agent/calls/{id}/session` gives it. 404 "
            "`unknown_number` when no verified number was called (hang up); 409 "
            "`call_ended` when the call has ended. Over the organization's concurrency "
            "limit the call is created `failed`/`concurrency_limit` and its session is "
            "still given for a minute: the agent says `busy_message` and hangs up."
        ),
        request=InboundSessionRequestSerializer,
        responses={200: AgentSessionSerializer, **error_responses(404, 409)},
    )
    @method_decorator(never_cache)  # it carries provider keys and signing secrets
    def post(self, request: Request) -> Response:
        params = InboundSessionRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        caller = InboundCaller(
            room_name=data["room_name"],
            participant_identity=data["participant_identity"],
            caller=data["caller"],
            called=data["phone_number"],
            livekit_trunk_id=data["sip_trunk_id"],
        )
        call = inbound_call_get_or_create(caller=caller, organization=request.user.organization)
        if call is None:
            raise InboundCallUnknown()
        call_agent_seen(call_id=call.pk, at=timezone.now())
        return AgentSessionView.respond(request, call_id=call.pk, busy_answer=True)
