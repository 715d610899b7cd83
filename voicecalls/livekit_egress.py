"""LiveKit's Egress service: recording a call's room to S3-compatible storage
(DESIGN.md "Recordings and data retention"). Requests and refusals go through
`voicecalls.livekit` like every LiveKit request: a refusal names the method and the
Twirp code only, never the request, which carries the bucket's credentials."""

from __future__ import annotations

from livekit import api

from voicecalls.livekit import twirp_request


def room_audio_recording_start(
    *,
    room_name: str,
    filepath: str,
    endpoint: str,
    bucket: str,
    region: str,
    access_key: str,
    secret: str,
) -> str:
    """Start an audio-only room composite egress of `room_name` into one OGG file at
    `filepath` in the bucket; LiveKit's egress id. The egress uploads the file itself
    when the room closes, with these credentials: they go to LiveKit and nowhere else."""
    upload = api.S3Upload(
        access_key=access_key,
        secret=secret,
        region=region,
        endpoint=endpoint,
        bucket=bucket,
        # Anything but AWS itself (MinIO, R2, a test stand-in) is addressed by path.
        force_path_style=bool(endpoint),
    )
    output = api.EncodedFileOutput(
        file_type=api.EncodedFileType.OGG, filepath=filepath, disable_manifest=True, s3=upload
    )
    request = api.RoomCompositeEgressRequest(
        room_name=room_name, audio_only=True, file_outputs=[output]
    )
    info = twirp_request(
        "StartRoomCompositeEgress", lambda lk: lk.egress.start_room_composite_egress(request)
    )
    return info.egress_id
