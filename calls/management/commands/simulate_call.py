from __future__ import annotations

import json
import time
import uuid

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from rest_framework.exceptions import APIException

from accounts.models import Organization
from calls import selectors
from calls.agent_events import agent_events_record
from calls.agent_events_api import AgentEventsBatchSerializer
from calls.livekit_events import livekit_webhook_receive
from calls.models import Call, CallStatus
from calls.services import call_create, call_insert
from telephony import numbers
from telephony.dialing import dial_claim, phone_call_answered, phone_call_build
from telephony.models import PhoneNumber, PhoneNumberStatus
from telephony.selectors import outbound_numbers
from telephony.transfer import call_transfer
from voicecalls.livekit import webhook_authorization
from voicecalls.livekit_sip import INBOUND_ROOM_PREFIX
from workflows.demo import DEMO_SLUG
from workflows.selectors import workflow_call_target

# Who calls in --inbound calls (a US number reserved for fiction).
SIMULATED_CALLER = "+12025550143"


class Command(BaseCommand):
    help = "Play a whole call (signed LiveKit webhooks and agent events) without LiveKit."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, metavar="SLUG", help="Organization slug.")
        parser.add_argument("--workflow", default=DEMO_SLUG, help="Workflow slug.")
        parser.add_argument("--call", metavar="ID", help="Drive this connecting call instead.")
        parser.add_argument(
            "--phone",
            metavar="NUMBER",
            help="Play an outbound phone call to NUMBER (E.164): dialed, ringing, answered.",
        )
        parser.add_argument(
            "--inbound",
            metavar="NUMBER",
            help="Play a caller dialing NUMBER, a verified phone number of the organization.",
        )
        parser.add_argument(
            "--transfer",
            metavar="DESTINATION",
            help="With --inbound: the agent transfers the caller to DESTINATION, which the "
            "number's workflow must list in a transfer tool (LiveKit's part is played).",
        )
        parser.add_argument(
            "--pace", type=float, default=0.0, metavar="SECONDS", help="Pause between steps."
        )

    def handle(self, *args: object, **options: object) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"No organization {options['org']!r}.")
        self.pace = options["pace"]
        if options["inbound"]:
            self._inbound(organization, options["inbound"], options["transfer"])
            return
        if options["transfer"]:
            raise CommandError("--transfer needs --inbound.")
        if options["phone"]:
            call = self._phone_call(organization, options["workflow"], options["phone"])
        else:
            call = self._call(organization, options["workflow"], options["call"])
        user, agent = f"user-{call.pk}", f"agent-AJ_{uuid.uuid4().hex[:12]}"

        if call.is_phone:
            self._phone_answered(call, agent)
        else:
            self._webhook(call.room_name, "participant_joined", identity=user)
            self._webhook(call.room_name, "participant_joined", identity=agent, kind="AGENT")
        for batch in _conversation():
            self._events(call, batch)
        self._webhook(call.room_name, "participant_left", identity=user, reason="CLIENT_INITIATED")
        self._room_closes(call, agent)
        self._report(call)

    def _room_closes(self, call: Call, agent: str) -> None:
        self._webhook(
            call.room_name, "participant_left", identity=agent, kind="AGENT", reason="ROOM_DELETED"
        )
        self._webhook(call.room_name, "room_finished")

    def _report(self, call: Call) -> None:
        call.refresh_from_db()
        cost = selectors.call_cost(call=call)
        self.stdout.write(
            f"Call {call.pk}: {call.status} ({call.end_reason}), agents "
            f"{' → '.join(call.agent_history)}, {call.total_tokens} tokens, "
            f"cost {cost.total_usd if cost else None} USD."
        )
        self.stdout.write(str(call.pk))

    def _inbound(self, organization: Organization, number: str, transfer: str | None) -> None:
        """A caller dials `number`: LiveKit's dispatch rule puts them in a room of their
        own and their SIP participant's `participant_joined` creates the call; the agent
        greets them, then either transfers them (`transfer`) or they hang up."""
        if not PhoneNumber.objects.filter(
            organization=organization, number=number, status=PhoneNumberStatus.VERIFIED
        ).exists():
            raise CommandError(f"--inbound: {number} is no verified number of {organization.slug}.")
        room = f"{INBOUND_ROOM_PREFIX}_{SIMULATED_CALLER}_{uuid.uuid4().hex[:12]}"
        caller = f"sip_{SIMULATED_CALLER}"
        attributes = {
            "sip.callStatus": "active",
            "sip.phoneNumber": SIMULATED_CALLER,
            "sip.trunkPhoneNumber": number,
        }
        self._webhook(
            room, "participant_joined", identity=caller, kind="SIP", attributes=attributes
        )
        call = Call.objects.filter(room_name=room).first()
        if call is None or call.is_ended:
            raise CommandError(f"The call to {number} was not answered (see the log).")
        agent = f"agent-AJ_{uuid.uuid4().hex[:12]}"
        self._webhook(room, "participant_joined", identity=agent, kind="AGENT")
        start = call.workflow_version.start_agent
        self._events(
            call,
            [
                _line("assistant", "Hello, thanks for calling. How can I help?", start),
                _line("user", "I'd like to talk to a person, please.", start),
            ],
        )
        refused: APIException | None = None
        if transfer:
            self._events(call, [_line("assistant", "Of course, putting you through.", start)])
            try:
                call_transfer(
                    call=call,
                    destination=transfer,
                    sip_transfer=lambda **request: self._webhook(
                        room,
                        "participant_left",
                        identity=caller,
                        kind="SIP",
                        reason="CLIENT_INITIATED",
                    ),
                )
            except APIException as exc:  # refused: not listed, the guard, ...
                refused = exc
        if not transfer or refused is not None:
            # A refused transfer leaves the caller with the agent: they hang up, so the
            # simulated call ends rather than staying `active` until reconciliation.
            self._webhook(
                room, "participant_left", identity=caller, kind="SIP", reason="CLIENT_INITIATED"
            )
        self._room_closes(call, agent)
        if refused is not None:
            raise CommandError(f"--transfer: {_detail_text(refused.detail)}")
        self._report(call)

    def _call(self, organization: Organization, workflow_slug: str, call_id: str | None) -> Call:
        if call_id:
            try:
                call = Call.objects.get(pk=uuid.UUID(call_id), organization=organization)
            except (ValueError, Call.DoesNotExist) as exc:
                raise CommandError(f"No call {call_id} in {organization.slug}.") from exc
            if call.status != CallStatus.CONNECTING:
                raise CommandError(f"Call {call_id} is {call.status}, not connecting.")
            return call
        target = workflow_call_target(organization=organization, slug=workflow_slug)
        if target is None:
            raise CommandError(
                f"No workflow {workflow_slug!r} in {organization.slug} "
                f"(python manage.py load_demo --org {organization.slug})."
            )
        return call_create(
            organization=organization,
            target=target,
            user_id="simulated-user",
            user_data={"name": "John Doe"},
            metadata={"source": "simulate_call"},
        ).call

    def _phone_call(self, organization: Organization, workflow_slug: str, number: str) -> Call:
        """A `pending` outbound phone call to `number` (valid E.164, not premium-rate),
        inserted within the concurrency limit. Nothing is dialed (no LiveKit): the
        trunk, the allowed countries and the rate are not needed."""
        target = workflow_call_target(organization=organization, slug=workflow_slug)
        if target is None:
            raise CommandError(f"No workflow {workflow_slug!r} in {organization.slug}.")
        try:
            parsed = numbers.number_parse(number)
        except numbers.InvalidNumber as exc:
            raise CommandError(f"--phone: {exc.detail}") from None
        if numbers.number_is_costly(parsed):
            raise CommandError("--phone: premium-rate and shared-cost numbers are refused.")
        outbound = outbound_numbers(organization=organization)
        call = phone_call_build(
            organization=organization,
            target=target,
            phone_number=numbers.number_e164(parsed),
            from_number=organization.default_caller_number or next(iter(outbound), None),
            sip_trunk_id=None,
            user_id="simulated-callee",
            user_data={"name": "John Doe"},
            metadata={"source": "simulate_call"},
        )
        call_insert(call=call)
        return call

    def _phone_answered(self, call: Call, agent: str) -> None:
        """What the dial job and LiveKit SIP do: the agent is dispatched, the call is
        `connecting` while the callee's SIP participant joins ringing (no change),
        then the callee answers (the dial returns) and the call is `active`."""
        if dial_claim(call_id=call.pk, now=timezone.now()) is None:
            raise CommandError(f"Call {call.pk} could not be dialed.")
        self._webhook(call.room_name, "participant_joined", identity=agent, kind="AGENT")
        self._webhook(
            call.room_name,
            "participant_joined",
            identity=f"user-{call.pk}",
            kind="SIP",
            attributes={"sip.callStatus": "ringing", "sip.phoneNumber": call.phone_number},
        )
        phone_call_answered(call_id=call.pk)

    def _webhook(self, room_name: str, event: str, **participant: object) -> None:
        """Sign the event as LiveKit does and pass it through the real verification."""
        payload: dict = {
            "event": event,
            "room": {
                "sid": f"RM_{uuid.uuid5(uuid.NAMESPACE_URL, room_name).hex[:12]}",
                "name": room_name,
            },
            "id": f"EV_{uuid.uuid4().hex[:12]}",
            "createdAt": str(int(time.time())),
        }
        if participant:
            payload["participant"] = {
                "sid": f"PA_{uuid.uuid4().hex[:12]}",
                "identity": participant["identity"],
                "state": "DISCONNECTED" if event == "participant_left" else "ACTIVE",
                "kind": participant.get("kind", "STANDARD"),
            }
            if "attributes" in participant:
                payload["participant"]["attributes"] = participant["attributes"]
            if "reason" in participant:
                payload["participant"]["disconnectReason"] = participant["reason"]
        body = json.dumps(payload)
        livekit_webhook_receive(body=body.encode(), authorization=webhook_authorization(body))
        self._pause()

    def _events(self, call: Call, events: list[dict]) -> None:
        """A batch as the agent worker posts it, validated by the API's own serializer."""
        for event in events:
            event["id"] = str(uuid.uuid4())
            event["timestamp"] = timezone.now().isoformat()
        batch = AgentEventsBatchSerializer(data={"events": events})
        batch.is_valid(raise_exception=True)
        agent_events_record(call_id=call.pk, events=batch.validated_data["events"])
        self._pause()

    def _pause(self) -> None:
        if self.pace:
            time.sleep(self.pace)


