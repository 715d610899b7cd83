"""The fake LiveKit's Egress service (tests/fake_livekit.py): a room composite egress
does what LiveKit's egress does with an audio-only OGG file output to S3.

Once it has answered `StartRoomCompositeEgress` (EGRESS_STARTING and the egress id), it
uploads a short real Ogg Opus file (tests/ogg.py) through boto3 to the endpoint, bucket,
key and credentials the request names, and sends the webhooks LiveKit sends to
`webhook_sink`: `egress_started` (EGRESS_STARTING), `egress_updated` (EGRESS_ACTIVE,
then EGRESS_ENDING once written), then `egress_ended` with EGRESS_COMPLETE and the
file's size and duration, or EGRESS_FAILED when the upload failed. `egress_outcome`
scripts it: "complete" (default), "failed" (LiveKit's error `egress_error`),
"limit_reached" (it hit its maximum duration: as LiveKit's egress, it ends
EGRESS_LIMIT_REACHED with "Session limit reached", its file uploaded and reported all
the same), or "manual" (answer only; the test sends the webhooks).
Each egress runs when the test calls `egress_run()`, after LiveKit's answer.
"""

from __future__ import annotations

import itertools
import json
import threading
import time

from google.protobuf import json_format
from livekit import api
from livekit.protocol import egress as egress_models

from tests.ogg import ogg_opus_silence

METHODS = {
    "StartRoomCompositeEgress": (api.RoomCompositeEgressRequest, api.EgressInfo, "room_record"),
    "ListEgress": (api.ListEgressRequest, api.ListEgressResponse, "room_record"),
    "StopEgress": (api.StopEgressRequest, api.EgressInfo, "room_record"),
}
RECORDED_SECONDS = 2.0
LIMIT_REACHED_ERROR = "Session limit reached"
_ids = itertools.count(1)


def _ns() -> int:
    return time.time_ns()


