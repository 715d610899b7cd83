"""The recordings tests' cast: buckets in the S3 stand-in, a recording workflow, the
real task worker, and egress webhooks signed as LiveKit signs them."""

from __future__ import annotations

import json
import uuid

import boto3

from tests.livekit_samples import post_webhook, sample
from tests.tasks import run_task_worker
from workflows.models import Workflow


def s3_client(endpoint: str, *, access_key: str = "test", secret: str = "test"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
    )


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
) -> str:
    """The egress sample `name` (tests/data/livekit/), about the call's room and egress."""
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
    payload["id"] = event_id or f"EV_{uuid.uuid4().hex[:12]}"
    return json.dumps(payload)


def send_egress(name: str, **kwargs: object):
    return post_webhook(egress_body(name, **kwargs))
