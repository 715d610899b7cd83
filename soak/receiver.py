"""The soak's customer webhook receiver: verifies every delivery's Standard Webhooks
signature and logs it, one JSON object per line, then answers 200 (or 500 while told to
fail: `POST /_control/fail {"seconds": 60}`).

    python -m soak.receiver --port N --secret-file F --log F
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

from standardwebhooks import Webhook


class Receiver:
    def __init__(self, *, secret: str, log: IO[str]) -> None:
        self.webhook = Webhook(secret)
        self.log = log
        self.lock = threading.Lock()
        self.failing_until = 0.0

    def receive(self, body: bytes, headers: dict[str, str]) -> int:
        entry: dict = {"t": time.time(), "id": headers.get("webhook-id")}
        if time.time() < self.failing_until:
            entry["answer"] = 500
        else:
            entry["answer"] = 200
            try:
                payload = self.webhook.verify(body, headers)
                entry["verified"] = True
            except Exception as exc:  # a bad signature is what this is here to catch
                payload = json.loads(body or b"{}")
                entry.update(verified=False, error=repr(exc))
            entry.update(_summary(payload))
        with self.lock:
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()
        return entry["answer"]


def _summary(payload: dict) -> dict:
    data = payload.get("data") or {}
    call = data.get("call") or {}
    summary = {
        "type": payload.get("type"),
        "body_id": payload.get("id"),
        "call_id": data.get("call_id") or call.get("call_id") or call.get("id"),
        "to_status": data.get("to_status"),
    }
    if "transcript" in data:
        summary["lines"] = [line.get("content") for line in data["transcript"]]
        summary["metrics"] = data.get("metrics")
        summary["status"] = call.get("status")
        summary["end_reason"] = call.get("end_reason")
    return summary


def serve(receiver: Receiver, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/_control/fail":
                receiver.failing_until = time.time() + float(json.loads(body)["seconds"])
                status = 200
            else:
                status = receiver.receive(body, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    with open(args.log, "a") as log:
        serve(Receiver(secret=Path(args.secret_file).read_text().strip(), log=log), args.port)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        stopped.wait()


if __name__ == "__main__":
    main()