def _conversation() -> list[list[dict]]:
    """The demo workflow's three agents in turn, as the agent worker would flush them:
    each stage's lines, its metrics, and at the end the usage so far."""
    return [
        [
            _line("system", "Call started", "greeter-agent"),
            _line("assistant", "Hello! How are you today?", "greeter-agent"),
            _line("user", "I'm doing well, thanks!", "greeter-agent"),
            _metrics(stt=118, llm=265, tts=82, e2e=690, tokens=420, agent="greeter-agent"),
        ],
        [
            _handoff("greeter-agent", "meal-agent"),
            _line("assistant", "Great! What did you have for breakfast?", "meal-agent"),
            _line("user", "Oatmeal with blueberries.", "meal-agent"),
            _line(
                "assistant",
                "Lovely, I'll note that down.",
                "meal-agent",
                tool_call={
                    "name": "save_meal",
                    "arguments": {
                        "meal_type": "breakfast",
                        "description": "oatmeal with blueberries",
                    },
                },
            ),
            _line("tool", '{"saved": true}', "meal-agent"),
            _metrics(stt=124, llm=301, tts=88, e2e=742, tokens=610, agent="meal-agent"),
        ],
        [
            _handoff("meal-agent", "feedback-agent"),
            _line("assistant", "How was today's call, from 1 to 5?", "feedback-agent"),
            _line("user", "A five, thank you!", "feedback-agent"),
            _line("assistant", "Thank you, talk tomorrow. Goodbye!", "feedback-agent"),
            _metrics(stt=119, llm=274, tts=85, e2e=701, tokens=470, agent="feedback-agent"),
            # The agent's usage so far, per provider and model (cumulative).
            _usage(audio_seconds=41.5, prompt=1280, cached=512, completion=220, characters=214),
        ],
    ]