class EgressMixin:
    """FakeLiveKit's egress methods (its fields hold the state)."""

    def _StartRoomCompositeEgress(self, message, response_class):
        info = api.EgressInfo(
            egress_id=f"EG_fake{next(_ids)}",
            room_name=message.room_name,
            status=egress_models.EgressStatus.EGRESS_STARTING,
            started_at=_ns(),
        )
        info.room_composite.CopyFrom(message)
        with self._lock:
            self.egresses[info.egress_id] = info
        if self.egress_outcome != "manual":
            with self._lock:
                self._egress_jobs.append(lambda: self._egress_play(info.egress_id, message))
        if self.on_egress_start is not None:
            self.on_egress_start(info)
        return info

    def _ListEgress(self, message, response_class):
        """As LiveKit (pkg/service/egress.go): an egress id is looked up alone (its room
        and `active` aside but for `active` dropping one ended), an unknown id NOT_FOUND
        (LoadEgress: "egress does not exist"), not an empty list."""
        if message.egress_id:
            with self._lock:
                info = self.egresses.get(message.egress_id)
            if info is None:
                return _twirp_error(404, "not_found", "egress does not exist")
            ended = info.status >= egress_models.EgressStatus.EGRESS_COMPLETE
            return response_class(items=[] if message.active and ended else [info])
        with self._lock:
            items = [
                info
                for info in self.egresses.values()
                if (not message.room_name or info.room_name == message.room_name)
                and (not message.active or info.status < egress_models.EgressStatus.EGRESS_COMPLETE)
            ]
        if self.egress_page_size is None:
            return response_class(items=items)
        if message.page_token.token and self.egress_paging == "lost":
            return _twirp_error(404, "not_found", "page not found")
        start = int(message.page_token.token or 0)
        end = start + self.egress_page_size
        response = response_class(items=items[start:end])
        if end < len(items) or self.egress_paging == "circles":
            response.next_page_token.token = "1" if self.egress_paging == "circles" else str(end)
        return response

    def _StopEgress(self, message, response_class):
        """As LiveKit: an egress starting or active goes ENDING (it then finishes its
        file); any other status is FAILED_PRECONDITION, an unknown id NOT_FOUND."""
        with self._lock:
            info = self.egresses.get(message.egress_id)
            if info is None:
                return _twirp_error(404, "not_found", "egress not found")
            if info.status not in (
                egress_models.EgressStatus.EGRESS_STARTING,
                egress_models.EgressStatus.EGRESS_ACTIVE,
            ):
                name = egress_models.EgressStatus.Name(info.status)
                return _twirp_error(
                    412, "failed_precondition", f"egress with status {name} cannot be stopped"
                )
            info.status = egress_models.EgressStatus.EGRESS_ENDING
            info.updated_at = _ns()
        return info

    def _egress_play(self, egress_id: str, request: api.RoomCompositeEgressRequest) -> None:
        """The webhooks LiveKit sends as the egress goes (livekit/livekit
        pkg/service/ioservice.go): `egress_started` as the egress service takes it
        (EGRESS_STARTING), `egress_updated` active and ending, `egress_ended`."""
        info = self.egresses[egress_id]
        self.egress_webhook_send("egress_started", info)
        info.status = egress_models.EgressStatus.EGRESS_ACTIVE
        self.egress_webhook_send("egress_updated", info)
        output = request.file_outputs[0]
        error = self.egress_error if self.egress_outcome == "failed" else self._upload(output)
        if not error and self.egress_outcome != "limit_reached":
            info.status = egress_models.EgressStatus.EGRESS_ENDING
            self.egress_webhook_send("egress_updated", info)
        info.ended_at = info.updated_at = _ns()
        if error:
            info.status = egress_models.EgressStatus.EGRESS_FAILED
            info.error = error
        else:
            info.status = egress_models.EgressStatus.EGRESS_COMPLETE
            if self.egress_outcome == "limit_reached":
                # LiveKit's egress (pkg/info: SetLimitReached) ends the file there.
                info.status = egress_models.EgressStatus.EGRESS_LIMIT_REACHED
                info.error = LIMIT_REACHED_ERROR
            upload = output.s3
            info.file_results.append(
                api.FileInfo(
                    filename=output.filepath,
                    started_at=info.started_at,
                    ended_at=info.ended_at,
                    duration=int(RECORDED_SECONDS * 1e9),
                    size=len(self.egress_file),
                    location=f"{upload.endpoint}/{upload.bucket}/{output.filepath}",
                )
            )
        self.egress_webhook_send("egress_ended", info)

    def _upload(self, output: api.EncodedFileOutput) -> str:
        """Upload the file as the egress does; LiveKit's error text when that fails."""
        # Imported here: the agent's tests load this stand-in in the agent's own venv,
        # which has no boto3 (and never records).
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        upload = output.s3
        client = boto3.client(
            "s3",
            endpoint_url=upload.endpoint or None,
            region_name=upload.region or None,
            aws_access_key_id=upload.access_key,
            aws_secret_access_key=upload.secret,
            config=Config(s3={"addressing_style": "path" if upload.force_path_style else "auto"}),
        )
        try:
            client.put_object(
                Bucket=upload.bucket,
                Key=output.filepath,
                Body=self.egress_file,
                ContentType="audio/ogg",
            )
        except (BotoCoreError, ClientError) as exc:
            return f"could not upload file: {exc.__class__.__name__}"
        with self._lock:
            self.egress_uploads.append(
                {"bucket": upload.bucket, "key": output.filepath, "access_key": upload.access_key}
            )
        return ""

    def egress_webhook_send(self, event: str, info: api.EgressInfo) -> None:
        """Sign and hand an egress webhook to `webhook_sink`, as LiveKit posts it."""
        if self.webhook_sink is None:
            return
        message = api.WebhookEvent(
            id=f"EV_egress{next(_ids)}", event=event, created_at=int(time.time())
        )
        message.egress_info.CopyFrom(info)
        self.webhook_sign_and_send(json_format.MessageToJson(message))

    # --- the egress runs apart from the API that started it ---

    def egress_run(self, timeout: float = 10.0) -> None:
        """Let every egress started so far run (upload, webhooks) on a thread of its own,
        as LiveKit's egress service does after the API answered, and wait for them. The
        test decides when: SQLite's shared in-memory test database must not be written
        from two threads at once (the task worker is still finishing its job)."""
        with self._lock:
            jobs, self._egress_jobs[:] = list(self._egress_jobs), []
        for job in jobs:
            thread = threading.Thread(target=job, daemon=True)
            thread.start()
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError("the fake egress did not finish")


def _twirp_error(status: int, code: str, msg: str) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps({"code": code, "msg": msg}).encode()


def default_file() -> bytes:
    return ogg_opus_silence(RECORDED_SECONDS)
