"""Stand-ins for what a voice call has outside the worker: the caller's microphone and
ears (room audio), and the STT and TTS providers. With them a real `AgentSession`
runs its whole voice pipeline offline — turn detection on the STT's end of speech,
interruptions, TTS synthesis and playout in real time — and reports the timings
(end of utterance, end to end) a real call does.

- `SilentMic`: room audio in, 10 ms of silence at a time (the STT decides what is said).
- `ScriptedSTT`: hears what the test says the caller says (`stt.hear("hello")`), and
  reports the seconds it heard as usage, as providers' streaming STTs do.
- `ScriptedTTS`: synthesizes silence, `SECONDS_PER_CHAR` per character of text.
- `Speaker`: room audio out, played in real time, so the agent's speech takes as long
  as it would and can be cut off.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from livekit import rtc
from livekit.agents import APIConnectOptions, APIStatusError, io, stt, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

SAMPLE_RATE = 16000
SECONDS_PER_CHAR = 0.02


class SilentMic(io.AudioInput):
    def __init__(self) -> None:
        super().__init__(label="silent-mic")

    async def __anext__(self) -> rtc.AudioFrame:
        await asyncio.sleep(0.01)
        return rtc.AudioFrame(b"\x00\x00" * 160, SAMPLE_RATE, 1, 160)


class ScriptedSTT(stt.STT):
    def __init__(self, *, provider: str = "tests", model: str = "scripted-stt") -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self._provider = provider
        self._model = model
        self._streams: list[_ScriptedRecognition] = []
        self.languages: list[str | None] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        return self._provider

    def hear(self, text: str, *, speaking: float = 0.3) -> None:
        """The caller says `text`, speaking for `speaking` seconds."""
        self._streams[-1].utterances.put_nowait((text, speaking))

    async def _recognize_impl(
        self,
        buffer: object,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("streaming only")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        stream = _ScriptedRecognition(stt=self, conn_options=conn_options)
        self._streams.append(stream)
        return stream


class _ScriptedRecognition(stt.RecognizeStream):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.utterances: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

    async def _run(self) -> None:
        async def discard_audio() -> None:
            async for _ in self._input_ch:
                pass

        listening = asyncio.create_task(discard_audio())
        try:
            while True:
                text, speaking = await self.utterances.get()
                self._event_ch.send_nowait(
                    stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH)
                )
                await asyncio.sleep(speaking)
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                        alternatives=[stt.SpeechData(language="en", text=text)],
                    )
                )
                self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.RECOGNITION_USAGE,
                        recognition_usage=stt.RecognitionUsage(audio_duration=speaking),
                    )
                )
        finally:
            listening.cancel()


class RefusingSTT(ScriptedSTT):
    """A provider that refuses the key: every stream fails at once, not retryable (as a
    401 is), and livekit-agents opens a new one half a second later."""

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _RefusedRecognition(stt=self, conn_options=conn_options)


class _RefusedRecognition(stt.RecognizeStream):
    async def _run(self) -> None:
        raise APIStatusError("scripted STT error 401", status_code=401, retryable=False)


class ScriptedTTS(tts.TTS):
    def __init__(
        self, *, provider: str = "tests", model: str = "scripted-tts", ttfb: float = 0.0
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
        )
        self._provider = provider
        self._model = model
        self.ttfb = ttfb  # before the first audio, as a provider takes (0.2 s is usual)
        self.spoken: list[str] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        return self._provider

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.spoken.append(text)
        return _Synthesis(tts=self, input_text=text, conn_options=conn_options)


class _Synthesis(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        assert isinstance(self._tts, ScriptedTTS)
        await asyncio.sleep(self._tts.ttfb)
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        samples = int(len(self.input_text) * SECONDS_PER_CHAR * SAMPLE_RATE)
        output_emitter.push(b"\x00\x00" * samples)
        output_emitter.flush()


class Speaker(io.AudioOutput):
    """Plays what it captures in real time: a segment ends when its audio has played,
    or at once when the agent is interrupted (`clear_buffer`)."""

    def __init__(self) -> None:
        super().__init__(
            label="speaker",
            capabilities=io.AudioOutputCapabilities(pause=False),
            sample_rate=SAMPLE_RATE,
        )
        self._queued = 0.0
        self._started_at: float | None = None
        self._finish: asyncio.TimerHandle | None = None
        # (when each segment stopped playing, whether it was cut off)
        self.finished: list[tuple[float, bool]] = []

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._started_at is None:
            self._started_at = time.time()
            self.on_playback_started(created_at=self._started_at)
        self._queued += frame.duration

    def flush(self) -> None:
        super().flush()
        if self._started_at is None:
            return
        remaining = max(0.0, self._started_at + self._queued - time.time())
        self._finish = asyncio.get_running_loop().call_later(remaining, self._finished, False)

    def clear_buffer(self) -> None:
        if self._started_at is not None:
            self._finished(True)

    def _finished(self, interrupted: bool) -> None:
        if self._finish is not None:
            self._finish.cancel()
            self._finish = None
        if self._started_at is None:
            return
        now = time.time()
        played = min(self._queued, now - self._started_at)
        self._started_at, self._queued = None, 0.0
        self.finished.append((now, interrupted))
        self.on_playback_finished(playback_position=played, interrupted=interrupted)
