"""A workflow's `settings`: limits the API applies, and how the voice agent behaves on
the call (language, turn-taking, silence, what it says when it fails).

Every setting has a default that keeps what calls did before it existed, so versions
saved earlier read back with the defaults filled in.
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from voicecalls.fields import JSONTypedSerializer
from workflows.languages import LANGUAGE_PATTERN
from workflows.models import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_DIAL_DEADLINE_SECONDS,
    DEFAULT_MAX_DURATION_SECONDS,
    DEFAULT_RING_TIMEOUT_SECONDS,
)
from workflows.prompts import template_error

CONNECT_TIMEOUT_BOUNDS = (5, 600)
MAX_DURATION_BOUNDS = (30, 4 * 3600)
DEFAULT_ERROR_MESSAGE = "I'm sorry, something went wrong on our side. Please call again later."
MAX_ERROR_MESSAGE_CHARS = 500
# livekit-agents' own defaults (voice/turn.py), which calls used before these settings.
DEFAULT_MIN_ENDPOINTING_DELAY = 0.5
DEFAULT_MAX_ENDPOINTING_DELAY = 3.0
DEFAULT_FALSE_INTERRUPTION_TIMEOUT = 2.0
MIN_ENDPOINTING_BOUNDS = (0.0, 5.0)
MAX_ENDPOINTING_BOUNDS = (0.5, 30.0)
FALSE_INTERRUPTION_BOUNDS = (0.5, 10.0)
SILENCE_TIMEOUT_BOUNDS = (5, 600)
RING_TIMEOUT_BOUNDS = (5, 120)
DIAL_DEADLINE_BOUNDS = (10, 600)
DEFAULT_BUSY_MESSAGE = "All our lines are busy right now. Please call again later."
MAX_VOICEMAIL_MESSAGE_CHARS = 2_000


def phone_start_delay_seconds(*, dial_deadline: int, ring_timeout: int) -> int:
    """How long a phone call may wait for its start: its dial deadline, the ringing, and
    a little longer for LiveKit to answer; by then it ends `timeout` (telephony.dialing)."""
    return dial_deadline + ring_timeout + 15


# The longest any call may wait for its start (a started_* window implies creation
# times from it): a web call's connect timeout, or a phone call's wait, at its largest.
MAX_START_DELAY_SECONDS = max(
    CONNECT_TIMEOUT_BOUNDS[1],
    phone_start_delay_seconds(
        dial_deadline=DIAL_DEADLINE_BOUNDS[1], ring_timeout=RING_TIMEOUT_BOUNDS[1]
    ),
)


class VoicemailAction:
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"


VOICEMAIL_ACTIONS = [VoicemailAction.HANG_UP, VoicemailAction.LEAVE_MESSAGE]


def default_voicemail() -> dict:
    return {"action": VoicemailAction.HANG_UP, "message": ""}


class VoicemailSerializer(JSONTypedSerializer):
    """What the agent does when an answering machine picks up an outbound phone call."""

    action = serializers.ChoiceField(
        choices=VOICEMAIL_ACTIONS,
        default=VoicemailAction.HANG_UP,
        help_text="`hang_up` at once, or `leave_message` (say `message`, then hang up).",
    )
    message = serializers.CharField(
        max_length=MAX_VOICEMAIL_MESSAGE_CHARS,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="Said after the beep with `leave_message`: a template like the prompts.",
    )

    def validate(self, data: dict) -> dict:
        error = template_error(data["message"])
        if error:
            raise serializers.ValidationError(
                {"message": [ErrorDetail(f"Voicemail message: {error}", "template_syntax_error")]}
            )
        if data["action"] == VoicemailAction.LEAVE_MESSAGE and not data["message"].strip():
            raise serializers.ValidationError(
                {"message": [ErrorDetail("leave_message needs a message.", "required")]}
            )
        return data


def default_recording() -> dict:
    return {"enabled": False}


class RecordingSettingSerializer(JSONTypedSerializer):
    """Whether the workflow's calls are recorded (recordings/)."""

    enabled = serializers.BooleanField(
        default=False,
        help_text="Record each call, audio only, from the moment it becomes `active` "
        "(GET /calls/{id}/recording). Needs recording storage: the platform's, or your "
        "own (PUT /organization/recording-storage); without any, calls are not recorded.",
    )


