"""Start a call from the demo workflow and list the active calls, with the Python SDK.

make sdk && pip install ./sdk/python
VOICECALLS_API_KEY=... python examples/quickstart.py
"""

from __future__ import annotations

import os

from voicecalls_client import AuthenticatedClient
from voicecalls_client.api.calls import calls_active, calls_create
from voicecalls_client.models import CallCreateRequest, CallCreateRequestUserData, CallJoin

base_url = os.environ.get("VOICECALLS_BASE_URL", "http://127.0.0.1:8000")
with AuthenticatedClient(base_url=base_url, token=os.environ["VOICECALLS_API_KEY"]) as client:
    joined = calls_create.sync(
        client=client,
        body=CallCreateRequest(
            workflow_slug="daily-call",
            user_id="user-123",
            user_data=CallCreateRequestUserData.from_dict({"name": "John Doe"}),
        ),
    )
    if not isinstance(joined, CallJoin):
        raise SystemExit(f"Could not start the call: {joined}")
    print(f"Call {joined.call_id} is {joined.status.value}")
    # Hand these to the app: it joins the LiveKit room with the token.
    print(f"Join room {joined.room_name} at {joined.livekit_url} with token {joined.token[:12]}…")

    active = calls_active.sync(client=client, limit=10)
    if not isinstance(active, list):
        raise SystemExit(f"Could not list the active calls: {active}")
    print(f"Active calls: {len(active)}")
