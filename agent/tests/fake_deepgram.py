"""Deepgram's speech websockets on loopback, spoken to by the real plugins
(livekit-plugins-deepgram) over real sockets, so a provider that stops answering hangs
the way a real connection does (the plugins' own timeouts, nothing of the tests'):

- TTS, `/v1/speak`: `Speak` and `Flush` messages in; linear16 audio and `Flushed` out,
  until `hang` is set: then it reads on and never answers.
- STT, `listen_url`: a socket that accepts the connection and never completes the
  websocket handshake.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSMsgType, web

SAMPLE_RATE = 16000
SECONDS_PER_CHAR = 0.02


class FakeDeepgram:
    def __init__(self) -> None:
        self.hang = False
        # The text of each segment asked for (flushed), answered or not.
        self.spoken: list[str] = []
        self.connections = 0
        self._runner: web.AppRunner | None = None
        self._listen: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []
        self.url = self.listen_url = ""

    async def __aenter__(self) -> FakeDeepgram:
        app = web.Application()
        app.router.add_get("/v1/speak", self._speak)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1/speak"
        self._listen = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self._listen.sockets[0].getsockname()[1]
        self.listen_url = f"http://127.0.0.1:{port}/v1/listen"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        if self._listen is not None:
            self._listen.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._held.append(writer)
        while await reader.read(4096):
            pass

    async def _speak(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        words: list[str] = []
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data.get("type") == "Speak":
                words.append(data.get("text", ""))
            elif data.get("type") == "Flush" and words:
                text, words = "".join(words).strip(), []
                self.spoken.append(text)
                if self.hang:
                    continue
                samples = int(len(text) * SECONDS_PER_CHAR * SAMPLE_RATE)
                await ws.send_bytes(b"\x00\x00" * samples)
                await ws.send_str(json.dumps({"type": "Flushed"}))
            elif data.get("type") == "Close":
                break
        return ws