class WorkflowSettingsSerializer(JSONTypedSerializer):
    # A workflow PATCH merges `settings` key by key (serializers.patch_merge): the schema
    # states the defaults in words, as a generated client sends a declared default for
    # every key it was not given (voicecalls/schema.py).
    merged_by_patch = True

    connect_timeout_seconds = serializers.IntegerField(
        min_value=CONNECT_TIMEOUT_BOUNDS[0],
        max_value=CONNECT_TIMEOUT_BOUNDS[1],
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS,
        help_text="A call nobody joined within this many seconds ends as `timeout`.",
    )
    max_duration_seconds = serializers.IntegerField(
        min_value=MAX_DURATION_BOUNDS[0],
        max_value=MAX_DURATION_BOUNDS[1],
        default=DEFAULT_MAX_DURATION_SECONDS,
        help_text="A call running longer than this ends as `timeout`.",
    )
    ring_timeout_seconds = serializers.IntegerField(
        min_value=RING_TIMEOUT_BOUNDS[0],
        max_value=RING_TIMEOUT_BOUNDS[1],
        default=DEFAULT_RING_TIMEOUT_SECONDS,
        help_text="Phone calls: a phone nobody answers within this many seconds ends the "
        "call as `failed`/`no_answer`. LiveKit waits at most 80 seconds for an answer, so "
        "a longer timeout rings for about 80 seconds.",
    )
    dial_deadline_seconds = serializers.IntegerField(
        min_value=DIAL_DEADLINE_BOUNDS[0],
        max_value=DIAL_DEADLINE_BOUNDS[1],
        default=DEFAULT_DIAL_DEADLINE_SECONDS,
        help_text="Phone calls: a call not dialed within this many seconds of its creation "
        "ends as `failed`/`dial_timeout`.",
    )
    language = serializers.RegexField(
        LANGUAGE_PATTERN,
        max_length=35,
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "Language the agent hears and speaks (`en`, `es-MX`; `multi`: Deepgram's "
            "multilingual speech-to-text), given to speech-to-text and text-to-speech. "
            "A call's `user_data.language` overrides it. Null: each provider's default."
        ),
    )
    error_message = serializers.CharField(
        max_length=MAX_ERROR_MESSAGE_CHARS,
        allow_blank=True,
        default=DEFAULT_ERROR_MESSAGE,
        help_text="Said when the call cannot go on (a provider keeps failing); empty: say nothing.",
    )
    allow_interruptions = serializers.BooleanField(
        default=True, help_text="Whether the caller can interrupt the agent by speaking."
    )
    min_endpointing_delay = serializers.FloatField(
        min_value=MIN_ENDPOINTING_BOUNDS[0],
        max_value=MIN_ENDPOINTING_BOUNDS[1],
        default=DEFAULT_MIN_ENDPOINTING_DELAY,
        help_text="Seconds of silence before the caller's turn may end.",
    )
    max_endpointing_delay = serializers.FloatField(
        min_value=MAX_ENDPOINTING_BOUNDS[0],
        max_value=MAX_ENDPOINTING_BOUNDS[1],
        default=DEFAULT_MAX_ENDPOINTING_DELAY,
        help_text="Seconds after which the caller's turn ends whatever the turn detector says.",
    )
    false_interruption_timeout = serializers.FloatField(
        min_value=FALSE_INTERRUPTION_BOUNDS[0],
        max_value=FALSE_INTERRUPTION_BOUNDS[1],
        allow_null=True,
        default=DEFAULT_FALSE_INTERRUPTION_TIMEOUT,
        help_text=(
            "Seconds without words after the caller interrupted before the interruption "
            "counts as false (a cough, a noise); null: never."
        ),
    )
    resume_false_interruption = serializers.BooleanField(
        default=True,
        help_text="After a false interruption the agent resumes what it was saying.",
    )
    silence_timeout_seconds = serializers.IntegerField(
        min_value=SILENCE_TIMEOUT_BOUNDS[0],
        max_value=SILENCE_TIMEOUT_BOUNDS[1],
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "After this many seconds in which nobody spoke the agent asks whether the "
            "caller is still there; after as many again it hangs up (`end_reason` "
            "`silence_timeout`). Null: wait for the caller."
        ),
    )

    voicemail = VoicemailSerializer(
        default=default_voicemail,
        help_text="Outbound phone calls answered by a machine end `completed`/`voicemail`.",
    )
    busy_message = serializers.CharField(
        max_length=MAX_ERROR_MESSAGE_CHARS,
        default=DEFAULT_BUSY_MESSAGE,
        help_text="Inbound phone calls over the organization's concurrency limit hear this, "
        "then the agent hangs up (`failed`/`concurrency_limit`).",
    )
    recording = RecordingSettingSerializer(
        default=default_recording, help_text="Off unless enabled: calls are not recorded."
    )

    def validate(self, data: dict) -> dict:
        if data["min_endpointing_delay"] > data["max_endpointing_delay"]:
            raise serializers.ValidationError(
                {
                    "min_endpointing_delay": [
                        ErrorDetail("Must not exceed max_endpointing_delay.", code="min_over_max")
                    ]
                }
            )
        return data
