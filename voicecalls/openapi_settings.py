"""drf-spectacular's settings for `openapi.yaml` (imported by voicecalls.settings): a
plain dict, no Django import, so settings can load it first."""

SPECTACULAR_SETTINGS = {
    "TITLE": "voicecalls API",
    "DESCRIPTION": (
        "Start voice-AI calls from workflows, follow them through LiveKit, and read "
        "their transcripts and metrics."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI from the pinned drf-spectacular-sidecar, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "TAGS": [
        {
            "name": "calls",
            "description": "Start voice calls and follow their status, transcripts and metrics.",
        },
        {"name": "workflows", "description": "The agents, prompts and providers a call runs."},
        {"name": "provider-keys", "description": "Bring-your-own provider keys (masked)."},
        {"name": "webhook-endpoints", "description": "Where call events are delivered."},
        {"name": "telephony", "description": "SIP trunks for phone calls."},
        {"name": "organization", "description": "Your organization's settings and limits."},
        {"name": "agent", "description": "For the voice-agent worker (agent keys only)."},
    ],
    "ENUM_NAME_OVERRIDES": {
        **{
            name: f"drf_standardized_errors.openapi_serializers.{name}.choices"
            for name in [
                "ValidationErrorEnum",
                "ClientErrorEnum",
                "ServerErrorEnum",
                "ErrorCode401Enum",
                "ErrorCode403Enum",
                "ErrorCode404Enum",
                "ErrorCode405Enum",
                "ErrorCode406Enum",
                "ErrorCode415Enum",
                "ErrorCode429Enum",
                "ErrorCode500Enum",
            ]
        },
        "ErrorTypeEnum": "voicecalls.errors.ERROR_TYPES",
        "CallStatusEnum": "calls.models.CallStatus.choices",
        "CostComponentEnum": "billing.models.CostComponent.choices",
        "CostPhaseEnum": "billing.models.CostPhase.choices",
        "CallDirectionEnum": "calls.models.CallDirection.choices",
        "TranscriptRoleEnum": "calls.models.TranscriptRole.choices",
        "ProviderTypeEnum": "providerkeys.models.ProviderType.choices",
        "ProviderNameEnum": "providerkeys.catalog.ALL_PROVIDERS",
        "SttProviderEnum": "providerkeys.catalog.STT_PROVIDERS",
        "LlmProviderEnum": "providerkeys.catalog.LLM_PROVIDERS",
        "TtsProviderEnum": "providerkeys.catalog.TTS_PROVIDERS",
        "WebhookEventTypeEnum": "webhooks.models.EventType.choices",
        "WebhookSentEventTypeEnum": "webhooks.models.SentEventType.choices",
        "WebhookDeliveryStatusEnum": "webhooks.models.DeliveryStatus.choices",
        "CallChannelEnum": "calls.models.CallChannel.choices",
        "VoicemailActionEnum": "workflows.settings.VOICEMAIL_ACTIONS",
        "ToolTypeEnum": "workflows.tools.TOOL_TYPES",
        "RecordingStatusEnum": "recordings.models.RecordingStatus.choices",
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "LiveKitWebhookSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "LiveKit's webhook signature: a bare JWT (no `Bearer`), "
                "HS256 by the LiveKit API secret, issuer the API key, `sha256` claim the "
                "base64 SHA-256 of the body.",
            }
        }
    },
    "POSTPROCESSING_HOOKS": [
        "drf_standardized_errors.openapi_hooks.postprocess_schema_enums",
        "voicecalls.schema.blank_alternatives_postprocess",
        "voicecalls.schema.csv_parameters_postprocess",
    ],
}
