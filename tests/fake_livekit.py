"""A fake LiveKit *server* for tests: RoomService, AgentDispatchService, SIP and Egress
over Twirp, on a loopback port.

It speaks what livekit-api's Twirp client sends: `POST /twirp/livekit.<Service>/
<Method>` with a protobuf body (JSON bodies are accepted too) and `Authorization:
Bearer <JWT>`, which it verifies with the API secret and checks for the grant each
method needs. Errors are Twirp JSON (`{"code", "msg", "meta"}`). It keeps rooms and
their participants, records every request, and fails on demand: `fail("DeleteRoom",
"500" | "503" | "not_found" | "hang")`.

Dialing (`CreateSIPParticipant`) plays the outcome scripted for the number
(`sip_outcomes`, tests/fake_livekit_sip.py) and sends the webhooks a real server would
to `webhook_sink` (the SIP participant joining while it rings, leaving when the call
fails) before it answers the dial. A room composite egress (tests/fake_livekit_egress.py)
uploads a real OGG file to the S3 stand-in and sends the egress webhooks once the test
lets it run (`egress_run()`), after answering.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from livekit import api

from tests import fake_livekit_egress as egress
from tests import fake_livekit_sip as sip

METHODS = {
    # method: (request class, response class, grant the token must carry)
    "DeleteRoom": (api.DeleteRoomRequest, api.DeleteRoomResponse, "room_create"),
    "ListRooms": (api.ListRoomsRequest, api.ListRoomsResponse, "room_list"),
    "ListParticipants": (api.ListParticipantsRequest, api.ListParticipantsResponse, "room_admin"),
    **sip.METHODS,
    **egress.METHODS,
}
SERVICES = {"RoomService", "AgentDispatchService", "SIP", "Egress"}
PREFIX = "/twirp/livekit."


@dataclass
class RecordedRequest:
    method: str
    body: dict
    identity_ok: bool


@dataclass
class FakeLiveKit(sip.SipMixin, egress.EgressMixin):
    api_key: str
    api_secret: str
    rooms: dict[str, list[str]] = field(default_factory=dict)  # room name → identities
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # method → mode
    hang_seconds: float = 5.0
    url: str = ""
    _release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # SIP (tests/fake_livekit_sip.py): scripted outcome per dialed number, trunks, and
    # where the webhooks go (a callable taking the body and its Authorization).
    sip_outcomes: dict[str, sip.SipOutcome] = field(default_factory=dict)
    transfer_outcomes: dict[str, sip.SipOutcome] = field(default_factory=dict)  # by transfer_to
    # How a transfer that went through is answered (tests/fake_livekit_sip.py): "empty"
    # as released servers do, "reported" as the newest fills it, "failed" a status
    # saying it failed without an error.
    transfer_answer: str = "empty"
    trunks: dict[str, str] = field(default_factory=dict)  # LiveKit trunk id → direction
    trunk_infos: dict[str, object] = field(default_factory=dict)  # as LiveKit lists them
    dispatch_rules: dict[str, api.SIPDispatchRuleInfo] = field(default_factory=dict)
    # Agents dispatch rules sent into rooms: (room, agent name, metadata).
    agent_dispatches: list[tuple[str, str, str]] = field(default_factory=list)
    webhook_sink: object = None
    on_ringing: object = None
    _cancels: dict[str, threading.Event] = field(default_factory=dict)
    # Egress (tests/fake_livekit_egress.py): every egress started, how the next ones
    # end, the file they upload, and what they uploaded where with which access key.
    egresses: dict[str, api.EgressInfo] = field(default_factory=dict)
    egress_outcome: str = "complete"
    egress_error: str = "Start signal not received"
    egress_file: bytes = field(default_factory=egress.default_file)
    egress_uploads: list[dict] = field(default_factory=list)
    _egress_jobs: list = field(default_factory=list)
    # Called with the new egress's info before StartRoomCompositeEgress answers (on the
    # server's thread): what happens meanwhile on our side.
    on_egress_start: object = None
    # Called with a request's method name before it is answered (on the server's
    # thread): what happens on our side while LiveKit works on it.
    on_request: object = None
    # ListEgress of every room pages by this many (newer servers page); None: one page.
    # `egress_paging` scripts a server gone wrong: "lost" answers a page token NOT_FOUND,
    # "circles" gives the same token for ever.
    egress_page_size: int | None = None
    egress_paging: str = "ok"

    def fail(self, method: str, mode: str) -> None:
        """Make every later request to `method` fail: "500", "503", "not_found" or "hang"."""
        self.failures[method] = mode

    def add_room(self, name: str, identities: list[str] | None = None) -> None:
        self.rooms[name] = list(identities or [])

    def calls(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method]

    # --- request handling (runs on the server's threads) ---

    def handle(self, method: str, headers: dict, raw: bytes) -> tuple[int, str, bytes]:
        if method not in METHODS:
            return _error(404, "bad_route", f"no handler for {method}")
        request_class, response_class, grant = METHODS[method]
        as_json = headers.get("content-type", "").startswith("application/json")
        try:
            message = (
                json_format.Parse(raw.decode(), request_class())
                if as_json
                else request_class.FromString(raw)
            )
        except Exception:
            return _error(400, "malformed", "bad body")
        auth = headers.get("authorization", "")
        try:
            claims = api.TokenVerifier(self.api_key, self.api_secret).verify(
                auth.removeprefix("Bearer ")
            )
            scope, _, name = grant.rpartition(".")
            grants = claims.sip if scope == "sip" else claims.video
            authorized = bool(getattr(grants, name, False))
        except Exception:
            authorized = False
        with self._lock:
            self.requests.append(
                RecordedRequest(method, json_format.MessageToDict(message), authorized)
            )
        if not authorized:
            return _error(401, "unauthenticated", "invalid token")
        if self.on_request is not None:
            self.on_request(method)
        mode = self.failures.get(method)
        if mode == "hang":
            self._release.wait(self.hang_seconds)
            return _error(503, "unavailable", "hung")
        if mode == "500":
            return _error(500, "internal", "boom")
        if mode == "503":
            return _error(503, "unavailable", "LiveKit is unavailable")
        if mode == "not_found":
            return _error(404, "not_found", "requested room does not exist")
        response = getattr(self, f"_{method}")(message, response_class)
        if response is None:
            return _error(404, "not_found", "requested room does not exist")
        if isinstance(response, tuple):  # an error the method chose (SIP failures)
            return response
        if as_json:
            return 200, "application/json", json_format.MessageToJson(response).encode()
        return 200, "application/protobuf", response.SerializeToString()

    def _DeleteRoom(self, message, response_class):
        with self._lock:
            cancel = self._cancels.get(message.room)
            if cancel is not None:
                cancel.set()  # a phone still ringing in the room stops ringing
            if self.rooms.pop(message.room, None) is None:
                return None
        return response_class()

    def _ListRooms(self, message, response_class):
        with self._lock:
            names = [n for n in self.rooms if not message.names or n in message.names]
        return response_class(rooms=[api.Room(name=n, sid=f"RM_{n[-8:]}") for n in names])

    def _ListParticipants(self, message, response_class):
        """A room LiveKit does not have lists nobody, not NOT_FOUND (livekit/livekit
        pkg/service/roomservice.go ListParticipants, localstore.go/redisstore.go)."""
        with self._lock:
            identities = self.rooms.get(message.room, [])
        return response_class(
            participants=[
                # LiveKit names an agent's participant `agent-<job id>`, of kind AGENT.
                api.ParticipantInfo(
                    identity=i,
                    sid=f"PA_{i[-8:]}",
                    kind=api.ParticipantInfo.Kind.AGENT
                    if i.startswith("agent-")
                    else api.ParticipantInfo.Kind.STANDARD,
                )
                for i in identities
            ]
        )

    def stop(self) -> None:
        self._release.set()


def _error(status: int, code: str, msg: str, meta: dict | None = None) -> tuple[int, str, bytes]:
    body = {"code": code, "msg": msg, **({"meta": meta} if meta else {})}
    return status, "application/json", json.dumps(body).encode()


def start(api_key: str, api_secret: str, port: int = 0) -> tuple[FakeLiveKit, ThreadingHTTPServer]:
    fake = FakeLiveKit(api_key=api_key, api_secret=api_secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            service, _, method = self.path.removeprefix(PREFIX).partition("/")
            if not self.path.startswith(PREFIX) or service not in SERVICES:
                status, content_type, body = _error(404, "bad_route", self.path)
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, content_type, body = fake.handle(method, headers, raw)
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before we answered

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake, server


def main() -> None:
    """Serve the fake on a fixed loopback port, for a live server beside it (API fuzzing):
    `python -m tests.fake_livekit --port 7880`. Key and secret: LIVEKIT_API_KEY/SECRET,
    else LiveKit's dev defaults."""
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=7880)
    args = parser.parse_args()
    fake, server = start(
        os.environ.get("LIVEKIT_API_KEY", "devkey"),
        os.environ.get("LIVEKIT_API_SECRET", "secret"),
        port=args.port,
    )
    print(f"fake LiveKit on {fake.url}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    fake.stop()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
