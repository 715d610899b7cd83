"""A receiver of voicecalls webhooks with the standard library only (docs/webhooks.md).

VOICECALLS_WEBHOOK_SECRETS=whsec_... python examples/webhook_receiver.py 8080

During a secret rotation give both secrets, comma-separated, until the old one's 24 hours
are over. It checks every request's signature and time, answers at once, handles each
event once (by `webhook-id`), and keeps a call's latest status whatever order its events
arrive in. Replace `Store` with your database.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

TOLERANCE_SECONDS = 5 * 60
# A call's status only moves forward: pending → connecting → active → ended (completed,
# failed, timeout or disconnected), any step skippable. Its events' timestamps need not.
STATUS_STEP = {"pending": 0, "connecting": 1, "active": 2}
ENDED_STEP = 3


class Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


def verify(secrets: list[str], headers: Headers, body: bytes, now: float | None = None) -> bool:
    """True when `body` was signed by voicecalls with one of `secrets` less than five
    minutes from `now`. `headers` must look names up case-insensitively (as http.server's,
    Django's, Flask's do) or hold them in lower case."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp") or ""
    signatures = (headers.get("webhook-signature") or "").split()
    if not msg_id or not timestamp.isascii() or not timestamp.isdigit() or not signatures:
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        return False  # a replay of an old request, or a clock far off
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for secret in secrets:
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            continue
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        expected = b"v1," + base64.b64encode(digest)
        if any(hmac.compare_digest(expected, s.encode()) for s in signatures):
            return True
    return False


class Store:
    """What the receiver keeps (in memory here). Keep event ids for at least a week:
    retries go on for about three days, and staff may replay an event later."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handled: set[str] = set()
        # call id → {"status", "end_reason", "report", "analysis", "analysis_at"}
        self.calls: dict[str, dict[str, Any]] = {}

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one event, once; events of a call may come in any order."""
        with self.lock:
            if event["id"] in self.handled:
                return  # a retry, or a replay, of an event already handled
            data = event["data"]
            if event["type"] == "call.status_changed":
                call = self.calls.setdefault(data["call_id"], {})
                if _step(data["to_status"]) > _step(call.get("status")):  # else out of date
                    call.update(status=data["to_status"], end_reason=data["end_reason"])
            elif event["type"] == "call.ended":
                report = data["call"]
                call = self.calls.setdefault(report["id"], {})
                call.update(status=report["status"], end_reason=report["end_reason"])
                call["report"] = data
                if "analysis_at" not in call:  # a call.analyzed that came first is newer
                    call["analysis"] = report["analysis"]
            elif event["type"] == "call.analyzed":
                call, at = self.calls.setdefault(data["call_id"], {}), _time(event["timestamp"])
                if at >= call.get("analysis_at", at):  # a run again sends a newer one
                    call.update(analysis=data["analysis"], analysis_at=at)
            # Other types: new ones may be added; answer 2xx and ignore them.
            self.handled.add(event["id"])


def _step(status: str | None) -> int:
    return -1 if status is None else STATUS_STEP.get(status, ENDED_STEP)


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def server(port: int, secrets: list[str], store: Store) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not verify(secrets, self.headers, body):
                return self._answer(401)  # any 4xx but 410 ends the delivery; 410 disables
            try:
                store.handle(json.loads(body))
            except Exception:
                return self._answer(500)  # voicecalls retries a 5xx
            self._answer(204)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    secrets = os.environ["VOICECALLS_WEBHOOK_SECRETS"].split(",")
    server(int(sys.argv[1]) if len(sys.argv) > 1 else 8080, secrets, Store()).serve_forever()
