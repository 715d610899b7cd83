"""The one module that talks to LiveKit (tokens now; RoomService calls later).

Minting a token is local: it needs the API key and secret, not the server.
"""

from __future__ import annotations

import datetime
import json

from django.conf import settings
from livekit import api


class LiveKitError(Exception):
    """LiveKit could not be reached or answered with an error."""


def participant_token(*, room_name: str, identity: str, name: str | None, call_id: str) -> str:
    """A JWT for the end user: join exactly `room_name`; dispatch our agent on join.

    The client can read the token, so it carries only the call id for the agent,
    never user data or secrets.
    """
    room_config = api.RoomConfiguration(
        departure_timeout=settings.LIVEKIT_DEPARTURE_TIMEOUT,
        agents=[
            api.RoomAgentDispatch(
                agent_name=settings.LIVEKIT_AGENT_NAME,
                metadata=json.dumps({"call_id": call_id}),
            )
        ],
    )
    token = (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(identity)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room_name,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
        .with_ttl(datetime.timedelta(seconds=settings.LIVEKIT_TOKEN_TTL_SECONDS))
        .with_room_config(room_config)
    )
    if name:
        token = token.with_name(name)
    return token.to_jwt()
