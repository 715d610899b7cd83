"""The recordings tests' cast: buckets in the S3 stand-in, a recording workflow, the
real task worker, and egress webhooks signed as LiveKit signs them."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from django.conf import settings
from django.utils import timezone
from livekit.protocol import egress as egress_models

from recordings.models import Recording
from tests.livekit_samples import post_webhook, sample, send
from tests.tasks import run_task_worker
from workflows.models import Workflow


def _without_multi_delete(app):
    """`app` (moto's S3) answering DeleteObjects as a store without it does: Google Cloud
    Storage's XML API, which takes one object per DELETE."""

    def refusing(environ: dict, start_response):
        query = environ.get("QUERY_STRING", "")
        if environ["REQUEST_METHOD"] == "POST" and "delete" in query.split("&"):
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>'
                b"<Message>POST ?delete is not implemented for objects.</Message></Error>"
            )
            headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
            start_response("501 Not Implemented", headers)
            return [body]
        return app(environ, start_response)

    return refusing


def s3_without_multi_delete() -> contextlib.AbstractContextManager[str]:
    """A stand-in S3 endpoint over the same stored buckets as `s3_server` (moto keeps
    them per process) that refuses DeleteObjects with 501 NotImplemented; its URL."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = _without_multi_delete(DomainDispatcherApplication(create_backend_app))
    return _served(make_server("127.0.0.1", 0, app, threaded=True))


def s3_client(endpoint: str, *, access_key: str = "test", secret: str = "test"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
    )


class _RefusingS3(BaseHTTPRequestHandler):
    """Answers every request as S3 answers credentials that do not reach a bucket."""

    def _refuse(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message><RequestId>R1</RequestId></Error>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _refuse

    def log_message(self, *args: object) -> None:
        pass


def refusing_s3() -> contextlib.AbstractContextManager[str]:
    """A stand-in S3 endpoint refusing every request (403 AccessDenied); its URL."""
    return _served(ThreadingHTTPServer(("127.0.0.1", 0), _RefusingS3))


@contextlib.contextmanager
def _served(server: ThreadingHTTPServer) -> Iterator[str]:
    """`server` serving on its loopback port meanwhile; its URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def bucket_create(endpoint: str) -> str:
    bucket = f"rec-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


def object_keys(endpoint: str, bucket: str) -> list[str]:
    listing = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def recording_on(workflow: Workflow) -> Workflow:
    """Turn the workflow's `recording` setting on, as a new version would."""
    version = workflow.current_version
    version.definition["settings"] = {**version.settings, "recording": {"enabled": True}}
    version.save()
    return workflow


def run_worker() -> None:
    """The real task worker on the default queue: runs every job due now, then exits."""
    run_task_worker("default")


def egress_body(
    name: str,
    *,
    call_id: object,
    egress_id: str,
    status: str | None = None,
    error: str | None = None,
    details: str | None = None,
    event_id: str | None = None,
    filepath: str | None = None,
    created_at: float | None = None,
) -> str:
    """The egress sample `name` (tests/data/livekit/), about the call's room and egress
    (stamped `created_at`, Unix seconds, if given; else the sample's own stamp)."""
    payload = sample(name)
    info = payload["egressInfo"]
    info["roomName"] = f"call-{call_id}"
    info["egressId"] = egress_id
    if status is not None:
        info["status"] = status
    if error is not None:
        info["error"] = error
    if details is not None:
        info["details"] = details
    if filepath is None:  # as LiveKit says it of the egress we started: our key
        keys = Recording.objects.filter(call_id=call_id).values_list("object_key", flat=True)
        filepath = keys.first()
    if filepath is not None:  # where it writes: the request's output, the file's name
        info["roomComposite"]["fileOutputs"][0]["filepath"] = filepath
        for result in info.get("fileResults", []):
            result["filename"] = filepath
    payload["id"] = event_id or f"EV_{uuid.uuid4().hex[:12]}"
    if created_at is not None:
        payload["createdAt"] = str(int(created_at))
    return json.dumps(payload)


def send_egress(name: str, **kwargs: object):
    return post_webhook(egress_body(name, **kwargs))


def start_call(api) -> str:
    response = api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["call_id"]


def join(call_id: str) -> None:
    """The user joins: LiveKit's participant_joined makes the call active."""
    assert send("participant_joined", call_id).status_code == 200


def worker_killed_mid_start() -> None:
    """The worker that took the recording's start task was killed before it asked
    LiveKit: django-tasks-db leaves its row `RUNNING` for good, nobody runs it again."""
    from django_tasks_db.models import DBTaskResult

    started = DBTaskResult.objects.filter(task_path="recordings.tasks.recording_start")
    assert started.update(status="RUNNING", started_at=timezone.now()) == 1


def egress_of_a_start_whose_worker_died(fake, *, call_id: str) -> str:
    """LiveKit answered the start (StartRoomCompositeEgress) and the worker was killed
    before the row kept the egress id; the egress's webhooks are lost."""
    from voicecalls import livekit_egress

    worker_killed_mid_start()
    recording = Recording.objects.get(call_id=call_id)
    egress_id = livekit_egress.room_audio_recording_start(
        room_name=f"call-{call_id}",
        filepath=recording.object_key,
        endpoint=settings.RECORDINGS_S3_ENDPOINT,
        bucket=settings.RECORDINGS_S3_BUCKET,
        region=settings.RECORDINGS_S3_REGION,
        access_key=settings.RECORDINGS_S3_ACCESS_KEY_ID,
        secret=settings.RECORDINGS_S3_SECRET_ACCESS_KEY,
    )
    fake.egresses[egress_id].status = egress_models.EgressStatus.EGRESS_ACTIVE
    assert Recording.objects.get(call_id=call_id).egress_id is None
    return egress_id


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read()


def started_egresses(fake) -> list[dict]:
    return [r.body for r in fake.calls("StartRoomCompositeEgress")]
