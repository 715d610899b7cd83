"""One call's life, as the end user's app, the agent worker and LiveKit play it: created
(some creates re-sent with their Idempotency-Key), joined, watched on a live stream,
given transcript lines in agent batches (some re-sent, some out of order), handed off,
and ended one of nine ways. What it sent is kept for the checks."""

from __future__ import annotations

import asyncio
import datetime
import random
import uuid
from dataclasses import dataclass

import aiohttp

from soak.traffic import Http

# plan: (weight, expected status, expected end_reason)
PLANS = {
    "user_hangup": (30, "completed", "user_hangup"),
    "api_end": (18, "completed", "api_request"),
    "agent_hangup": (15, "completed", "agent_hangup"),
    "dropped_user": (10, "disconnected", "connection_lost"),
    "reconciled": (9, "completed", "reconciled"),
    "connect_timeout": (8, "timeout", "connect_timeout"),
    "max_duration": (10, "timeout", "max_duration"),
    # The agent never comes (`expire_calls` fails the call once it is overdue), or its
    # process dies mid-call and the user hangs up on the silence (calls.agent_presence).
    "agent_not_joined": (5, "failed", "agent_not_joined"),
    "agent_lost": (5, "failed", "agent_lost"),
}
# How LiveKit says a participant whose process died left: its connection closed.
AGENT_LOST_REASON = "SIGNAL_CLOSE"
AGENTS = ("greeter-agent", "meal-agent", "feedback-agent")


@dataclass
class Target:
    api: str
    streams: str
    control: str
    client_key: str
    agent_key: str


def content(number: int, index: int) -> str:
    return f"call {number} line {index}: " + "words " * (index % 7)


def ok2xx(status: int) -> bool:
    return 200 <= status < 300


