"""LiveKit's Egress service: recording a call's room to S3-compatible storage
(DESIGN.md "Recordings and data retention"). Requests and refusals go through
`voicecalls.livekit` like every LiveKit request: a refusal names the method and the
Twirp code only, never the request, which carries the bucket's credentials."""

from __future__ import annotations

from livekit import api

from voicecalls.livekit import EgressUpdate, LiveKitError, egress_update_of, twirp_request


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


def egress_status(*, egress_id: str) -> EgressUpdate | None:
    """What LiveKit says of an egress now (ListEgress by its id); None when it no longer
    knows it (LiveKit answers NOT_FOUND for an id it dropped, not an empty list)."""
    request = api.ListEgressRequest(egress_id=egress_id)
    response = twirp_request(
        "ListEgress", lambda lk: lk.egress.list_egress(request), if_not_found=None
    )
    if response is None:
        return None
    for info in response.items:
        if info.egress_id == egress_id:
            return egress_update_of(info)
    return None


def room_egresses(*, room_name: str) -> list[EgressUpdate]:
    """The egresses LiveKit knows of a room (ListEgress by its name), running or ended;
    none when it knows no such room (older servers answer NOT_FOUND for one gone)."""
    listed = _egresses_listed(api.ListEgressRequest(room_name=room_name))
    return [egress for egress, room in listed if room == room_name]


def active_egresses() -> list[EgressUpdate]:
    """Every egress LiveKit is running now, in any room (ListEgress with `active`)."""
    return [egress for egress, _ in _egresses_listed(api.ListEgressRequest(active=True))]


# ListEgress pages (newer servers). More pages than this is a LiveKit answering in
# circles, as is a page token given twice.
_PAGES_MAX = 100


def _egresses_listed(request: api.ListEgressRequest) -> list[tuple[EgressUpdate, str]]:
    """What ListEgress answers to `request`, page after page on servers that page it,
    with each egress's room. LiveKitError rather than part of it: a caller would take an
    egress missing from the list for one that ended, or that never started."""
    found: list[tuple[EgressUpdate, str]] = []
    tokens: set[str] = set()
    for _ in range(_PAGES_MAX):
        response = twirp_request(
            "ListEgress", lambda lk: lk.egress.list_egress(request), if_not_found=None
        )
        if response is None and request.page_token.token:
            raise LiveKitError("ListEgress lost its place between pages (NOT_FOUND).")
        if response is None:
            return found
        found += [(egress_update_of(info), info.room_name) for info in response.items]
        token = response.next_page_token.token
        if not token:
            return found
        if token in tokens:
            break
        tokens.add(token)
        request.page_token.token = token
    raise LiveKitError("ListEgress kept answering with more pages.")


def egress_stop(*, egress_id: str) -> None:
    """Ask LiveKit to stop an egress: it finishes its file and reports it ended. One
    LiveKit no longer knows is no failure."""
    request = api.StopEgressRequest(egress_id=egress_id)
    twirp_request("StopEgress", lambda lk: lk.egress.stop_egress(request), if_not_found=None)
