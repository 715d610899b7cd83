"""The call: its directions, channels and LiveKit names, and the `Call` row itself
(its statuses and times: status.py)."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from calls.models.status import ENDED_STATUSES, CallStatus, duration_between
from workflows.models import Workflow, WorkflowVersion

# A call's LiveKit room is `call-<id>`; its end user joins as `user-<id>`.
ROOM_PREFIX = "call-"
USER_IDENTITY_PREFIX = "user-"

# Per-turn latencies the agent reports (MetricSample columns `<component>_latency_ms`);
# the call keeps a running sum and count of each for its means (Call
# `<component>_latency_ms_sum`, `<component>_latency_count`).
LATENCY_COMPONENTS = ("stt", "llm", "tts", "e2e", "eou")


class CallDirection(models.TextChoices):
    INBOUND = "inbound", "Inbound"
    OUTBOUND = "outbound", "Outbound"


class CallChannel(models.TextChoices):
    WEB = "web", "Web"
    PHONE = "phone", "Phone"


# Whoever watches a phone call (its user is the callee) joins as `monitor-<id>`, listen-only.
MONITOR_IDENTITY_PREFIX = "monitor-"


class TranscriptRole(models.TextChoices):
    SYSTEM = "system", "System"
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"
    TOOL = "tool", "Tool"


# What an erased call's transcript lines say instead of their content (role, agent and
# time are kept): docs/privacy.md.
ERASED_CONTENT = "[erased]"


class RoomNameField(models.CharField):
    """A call's LiveKit room: `call-<id>` unless set (inbound phone calls join the room
    LiveKit's dispatch rule made). Filled in on insert, whichever way the row is
    inserted (`save`, `bulk_create`, calls.sql.insert_instance all call `pre_save`)."""

    def pre_save(self, model_instance: models.Model, add: bool) -> str:
        value = getattr(model_instance, self.attname)
        if not value:
            value = f"{ROOM_PREFIX}{model_instance.pk}"
            setattr(model_instance, self.attname, value)
        return value


class Call(models.Model):
    """One voice call: who, which workflow version, where it stands, and its aggregates.

    Metric aggregates are kept as sums and counts so means are exact and updating
    them is a single atomic `UPDATE ... SET x = x + n`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="calls")
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="calls")
    workflow_version = models.ForeignKey(
        WorkflowVersion, on_delete=models.PROTECT, related_name="calls"
    )
    # The slug at creation: a call's record does not change when the workflow is renamed.
    workflow_slug = models.CharField(max_length=100)

    user_id = models.CharField(max_length=255, null=True, blank=True)
    user_data = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    direction = models.CharField(
        max_length=10, choices=CallDirection.choices, default=CallDirection.INBOUND
    )

    channel = models.CharField(
        max_length=5, choices=CallChannel.choices, default=CallChannel.WEB, db_default="web"
    )
    # Phone calls (channel `phone`): whom we dial, from which number, over which
    # LiveKit trunk; when the dial job must have started by, when it did, and the
    # SIP status the carrier answered a failed dial with.
    phone_number = models.CharField(max_length=16, null=True, blank=True)
    from_number = models.CharField(max_length=16, null=True, blank=True)
    sip_trunk_id = models.CharField(max_length=100, null=True, blank=True)
    dial_deadline_at = models.DateTimeField(null=True, blank=True)
    dial_attempted_at = models.DateTimeField(null=True, blank=True)
    sip_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    sip_status = models.CharField(max_length=200, null=True, blank=True)
    # What the end reason alone does not say, shown to the customer: a dial LiveKit
    # itself failed (`sip_error`, no SIP status), e.g. "LiveKit unreachable". Short and
    # safe (LiveKitError.summary: no address, no LiveKit message); the rest is logged.
    end_reason_detail = models.CharField(max_length=200, null=True, blank=True)
    # Where a transferred call went (an E.164 number or a sip: URI of the workflow's
    # transfer tool): set with `end_reason` `transferred`.
    transfer_destination = models.CharField(max_length=260, null=True, blank=True)
    # Every room→call lookup (webhooks, expiry, reconciliation) goes through these:
    # the room, unique (an inbound call is created once per room, whoever asks first),
    # and the end user's identity when LiveKit chose it (an inbound caller's SIP
    # participant), else null for `user-<id>`.
    room_name = RoomNameField(max_length=200, unique=True, editable=False)
    participant_identity = models.CharField(max_length=200, null=True, blank=True)

    status = models.CharField(
        max_length=12, choices=CallStatus.choices, default=CallStatus.CONNECTING
    )
    end_reason = models.CharField(max_length=50, null=True, blank=True)
    # Set when a hang-up was requested through the API, before LiveKit is asked to
    # delete the room, so the room's own webhooks can be attributed to it.
    hangup_requested_at = models.DateTimeField(null=True, blank=True)

    # The voice agent in the room (DESIGN.md "Call lifecycle"; calls.agent_presence):
    # when we first knew it there (its participant joined, or it reported events),
    # its participant now, and when it left the call unexpectedly (not ending it, no
    # transfer: its process died), cleared when an agent joins again.
    agent_joined_at = models.DateTimeField(null=True, blank=True)
    agent_identity = models.CharField(max_length=200, null=True, blank=True)
    agent_left_at = models.DateTimeField(null=True, blank=True)

    agent_history = models.JSONField(default=list, blank=True)
    current_agent = models.CharField(max_length=100, null=True, blank=True)

    # Limits copied from the workflow version at creation.
    connect_timeout_seconds = models.PositiveIntegerField()
    max_duration_seconds = models.PositiveIntegerField()

    stt_latency_ms_sum = models.FloatField(default=0)
    stt_latency_count = models.PositiveIntegerField(default=0)
    llm_latency_ms_sum = models.FloatField(default=0)
    llm_latency_count = models.PositiveIntegerField(default=0)
    tts_latency_ms_sum = models.FloatField(default=0)
    tts_latency_count = models.PositiveIntegerField(default=0)
    # End of the caller's utterance → turn committed, and → agent audio started.
    eou_latency_ms_sum = models.FloatField(default=0, db_default=0)
    eou_latency_count = models.PositiveIntegerField(default=0, db_default=0)
    e2e_latency_ms_sum = models.FloatField(default=0, db_default=0)
    e2e_latency_count = models.PositiveIntegerField(default=0, db_default=0)
    total_tokens = models.BigIntegerField(default=0)
    agent_handoffs = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Last webhook or agent event seen: `expire_calls` reconciles calls silent too long.
    last_event_at = models.DateTimeField(null=True, blank=True)
    # The last id given to an event of the call's live stream (streams.feed): moved
    # under the call's row lock, so the stream's ids follow commit order.
    stream_seq = models.PositiveBigIntegerField(default=0, db_default=0, editable=False)
    # Privacy (docs/privacy.md): when retention deleted the transcript, when it cleared
    # who the caller was, and when an erasure erased the call's personal data. Agent
    # events reaching an erased call are stored without their content.
    transcript_expired_at = models.DateTimeField(null=True, blank=True)
    user_data_expired_at = models.DateTimeField(null=True, blank=True)
    erased_at = models.DateTimeField(null=True, blank=True)
    # A copy of the post-call analysis's status and verdict (analysis.CallAnalysis),
    # kept by a trigger on that table (analysis migration 0002), so the list filters
    # `analysis_status` and `success` read the call's own indexes rather than a join.
    analysis_status = models.CharField(max_length=10, null=True, blank=True, editable=False)
    analysis_success = models.BooleanField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Every list is scoped to an organization and ordered newest first; each
            # filter gets the ordering columns after it so a page is an index range.
            # started_at rides along: a started_* window's first page walks this index
            # newest first within the creation range the window implies, filtering on
            # started_at in the index (PostgreSQL underestimates a window ~14× and would
            # otherwise sort all of it for its top 20: bench/README.md, fourth round).
            models.Index(
                fields=["organization", "-created_at", "-id", "started_at"],
                name="call_org_created",
            ),
            # The other filters' columns ride along too: a page filtered on more than
            # the index's own column checks the rest in the index, so calls that do not
            # match (a burst of recent calls in another status) cost an index entry each
            # rather than a table row (bench/README.md, ninth round).
            models.Index(
                fields=["organization", "status", "-created_at", "-id", "started_at"],
                name="call_org_status",
            ),
            models.Index(
                fields=["organization", "user_id", "-created_at", "-id", "status", "started_at"],
                name="call_org_user",
            ),
            models.Index(
                fields=["organization", "workflow", "-created_at", "-id", "status", "started_at"],
                name="call_org_workflow",
            ),
            # A started_* window is a range of these, alone or with workflow_id; the
            # ordering columns ride along so the count and the page's ids come from the
            # index alone (calls.listing.CallListing). Key columns rather than INCLUDE,
            # which SQLite lacks.
            models.Index(
                fields=["organization", "started_at", "created_at", "id"],
                name="call_org_started_order",
            ),
            models.Index(
                # status too: a window's count by workflow and status reads the index alone.
                fields=["organization", "workflow", "started_at", "created_at", "id", "status"],
                name="call_org_workflow_started",
            ),
            # The analysis filters (calls.filters), with the other filters' columns as
            # above; only analysed calls are in them. A verdict exists only for a
            # completed analysis, so `success` implies that status: the condition
            # PostgreSQL needs to use the index for `success=false` (`NOT col`).
            models.Index(
                fields=[
                    "organization",
                    "analysis_status",
                    "-created_at",
                    "-id",
                    "workflow",
                    "status",
                    "started_at",
                ],
                name="call_org_analysis_status",
                condition=models.Q(analysis_status__isnull=False),
            ),
            models.Index(
                fields=[
                    "organization",
                    "analysis_success",
                    "-created_at",
                    "-id",
                    "workflow",
                    "status",
                    "started_at",
                ],
                name="call_org_analysis_success",
                condition=models.Q(analysis_status="completed"),
            ),
            # A verdict within one workflow: the index above walks every verdict of the
            # organization to find a workflow's (all of them for a workflow that asks
            # for no analysis); here they are one range.
            models.Index(
                fields=[
                    "organization",
                    "workflow",
                    "analysis_success",
                    "-created_at",
                    "-id",
                    "status",
                    "started_at",
                ],
                name="call_org_workflow_success",
                condition=models.Q(analysis_status="completed"),
            ),
            # The direction filter: either direction may be an organization's rare one
            # (an inbound line's few outbound calls, a campaign's few callbacks), and
            # its count reads this index alone; the other filters' columns ride along.
            models.Index(
                fields=[
                    "organization",
                    "direction",
                    "-created_at",
                    "-id",
                    "workflow",
                    "status",
                    "end_reason",
                    "started_at",
                ],
                name="call_org_direction",
            ),
            # The end_reason filter: a rare reason (`busy`, `no_answer`) is one range
            # rather than a walk of the organization's history. Set when a call ends,
            # so creating a call never writes it.
            models.Index(
                fields=[
                    "organization",
                    "end_reason",
                    "-created_at",
                    "-id",
                    "direction",
                    "workflow",
                    "status",
                    "started_at",
                ],
                name="call_org_end_reason",
                condition=models.Q(end_reason__isnull=False),
            ),
            # Across organizations (the admin's call list, search and dashboard, staff
            # only): newest first; the started_at date hierarchy's first/last, probes and
            # drilled-down list (calls.admin); a user's calls.
            # status and end_reason ride along for the dashboard's counts (key columns
            # rather than INCLUDE, which SQLite lacks).
            models.Index(
                fields=["-created_at", "-id", "status", "end_reason"], name="call_created"
            ),
            models.Index(fields=["-started_at", "-id"], name="call_started"),
            models.Index(fields=["user_id", "-created_at", "-id"], name="call_user"),
            # Calls not yet ended are a tiny fraction: a partial index serves
            # /calls/active and expire_calls.
            models.Index(
                fields=["organization", "-created_at", "-id"],
                name="call_not_ended",
                condition=models.Q(status__in=["pending", "connecting", "active"]),
            ),
            # Retention (privacy.retention): an organization's ended calls not yet
            # expired, oldest end first. Expired calls leave the index, so each pass
            # reads only what it expires.
            models.Index(
                fields=["organization", "ended_at"],
                name="call_transcript_retention",
                condition=models.Q(ended_at__isnull=False, transcript_expired_at__isnull=True),
            ),
            models.Index(
                fields=["organization", "ended_at"],
                name="call_user_data_retention",
                condition=models.Q(ended_at__isnull=False, user_data_expired_at__isnull=True),
            ),
            # A person's phone number (calls.selectors.calls_with_number): the callee of
            # outbound phone calls, the caller of inbound ones. The number first: the
            # admin's search looks it up across organizations, an erasure within one.
            models.Index(
                fields=["phone_number", "organization"],
                name="call_callee",
                condition=models.Q(channel="phone", direction="outbound"),
            ),
            models.Index(
                fields=["from_number", "organization"],
                name="call_caller",
                condition=models.Q(channel="phone", direction="inbound"),
            ),
            # Outbound phone calls of an organization today: its daily cap (telephony.guard).
            models.Index(
                fields=["organization", "-created_at"],
                name="call_org_outbound_created",
                condition=models.Q(channel="phone", direction="outbound"),
            ),
            # And its transfers today (to numbers: the cap counts those too); a few calls.
            models.Index(
                fields=["organization", "hangup_requested_at"],
                name="call_org_transfers",
                condition=models.Q(transfer_destination__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def user_identity(self) -> str:
        """The end user's LiveKit identity: what their token carries, or an inbound
        caller's SIP participant."""
        return self.participant_identity or f"{USER_IDENTITY_PREFIX}{self.id}"

    @property
    def monitor_identity(self) -> str:
        """A phone call's listen-only observer (the callee is `user-<id>`)."""
        return f"{MONITOR_IDENTITY_PREFIX}{self.id}"

    @property
    def is_phone(self) -> bool:
        return self.channel == CallChannel.PHONE

    @property
    def is_ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def duration_seconds(self) -> int | None:
        return duration_between(self.started_at, self.ended_at)

    def metrics(self) -> dict:
        def mean(total: float, count: int) -> int | None:
            return round(total / count) if count else None

        return {
            "duration_seconds": self.duration_seconds,
            "stt_latency_ms": mean(self.stt_latency_ms_sum, self.stt_latency_count),
            "llm_latency_ms": mean(self.llm_latency_ms_sum, self.llm_latency_count),
            "tts_latency_ms": mean(self.tts_latency_ms_sum, self.tts_latency_count),
            "total_tokens": self.total_tokens,
            "agent_handoffs": self.agent_handoffs,
            "eou_latency_ms": mean(self.eou_latency_ms_sum, self.eou_latency_count),
            "e2e_latency_ms": mean(self.e2e_latency_ms_sum, self.e2e_latency_count),
        }
