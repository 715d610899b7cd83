from __future__ import annotations

import copy
import datetime

import factory
from django.db.models import F
from django.utils import timezone

from accounts.models import Organization
from calls.models import NOT_ENDED_STATUSES, Call, CallStatus, TranscriptEntry, TranscriptRole
from providerkeys.models import ProviderKey
from telephony.models import PhoneNumber
from workflows.demo import DEMO_DEFINITION
from workflows.models import Workflow, WorkflowVersion


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class WorkflowFactory(factory.django.DjangoModelFactory):
    """A workflow with one version holding the demo definition."""

    class Meta:
        model = Workflow
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    slug = factory.Sequence(lambda n: f"workflow-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())

    @factory.post_generation
    def definition(self, create: bool, extracted: dict | None, **kwargs: object) -> None:
        version = WorkflowVersion.objects.create(
            workflow=self, number=1, definition=extracted or copy.deepcopy(DEMO_DEFINITION)
        )
        self.current_version = version
        self.save(update_fields=["current_version"])


class CallFactory(factory.django.DjangoModelFactory):
    """A call inserted as it is; an open one takes its place in the organization's
    open-call counter, as `call_create` does."""

    class Meta:
        model = Call
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    workflow = factory.SubFactory(
        WorkflowFactory, organization=factory.SelfAttribute("..organization")
    )
    workflow_version = factory.LazyAttribute(lambda o: o.workflow.current_version)
    workflow_slug = factory.LazyAttribute(lambda o: o.workflow.slug)
    user_id = factory.Sequence(lambda n: f"user-{n}")
    status = CallStatus.CONNECTING
    connect_timeout_seconds = 60
    max_duration_seconds = 1800
    created_at = factory.LazyFunction(timezone.now)

    class Params:
        active = factory.Trait(
            status=CallStatus.ACTIVE,
            started_at=factory.LazyFunction(
                lambda: timezone.now() - datetime.timedelta(seconds=30)
            ),
            agent_history=["greeter-agent"],
            current_agent="greeter-agent",
            # Its agent is in the room (calls.agent_presence).
            agent_joined_at=factory.LazyAttribute(lambda o: o.started_at),
        )
        completed = factory.Trait(
            status=CallStatus.COMPLETED,
            end_reason="user_hangup",
            started_at=factory.LazyFunction(lambda: timezone.now() - datetime.timedelta(minutes=3)),
            ended_at=factory.LazyFunction(timezone.now),
            agent_history=["greeter-agent", "meal-agent"],
        )

    @factory.post_generation
    def open_calls(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create and self.status in NOT_ENDED_STATUSES:
            Organization.objects.filter(pk=self.organization_id).update(
                open_calls=F("open_calls") + 1
            )


class TranscriptEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TranscriptEntry

    call = factory.SubFactory(CallFactory)
    role = TranscriptRole.ASSISTANT
    content = factory.Faker("sentence")
    agent_name = "greeter-agent"
    timestamp = factory.LazyFunction(timezone.now)


class ProviderKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderKey

    organization = factory.SubFactory(OrganizationFactory)
    provider_type = "stt"
    provider_name = "deepgram"
    api_key = factory.Sequence(lambda n: f"sk-test-{n:08d}")
    last4 = factory.LazyAttribute(lambda o: o.api_key[-4:])
    is_default = False
    created_at = factory.LazyFunction(timezone.now)


class PhoneNumberFactory(factory.django.DjangoModelFactory):
    """An unverified number of `trunk` (an inbound trunk already in LiveKit; create it with
    `telephony.services.sip_trunk_create`), mapped to a workflow of its organization."""

    class Meta:
        model = PhoneNumber

    trunk = None
    organization = factory.LazyAttribute(lambda o: o.trunk.organization)
    number = factory.LazyAttribute(lambda o: o.trunk.numbers[0])
    workflow = factory.SubFactory(
        WorkflowFactory, organization=factory.SelfAttribute("..organization")
    )


class RecordingFactory(factory.django.DjangoModelFactory):
    """A call's recording in the platform's bucket (complete unless told otherwise)."""

    class Meta:
        model = "recordings.Recording"

    call = factory.SubFactory(CallFactory, completed=True)
    organization = factory.LazyAttribute(lambda o: o.call.organization)
    # Recorded from the call's start, as the platform records a call that became active.
    created_at = factory.LazyAttribute(lambda o: o.call.started_at or o.call.created_at)
    status = "complete"
    egress_id = factory.Sequence(lambda n: f"EG_factory{n}")
    storage = "platform"
    endpoint = ""
    bucket = "recordings"
    region = "us-east-1"
    object_key = factory.LazyAttribute(
        lambda o: f"recordings/{o.call.organization_id}/{o.call.id}/tok{o.egress_id}.ogg"
    )
    duration_seconds = 2
    size_bytes = 561