class CallRun:
    def __init__(self, http: Http, target: Target, number: int, seed: int) -> None:
        self.http, self.target, self.number = http, target, number
        self.rng = random.Random(seed * 1_000_003 + number)
        weights = [weight for weight, _, _ in PLANS.values()]
        self.plan = self.rng.choices(list(PLANS), weights)[0]
        _, status, reason = PLANS[self.plan]
        self.record: dict = {"n": number, "plan": self.plan, "expected": [status, reason]}
        self.client = {"Authorization": f"Bearer {target.client_key}"}
        self.agent = {"Authorization": f"Bearer {target.agent_key}"}

    async def run(self) -> dict:
        if not await self._create():
            return self.record
        call_id = self.record["call_id"]
        room, user = f"call-{call_id}", f"user-{call_id}"
        agent = f"agent-AJ_{uuid.uuid4().hex[:12]}"
        if self.plan == "connect_timeout":
            await self._until_ended(call_id, 120)
            return self.record
        self._stream_open(call_id)
        if self.plan == "agent_not_joined":  # the user alone, waiting in silence
            await self._control("/join", room=room, user=user)
            await self._until_ended(call_id, 120)
            return self.record
        await self._control("/join", room=room, user=user, agent=agent)
        await self._get(f"/api/v1/agent/calls/{call_id}/session", "agent_session", self.agent)
        await self._talk(call_id, fast=self.plan == "max_duration")
        await self._end(call_id, room, user, agent)
        await self._get(f"/api/v1/calls/{call_id}", "call_detail", self.client)
        await self._get(f"/api/v1/calls/{call_id}/transcript", "transcript", self.client)
        if self.plan == "max_duration":
            await self._until_ended(call_id, 120)
        return self.record

    def _stream_open(self, call_id: str) -> None:
        stream = asyncio.create_task(self._watch(call_id))
        self.http.record.stream_tasks.add(stream)
        stream.add_done_callback(self.http.record.stream_tasks.discard)

    async def _get(self, path: str, name: str, headers: dict) -> None:
        await self.http.call("GET", f"{self.target.api}{path}", name, ok=ok2xx, headers=headers)

    async def _create(self) -> bool:
        slug = "soak-short" if self.plan == "max_duration" else "soak"
        body = {
            "workflow_slug": slug,
            "user_id": f"soak-user-{self.number}",
            "metadata": {"soak_call": self.number},
        }
        key = f"soak-{uuid.uuid4()}"
        headers = {**self.client, "Idempotency-Key": key}
        url = f"{self.target.api}/api/v1/calls"
        status, answer = await self.http.call(
            "POST", url, "create", ok=ok2xx, in_flight=True, json=body, headers=headers
        )
        self.record.update(key=key, create_status=status)
        if status != 201 or not isinstance(answer, dict):
            self.record["error"] = f"create: {status} {answer!r}"[:300]
            return False
        self.record["call_id"] = answer["call_id"]
        if self.rng.random() < 0.2:  # the client did not see the answer and sends it again
            again, replay = await self.http.call(
                "POST", url, "create", ok=ok2xx, in_flight=True, json=body, headers=headers
            )
            # The call it answered; None when it answered none (an error): see check.
            self.record["replayed"] = replay.get("call_id") if isinstance(replay, dict) else None
            self.record["replay_status"] = again
        return True

    async def _control(self, path: str, **body: object) -> None:
        await self.http.call(
            "POST", self.target.control + path, "livekit_control", ok=ok2xx, json=body
        )

    def _batches(self) -> list[list[dict]]:
        """20–200 lines, two handoffs, a metrics sample per batch, in batches of 5–25."""
        # A call that runs into its maximum duration says everything well before it.
        lines = self.rng.randint(20, 60 if self.plan == "max_duration" else 200)
        start = datetime.datetime.now(datetime.UTC)
        events, agents = [], list(AGENTS)
        sums = {"stt": 0, "llm": 0, "tts": 0, "tokens": 0, "samples": 0}
        for index in range(lines):
            at = (start + datetime.timedelta(milliseconds=index)).isoformat()
            if index in (lines // 3, 2 * lines // 3):
                events.append(
                    {
                        "type": "agent_handoff",
                        "id": str(uuid.uuid4()),
                        "timestamp": at,
                        "from_agent": agents[0],
                        "to_agent": agents[1],
                    }
                )
                agents.pop(0)
            role = "user" if index % 2 else "assistant"
            events.append(
                {
                    "type": "transcript",
                    "id": str(uuid.uuid4()),
                    "timestamp": at,
                    "role": role,
                    "content": content(self.number, index),
                    "agent_name": agents[0],
                }
            )
        batches, position = [], 0
        while position < len(events):
            size = self.rng.randint(5, 25)
            batch = events[position : position + size]
            position += size
            sample = {k: self.rng.randint(50, 900) for k in ("stt", "llm", "tts")}
            tokens = self.rng.randint(10, 900)
            for name, value in (*sample.items(), ("tokens", tokens)):
                sums[name] += value
            sums["samples"] += 1
            batch.append(
                {
                    "type": "metrics",
                    "id": str(uuid.uuid4()),
                    "timestamp": batch[-1]["timestamp"],
                    "stt_latency_ms": sample["stt"],
                    "llm_latency_ms": sample["llm"],
                    "tts_latency_ms": sample["tts"],
                    "tokens": tokens,
                }
            )
            batches.append(batch)
        self.record.update(
            lines=lines,
            sums=sums,
            handoffs=2,
            line_ids=[e["id"] for e in events if e["type"] == "transcript"],
        )
        return batches

    async def _talk(self, call_id: str, *, fast: bool) -> None:
        batches = self._batches()
        order = list(range(len(batches)))
        for index in range(len(order) - 1):
            if self.rng.random() < 0.1:  # sent out of order
                order[index], order[index + 1] = order[index + 1], order[index]
        url = f"{self.target.api}/api/v1/agent/calls/{call_id}/events"
        resent = 0
        for index in order:
            sends = 2 if self.rng.random() < 0.1 else 1  # re-sent: the agent missed the answer
            resent += sends - 1
            for _ in range(sends):
                await self.http.call(
                    "POST",
                    url,
                    "agent_events",
                    ok=ok2xx,
                    json={"events": batches[index]},
                    headers=self.agent,
                )
            await asyncio.sleep(self.rng.uniform(0.05, 0.2) if fast else self.rng.uniform(1.0, 4.0))
        self.record["batches_resent"] = resent
        self.record["talk_done_at"] = self.http.record.now()

    async def _end(self, call_id: str, room: str, user: str, agent: str) -> None:
        if self.plan == "agent_lost":
            # A second on, so its departure (LiveKit stamps whole seconds) follows every
            # line; the user hears silence for a few seconds, then hangs up.
            await asyncio.sleep(1.0)
            await self._control("/agent_leave", room=room, agent=agent, reason=AGENT_LOST_REASON)
            await asyncio.sleep(self.rng.uniform(3.0, 8.0))
        self.record["ended_at"] = self.http.record.now()
        if self.plan in ("user_hangup", "dropped_user", "reconciled", "agent_lost"):
            reason = "SIGNAL_CLOSE" if self.plan == "dropped_user" else "CLIENT_INITIATED"
            await self._control(
                "/leave",
                room=room,
                user=user,
                agent=agent,
                reason=reason,
                drop=self.plan == "reconciled",
            )
        elif self.plan == "api_end":
            url = f"{self.target.api}/api/v1/calls/{call_id}/end"
            await self.http.call("POST", url, "end", ok=ok2xx, headers=self.client)
        elif self.plan == "agent_hangup":
            url = f"{self.target.api}/api/v1/agent/calls/{call_id}/events"
            event = {
                "type": "status",
                "id": str(uuid.uuid4()),
                "status": "completed",
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
            }
            await self.http.call(
                "POST", url, "agent_events", ok=ok2xx, json={"events": [event]}, headers=self.agent
            )
            await self._control("/delete", room=room)

    async def _until_ended(self, call_id: str, seconds: float) -> None:
        url = f"{self.target.api}/api/v1/calls/{call_id}"
        for _ in range(int(seconds / 3)):
            status, body = await self.http.call(
                "GET", url, "call_detail", ok=ok2xx, headers=self.client
            )
            if isinstance(body, dict) and body.get("status") in (
                "completed",
                "failed",
                "timeout",
                "disconnected",
            ):
                return
            await asyncio.sleep(3)

    async def _watch(self, call_id: str) -> None:
        """The call's live stream, resumed with Last-Event-ID when cut, until `end`."""
        url = f"{self.target.streams}/api/v1/calls/{call_id}/stream"
        counts, last_id = self.http.record.streams, None
        counts["opened"] += 1
        for _ in range(20):
            headers = {**self.client, **({"Last-Event-ID": last_id} if last_id else {})}
            try:
                async with self.http.session.get(url, headers=headers, timeout=None) as response:
                    if response.status != 200:
                        await asyncio.sleep(1)
                        continue
                    async for raw in response.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id:"):
                            last_id, counts["events"] = line[3:].strip(), counts["events"] + 1
                        elif line == "event: end":
                            counts["ended"] += 1
                            return
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                await asyncio.sleep(1)
