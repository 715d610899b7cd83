"""Running the worker's own job (`agent.worker.CallJob`) against the live API, with
stand-ins only for what is outside it: the LiveKit server (tests/fake_livekit.py, the
web service's Twirp stand-in, which records DeleteRoom), the job process around the
entrypoint (a real, not fake, `JobContext`), the providers' plugins, and room audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession, JobContext, JobProcess, room_io
from livekit.agents.job import (
    JobAcceptArguments,
    JobExecutorType,
    RunningJobInfo,
    _JobContextVar,
)
from livekit.agents.utils import http_context
from livekit.protocol import agent as agent_proto
from livekit.protocol import models

from agent.call import CallRuntime
from agent.config import Config
from agent.providers import check_component
from agent.tests.conftest import Web
from agent.tests.scripted_llm import ScriptedLLM
from agent.tests.voice import ScriptedSTT, ScriptedTTS, SilentMic, Speaker
from agent.worker import CallJob

SIP = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
NUMBER = "+14155550123"  # the callee of the tests' outbound phone calls


class _NoInference:
    async def do_inference(self, method: str, data: bytes) -> bytes | None:
        raise NotImplementedError


@dataclass
class LiveJob:
    """A job as the worker's job process runs it: `ctx.shutdown(reason)` is recorded,
    then `finish()` runs the shutdown callbacks as the process does."""

    ctx: JobContext
    shutdowns: list[str] = field(default_factory=list)

    async def finish(self, timeout: float = 20.0) -> str:
        await wait_until(lambda: self.shutdowns, timeout=timeout)
        for callback in self.ctx._shutdown_callbacks:
            await callback(self.shutdowns[0])
        return self.shutdowns[0]


@contextlib.asynccontextmanager
async def live_job(
    *,
    room_name: str,
    call_id: str | None = None,
    metadata: str | None = None,
    room: rtc.Room | None = None,
) -> AsyncIterator[LiveJob]:
    """A real JobContext for a dispatch into `room_name` (not a fake job: its
    `delete_room` asks LiveKit, here the fake server LIVEKIT_URL points at), with the
    API's metadata for `call_id`, or `metadata` as a dispatch rule gives it; its room
    is `room` (a stand-in) or one that never connects."""
    job = agent_proto.Job(
        id=f"AJ_{room_name[-8:]}",
        room=models.Room(name=room_name, sid="RM_tests"),
        type=agent_proto.JobType.JT_ROOM,
        metadata=metadata if metadata is not None else json.dumps({"call_id": call_id}),
    )
    info = RunningJobInfo(
        accept_arguments=JobAcceptArguments(identity="agent-tests", name="", metadata=""),
        job=job,
        url="",
        token="",
        worker_id="tests",
        fake_job=False,
    )
    live = LiveJob(ctx=None)  # type: ignore[arg-type]
    proc = JobProcess(executor_type=JobExecutorType.THREAD, user_arguments=None, http_proxy=None)
    proc.userdata["vad"] = None
    live.ctx = JobContext(
        proc=proc,
        info=info,
        room=room or rtc.Room(),
        on_connect=lambda: None,
        on_shutdown=live.shutdowns.append,
        inference_executor=_NoInference(),  # type: ignore[arg-type]
    )
    token = _JobContextVar.set(live.ctx)
    try:
        async with http_context.open():
            yield live
    finally:
        _JobContextVar.reset(token)


class Room(rtc.EventEmitter):
    """A call's room as the agent sees it, driven as LiveKit SIP would: remote
    participants and their events, and the agent's own participant, which records the
    DTMF tones it publishes as `(code, digit)`."""

    def __init__(self) -> None:
        super().__init__()
        self.remote_participants: dict[str, SimpleNamespace] = {}
        self.dtmf: list[tuple[int, str]] = []
        self.local_participant = SimpleNamespace(publish_dtmf=self._publish_dtmf)

    async def _publish_dtmf(self, *, code: int, digit: str) -> None:
        self.dtmf.append((code, digit))

    def join(
        self,
        identity: str,
        *,
        kind: int = SIP,
        status: str = "dialing",
        attributes: dict[str, str] | None = None,
    ) -> None:
        if attributes is None and kind == SIP:
            attributes = {"sip.callStatus": status, "sip.phoneNumber": NUMBER}
        participant = SimpleNamespace(identity=identity, kind=kind, attributes=attributes or {})
        self.remote_participants[identity] = participant
        self.emit("participant_connected", participant)

    def call_status(self, identity: str, status: str) -> None:
        participant = self.remote_participants[identity]
        participant.attributes["sip.callStatus"] = status
        self.emit("participant_attributes_changed", ["sip.callStatus"], participant)

    def leave(self, identity: str) -> None:
        self.emit("participant_disconnected", self.remote_participants.pop(identity))

    def listeners(self) -> int:
        return sum(len(callbacks) for callbacks in self._events.values())


class ConnectedRoom(rtc.Room):
    """The job's room as a connected one looks to livekit-agents' RoomIO; what the
    agent's participant sends to the room's other participants is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str | None, object]] = []

        async def send_bytes(data: bytes, **kwargs: object) -> None:
            self.sent.append((kwargs.get("topic"), kwargs.get("destination_identities")))

        async def set_attributes(attributes: dict) -> None:
            pass

        self._agent = SimpleNamespace(
            identity="agent-tests",
            sid="PA_tests",
            name="",
            kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
            attributes={},
            send_bytes=send_bytes,
            set_attributes=set_attributes,
        )

    async def connect(self, *args: object, **kwargs: object) -> None:
        pass

    def isconnected(self) -> bool:
        return True

    @property
    def local_participant(self):  # type: ignore[override]
        return self._agent

    def listens_to(self, topic: str) -> bool:
        return topic in self._byte_stream_handlers


