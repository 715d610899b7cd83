"""The soak's LiveKit: tests/fake_livekit.py's Twirp stand-in, plus the webhooks a real
LiveKit server sends about each room, sent the way LiveKit sends them.

Per room, in order (one sender per room at a time); each retried on failure about four
times while younger than 30 s, then dropped, as LiveKit does; some sent twice (same
event id); some held back past 30 s first. A room's final webhooks can be dropped on
purpose (`drop`), so reconciliation must end its call.

The generator drives it over a small control API on a second port:
  POST /join   {"room", "user", "agent"}   the user and the agent joined (no "agent": the
                                           user alone, no agent ever comes)
  POST /agent_leave {"room", "agent", "reason"}   the agent left; the user stays
  POST /leave  {"room", "user", "agent", "reason", "drop"}   the user left, room closed
  POST /delete {"room"}                    the agent deleted the room (its hang-up)
  POST /fail   {"seconds"}                 the Twirp API answers 503 meanwhile
  GET  /stats                              what was sent, duplicated, delayed, dropped

    python -m soak.livekit --port N --control-port M --webhook-url URL --seed S
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from livekit import api

from tests import fake_livekit

TWIRP_METHODS = ("DeleteRoom", "ListRooms", "ListParticipants")
DROP_AFTER_SECONDS = 30.0
RETRY_WAITS = (0.5, 1.0, 2.0, 4.0)


class WebhookSender:
    """Per-room queues of LiveKit webhooks, each drained by one thread at a time."""

    def __init__(self, *, url: str, key: str, secret: str, seed: int) -> None:
        self.url, self.key, self.secret = url, key, secret
        self.rng = random.Random(seed)
        self.duplicate_rate, self.delay_rate = 0.05, 0.02
        self.queues: dict[str, deque[dict]] = {}
        self.lock = threading.Lock()
        self.stats = {"sent": 0, "duplicated": 0, "delayed": 0, "retried": 0, "dropped": 0}
        self.given_up: list[dict] = []  # events LiveKit gave up on (not on purpose)
        self.dropped_rooms: list[str] = []  # rooms whose final webhooks were dropped
        # Attempts the fleet failed (5xx, no answer, 4xx), for the fault-window check.
        self.failures: list[dict] = []

    def enqueue(self, room: str, events: list[dict]) -> None:
        with self.lock:
            queue = self.queues.get(room)
            start = queue is None
            if start:
                queue = self.queues[room] = deque()
            queue.extend(events)
        if start:
            threading.Thread(target=self._drain, args=(room,), daemon=True).start()

    def _drain(self, room: str) -> None:
        while True:
            with self.lock:
                queue = self.queues[room]
                if not queue:
                    del self.queues[room]
                    return
                event = queue.popleft()
                delayed = self.rng.random() < self.delay_rate
                duplicated = self.rng.random() < self.duplicate_rate
            if delayed:
                self._count("delayed")
                time.sleep(DROP_AFTER_SECONDS + 1 + self.rng.random() * 5)
            self._deliver(event)
            if duplicated:
                self._count("duplicated")
                self._deliver(event)

    def _count(self, name: str) -> None:
        with self.lock:
            self.stats[name] += 1

    def _deliver(self, event: dict) -> None:
        body = json.dumps(event)
        first = time.monotonic()
        for wait in (*RETRY_WAITS, None):
            sent_at = time.time()
            status = self._post(body)
            if 200 <= status < 300:
                self._count("sent")
                return
            with self.lock:
                self.failures.append(
                    {"t": sent_at, "ms": (time.time() - sent_at) * 1000, "status": status}
                )
            if wait is None or time.monotonic() - first + wait > DROP_AFTER_SECONDS:
                break
            self._count("retried")
            time.sleep(wait)
        with self.lock:
            self.given_up.append({"room": event["room"]["name"], "event": event["event"]})

    def _post(self, body: str) -> int:
        """The answer's status; 0 when none came."""
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        token = api.AccessToken(self.key, self.secret).with_sha256(digest).to_jwt()
        request = urllib.request.Request(
            self.url,
            data=body.encode(),
            headers={"Content-Type": "application/webhook+json", "Authorization": token},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, OSError):
            return 0