def _detail_text(detail: object) -> str:
    """An API refusal's messages as plain text (DRF nests them in dicts and lists)."""
    if isinstance(detail, dict):
        return " ".join(_detail_text(value) for value in detail.values())
    if isinstance(detail, list):
        return " ".join(_detail_text(value) for value in detail)
    return str(detail)


def _line(role: str, content: str, agent: str, **extra: object) -> dict:
    return {"type": "transcript", "role": role, "content": content, "agent_name": agent, **extra}


def _handoff(from_agent: str, to_agent: str) -> dict:
    return {"type": "agent_handoff", "from_agent": from_agent, "to_agent": to_agent}


def _metrics(*, stt: int, llm: int, tts: int, e2e: int, tokens: int, agent: str) -> dict:
    return {
        "type": "metrics",
        "stt_latency_ms": stt,
        "llm_latency_ms": llm,
        "tts_latency_ms": tts,
        "e2e_latency_ms": e2e,
        "tokens": tokens,
        "agent_name": agent,
    }


def _usage(
    *, audio_seconds: float, prompt: int, cached: int, completion: int, characters: int
) -> dict:
    # The demo workflow's providers (workflows/demo.py).
    return {
        "type": "usage",
        "usage": [
            {
                "component": "stt",
                "provider": "deepgram",
                "model": "nova-3",
                "audio_seconds": audio_seconds,
            },
            {
                "component": "llm",
                "provider": "openai",
                "model": "gpt-4.1-mini",
                "prompt_tokens": prompt,
                "cached_tokens": cached,
                "completion_tokens": completion,
            },
            {
                "component": "tts",
                "provider": "cartesia",
                "model": "sonic-2",
                "characters": characters,
            },
        ],
    }