def no_room_media(identity: str) -> room_io.RoomOptions:
    """RoomIO linked to `identity`, its audio and text left to the tests' stand-ins."""
    return room_io.RoomOptions(
        participant_identity=identity,
        audio_input=False,
        audio_output=False,
        text_input=False,
        text_output=False,
    )


CALLER = "+12025550177"  # who calls the tests' inbound numbers


@dataclass
class DialIn:
    """An inbound call as LiveKit's SIP service makes it: the caller's room, their SIP
    participant in it (`room`, the agent's view), and the dispatch's metadata."""

    room_name: str
    identity: str
    metadata: str
    room: Room


def dial_in(fake_livekit: Any, number: str, *, caller: str = CALLER) -> DialIn:
    """`caller` dials `number`: the LiveKit stand-in finds the number's dispatch rule,
    makes the room with the caller in it and dispatches the agent."""
    room_name, identity = fake_livekit.inbound_call(to=number, caller=caller)
    metadata = next(m for r, _, m in fake_livekit.agent_dispatches if r == room_name)
    rule = next(r for r in fake_livekit.dispatch_rules.values() if number in r.numbers)
    room = Room()
    room.join(
        identity,
        attributes={
            "sip.callStatus": "active",
            "sip.phoneNumber": caller,
            "sip.trunkPhoneNumber": number,
            "sip.trunkID": rule.trunk_ids[0],
        },
    )
    return DialIn(room_name, identity, metadata, room)


class Providers:
    """Stand-ins for the provider plugins `agent.providers.build_component` builds: one
    per (component, provider), each checked as the real builder checks its config.
    `builds` records what the worker asked for: provider, key and language."""

    def __init__(self, *, llm: ScriptedLLM | None = None, **by_provider: Any) -> None:
        self.stt = ScriptedSTT()
        self.tts = ScriptedTTS()
        self.speaker = Speaker()
        self.llm = llm or ScriptedLLM([])
        # "llm_openai": instance; otherwise the defaults above serve every provider.
        self.by_provider = by_provider
        self.builds: list[tuple[str, str, str, str | None]] = []

    def build(self, component: str, config: dict, language: str | None) -> Any:
        check_component(component, config)
        self.builds.append((component, config["provider"], config["api_key"], language))
        default = getattr(self, component)
        return self.by_provider.get(f"{component}_{config['provider']}", default)


class TextProviders(Providers):
    """A text-only call: the model alone, no STT or TTS."""

    def build(self, component: str, config: dict, language: str | None) -> Any:
        built = super().build(component, config, language)
        return built if component == "llm" else None


def config_for(web: Web) -> Config:
    return Config(api_url=web.base_url, agent_key=web.agent_key)


def call_job(web: Web, live: LiveJob, call_id: str, providers: Providers, **kwargs: Any) -> CallJob:
    return CallJob(
        live.ctx, config=config_for(web), call_id=call_id, build=providers.build, **kwargs
    )


async def start_voice_call(job: CallJob, providers: Providers) -> tuple[CallRuntime, AgentSession]:
    """The job's call with the voice pipeline: the caller's speech comes from the STT
    stand-in (no VAD model here, so its end of speech ends the turn), the agent's from
    the TTS stand-in, played in real time."""
    runtime = await job.prepare()
    assert runtime is not None
    session = job.session(runtime, turn_detection="stt", vad=None)
    session.input.audio = SilentMic()
    session.output.audio = providers.speaker
    await job.start(runtime, session)
    return runtime, session


async def wait_until(condition: Callable[[], object], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        await asyncio.sleep(0.02)


def spoken(providers: Providers) -> list[str]:
    return list(providers.tts.spoken)


@contextlib.asynccontextmanager
async def outbound_call(
    web: Web, providers: Providers, workflow: str, room: Room | None = None
) -> AsyncIterator[tuple[CallJob, LiveJob, str]]:
    """The API's outbound phone call to NUMBER (its dial job is not run: in `room`, the
    callee's SIP participant answers as LiveKit SIP's would), its session started: the
    job, the job process and the room's name."""
    created = web.create_call(
        workflow_slug=workflow, phone_number=NUMBER, user_data={"name": "Ada"}
    )
    call_id = created["call_id"]
    room = room or Room()
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        job.room = room
        runtime = await job.prepare()
        assert (runtime.channel, runtime.direction) == ("phone", "outbound")
        room.join(f"user-{call_id}", status="active")
        assert await job.wait_for_user(runtime, room)
        session = job.session(runtime, turn_detection="stt", vad=None)
        session.input.audio = SilentMic()
        session.output.audio = providers.speaker
        await job.start(runtime, session)
        yield job, live, created["room_name"]
