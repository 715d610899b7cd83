"""The calls app's models: the call (call.py), its statuses and times (status.py) and
what it accumulates (records.py)."""

from calls.models.call import (
    ERASED_CONTENT,
    LATENCY_COMPONENTS,
    MONITOR_IDENTITY_PREFIX,
    ROOM_PREFIX,
    USER_IDENTITY_PREFIX,
    Call,
    CallChannel,
    CallDirection,
    RoomNameField,
    TranscriptRole,
)
from calls.models.records import (
    AgentEvent,
    AgentEventType,
    CallCount,
    IdempotencyRecord,
    LiveKitWebhookEvent,
    MetricSample,
    TranscriptEntry,
)
from calls.models.status import (
    ENDED_STATUSES,
    MAX_START_DELAY,
    NOT_ENDED_STATUSES,
    NOT_STARTED_STATUSES,
    CallStatus,
    duration_between,
    start_bound,
)

__all__ = [
    "CallStatus",
    "NOT_ENDED_STATUSES",
    "NOT_STARTED_STATUSES",
    "MAX_START_DELAY",
    "start_bound",
    "ENDED_STATUSES",
    "ROOM_PREFIX",
    "USER_IDENTITY_PREFIX",
    "LATENCY_COMPONENTS",
    "duration_between",
    "CallDirection",
    "CallChannel",
    "MONITOR_IDENTITY_PREFIX",
    "TranscriptRole",
    "ERASED_CONTENT",
    "RoomNameField",
    "Call",
    "CallCount",
    "TranscriptEntry",
    "IdempotencyRecord",
    "MetricSample",
    "AgentEventType",
    "AgentEvent",
    "LiveKitWebhookEvent",
]
