"""Tool requests carry Standard Webhooks signatures by the organization's tool signing
secrets, as webhook deliveries do, over the exact bytes sent: the customer's endpoint
verifies them with the `standardwebhooks` library (the web venv's, where it is a dev
requirement). A session without secrets (none made, or a web service from before them)
leaves them unsigned, as before."""

from __future__ import annotations

import asyncio
import json
import subprocess

from agent.config import Config
from agent.tests.conftest import WEB_PYTHON, Web
from agent.tests.harness import TextProviders, live_job
from agent.tests.scripted_llm import ScriptedLLM
from agent.tests.test_workflow_tools import SAVE_MEAL
from agent.worker import CallJob
from agent.workflow import ToolRunner

WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
VERIFY = """
import json, sys
from standardwebhooks import Webhook
data = json.load(sys.stdin)
try:
    Webhook(data["secret"]).verify(data["body"].encode(), data["headers"])
    print("valid")
except Exception as exc:
    print(f"invalid: {exc}")
"""


async def _tool_server():
    """A customer's tool endpoint on loopback: keeps each request's headers (names in
    lower case) and raw body, answers 200 JSON. Returns (server, url, requests)."""
    requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = {}
        for line in head.split("\r\n")[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        requests.append((headers, body))
        answer = b'{"saved":true}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/tool", requests


def verified(secret: str, headers: dict[str, str], body: bytes) -> str:
    """What `standardwebhooks` says of the request: "valid", or why not."""
    data = {"secret": secret, "headers": headers, "body": body.decode()}
    done = subprocess.run(
        [WEB_PYTHON, "-c", VERIFY],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


# Two secrets of the documented form (`whsec_` + base64 of 32 bytes), as after a rotation.
NEW = "whsec_dm9pY2VjYWxscy10ZXN0LXNlY3JldC0zMi1ieXRlcyE="
OLD = "whsec_b2xkLXRvb2wtc2lnbmluZy1zZWNyZXQtMzItYnl0ZSE="
OTHER = "whsec_c29tZWJvZHktZWxzZXMtc2VjcmV0LW9mLTMyLWJ5dGVzIQ=="


async def test_each_tool_request_is_signed_by_every_live_secret_over_the_bytes_sent():
    server, url, requests = await _tool_server()
    runner = ToolRunner(call_id="c1", allow_private_urls=True)
    runner.signing_secrets = [NEW, OLD]
    arguments = {"meal_type": "lunch", "description": "crème brûlée 🍮"}
    try:
        for _ in range(2):
            result = await runner.run({**SAVE_MEAL, "url": url}, arguments, agent_name="a")
            assert json.loads(result) == {"saved": True}
    finally:
        await runner.aclose()
        server.close()

    ids = set()
    for headers, body in requests:
        assert json.loads(body) == arguments
        assert headers["content-type"] == "application/json"
        assert len(headers["webhook-signature"].split()) == 2
        assert verified(NEW, headers, body) == "valid"
        assert verified(OLD, headers, body) == "valid"
        assert verified(OTHER, headers, body).startswith("invalid")
        assert "." not in headers["webhook-id"]
        ids.add(headers["webhook-id"])
    assert len(ids) == 2  # one id per request: a receiver deduplicating keeps both


async def test_a_changed_body_fails_the_check():
    server, url, requests = await _tool_server()
    runner = ToolRunner(call_id="c1", allow_private_urls=True)
    runner.signing_secrets = [NEW]
    try:
        await runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
    finally:
        await runner.aclose()
        server.close()

    [(headers, body)] = requests
    forged = body.replace(b"lunch", b"snack")
    assert verified(NEW, headers, forged).startswith("invalid")


async def test_without_secrets_a_tool_request_goes_unsigned_as_before():
    server, url, requests = await _tool_server()
    runner = ToolRunner(call_id="c1", allow_private_urls=True)
    try:
        await runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
    finally:
        await runner.aclose()
        server.close()

    [(headers, body)] = requests
    assert json.loads(body) == {"meal_type": "lunch"}
    assert not set(WEBHOOK_HEADERS) & set(headers)
    assert headers["x-voicecalls-tool"] == "save_meal"


async def test_a_call_signs_its_tools_with_the_secret_its_organization_made(web: Web) -> None:
    """Through the live API: the secret made with POST /tool-signing-secret/rotate comes
    in the call's session, and the job's tool requests verify with it."""
    made = web.ok("POST", "/api/v1/tool-signing-secret/rotate", web.orgs["demo"].client_key)
    secret = made["secret"]
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    server, url, requests = await _tool_server()
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        # The endpoint's stand-in is on loopback.
        config = Config(web.base_url, web.agent_key, tools_allow_private_urls=True)
        providers = TextProviders(llm=ScriptedLLM([]))
        job = CallJob(live.ctx, config=config, call_id=call_id, build=providers.build)
        try:
            assert await job.prepare() is not None
            assert secret in job.runner.signing_secrets
            await job.runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
        finally:
            server.close()
            live.ctx.shutdown(reason="test over")
            await live.finish()

    [(headers, body)] = requests
    assert verified(secret, headers, body) == "valid"