def webhook(event: str, room: str, identity: str | None = None, **extra: str) -> dict:
    """A webhook body shaped like LiveKit's (tests/data/livekit/*.json)."""
    payload: dict = {
        "event": event,
        "room": {"sid": f"RM_{uuid.uuid5(uuid.NAMESPACE_URL, room).hex[:12]}", "name": room},
        "id": f"EV_{uuid.uuid4().hex[:16]}",
        "createdAt": str(int(time.time())),
    }
    if identity is not None:
        payload["participant"] = {
            "sid": f"PA_{uuid.uuid5(uuid.NAMESPACE_URL, identity).hex[:12]}",
            "identity": identity,
            "state": "DISCONNECTED" if event == "participant_left" else "ACTIVE",
            "kind": "AGENT" if identity.startswith("agent-") else "STANDARD",
        }
        if "reason" in extra:
            payload["participant"]["disconnectReason"] = extra["reason"]
    return payload


class SoakLiveKit(fake_livekit.FakeLiveKit):
    """The fake whose DeleteRoom also sends the room's closing webhooks, as LiveKit does."""

    sender: WebhookSender | None = None

    def _DeleteRoom(self, message: api.DeleteRoomRequest, response_class: type) -> object:
        identities = self.rooms.get(message.room)
        response = super()._DeleteRoom(message, response_class)
        if response is not None and self.sender is not None:
            self.sender.enqueue(message.room, closing(message.room, identities or [], None))
        return response


def closing(room: str, identities: list[str], user_reason: str | None) -> list[dict]:
    """Everybody leaves (the user with `user_reason`, else ROOM_DELETED), then the room
    finishes."""
    events = [
        webhook(
            "participant_left",
            room,
            identity,
            reason=(
                user_reason if identity.startswith("user-") and user_reason else "ROOM_DELETED"
            ),
        )
        for identity in identities
    ]
    return [*events, webhook("room_finished", room)]


def control(fake: SoakLiveKit, sender: WebhookSender, path: str, body: dict) -> dict:
    """One control request (see the module's docstring)."""
    room = body.get("room", "")
    if path == "/join":
        identities = [body[k] for k in ("user", "agent") if body.get(k)]
        fake.add_room(room, identities)
        sender.enqueue(room, [webhook("participant_joined", room, i) for i in identities])
    elif path == "/agent_leave":
        with fake._lock:
            if body["agent"] in fake.rooms.get(room, []):
                fake.rooms[room].remove(body["agent"])
        sender.enqueue(
            room, [webhook("participant_left", room, body["agent"], reason=body["reason"])]
        )
    elif path == "/leave":
        with fake._lock:
            identities = fake.rooms.pop(room, None) or [body["user"], body["agent"]]
        if body.get("drop"):
            with sender.lock:
                sender.stats["dropped"] += len(identities) + 1
                sender.dropped_rooms.append(room)
        else:
            sender.enqueue(room, closing(room, identities, body["reason"]))
    elif path == "/delete":
        fake._DeleteRoom(api.DeleteRoomRequest(room=room), api.DeleteRoomResponse)
    elif path == "/fail":
        threading.Thread(target=_fail_for, args=(fake, float(body["seconds"])), daemon=True).start()
    elif path == "/stats":
        with sender.lock:
            return {
                **sender.stats,
                "given_up": list(sender.given_up),
                "failures": list(sender.failures),
                "open_queues": len(sender.queues),
            }
    return {"ok": True}


def _fail_for(fake: SoakLiveKit, seconds: float) -> None:
    for method in TWIRP_METHODS:
        fake.fail(method, "503")
    time.sleep(seconds)
    for method in TWIRP_METHODS:
        fake.failures.pop(method, None)


def serve_control(fake: SoakLiveKit, sender: WebhookSender, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            raw = json.dumps(control(fake, sender, self.path, body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(json.loads(self.rfile.read(length) or b"{}"))

        def do_GET(self) -> None:
            self._answer({})

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--webhook-url", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--key", default="devkey")
    parser.add_argument("--secret", default="secret")
    args = parser.parse_args()
    fake_livekit.FakeLiveKit = SoakLiveKit  # start() builds this class
    fake, server = fake_livekit.start(args.key, args.secret, port=args.port)
    sender = WebhookSender(url=args.webhook_url, key=args.key, secret=args.secret, seed=args.seed)
    fake.sender = sender
    serve_control(fake, sender, args.control_port)
    print(f"soak LiveKit on {fake.url}, control on {args.control_port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()


if __name__ == "__main__":
    main()
