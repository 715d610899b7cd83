"""Hostile requests mixed in at a low rate: none may get a 5xx, all must get the 4xx
the contract names."""

from __future__ import annotations

import asyncio
import random
import uuid

from soak.scenario import Target
from soak.traffic import Http


def _requests(target: Target, rng: random.Random) -> list[tuple[str, str, dict, set[int]]]:
    client = {"Authorization": f"Bearer {target.client_key}"}
    agent = {"Authorization": f"Bearer {target.agent_key}"}
    nobody = str(uuid.uuid4())
    calls = f"{target.api}/api/v1/calls"
    return [
        ("GET", calls, {}, {401, 403}),
        ("GET", calls, {"headers": {"Authorization": "Bearer vc_forged.key"}}, {401, 403}),
        (
            "POST",
            calls,
            {"headers": {**client, "Content-Type": "application/json"}, "data": b"{not json"},
            {400},
        ),
        ("POST", calls, {"headers": client, "json": {"workflow_slug": "no-such-flow"}}, {400}),
        (
            "POST",
            calls,
            {"headers": client, "json": {"workflow_slug": "soak", "user_data": {"x": "y" * 40000}}},
            {400, 413},
        ),
        ("GET", f"{calls}/{nobody}", {"headers": client}, {404}),
        (
            "GET",
            f"{target.api}/api/v1/agent/calls/{nobody}/session",
            {"headers": client},
            {401, 403},
        ),
        (
            "POST",
            f"{target.api}/api/v1/agent/calls/{nobody}/events",
            {"headers": agent, "json": {"events": [{"type": "transcript"}]}},
            {400, 404},
        ),
        (
            "POST",
            f"{target.api}/api/v1/webhooks/livekit",
            {
                "headers": {"Content-Type": "application/webhook+json", "Authorization": "forged"},
                "data": b'{"event": "room_finished", "room": {"name": "call-x"}}',
            },
            {401},
        ),
        ("GET", f"{calls}?page_size=1000", {"headers": client}, {400}),
    ]


async def hostile(
    http: Http, target: Target, seed: int, stop: asyncio.Event, every: float = 1.0
) -> None:
    rng = random.Random(seed + 7)
    while not stop.is_set():
        method, url, kwargs, expected = rng.choice(_requests(target, rng))
        status, body = await http.once(method, url, "hostile", **kwargs)
        if status not in expected and status < 500 and status != 0:
            http.record.unexpected.append(
                {"hostile": url, "method": method, "status": status, "expected": sorted(expected)}
            )
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
