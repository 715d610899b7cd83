"""The tool transport connects to the address it checked, but TLS must still verify
the certificate against the URL's host name (not the IP it connected to), send that
name as SNI and in the Host header, and reuse a kept-alive connection."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from livekit.agents import ToolError

import agent.tool_http as tool_http
from agent.workflow import ToolRunner

HOST = "tools.tls.example"
TOOL = {"name": "save_meal", "description": "d", "parameters": {"type": "object"}}


def _cert(issuer_key, issuer_name, subject_key, subject, sans, *, ca):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path, monkeypatch):
    """A CA the runner trusts (SSL_CERT_FILE, read by httpx) and a leaf maker."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = _cert(ca_key, ca_name, ca_key, ca_name, None, ca=True)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    def leaf(sans) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
        cert = _cert(ca_key, ca_name, key, subject, sans, ca=False)
        (tmp_path / "leaf.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tmp_path / "leaf.pem")
        return context

    return leaf


@pytest.fixture
def resolver(monkeypatch):
    """HOST resolves to loopback, which stands in for a public address here."""
    real = socket.getaddrinfo
    asked = []

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode("ascii")
        if host == HOST:
            asked.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(tool_http, "address_is_public", lambda address: address == "127.0.0.1")
    return asked


async def _server(context: ssl.SSLContext):
    seen = {"connections": 0, "requests": 0, "sni": [], "host": []}

    def sni(sslobj, name, ctx):
        seen["sni"].append(name)

    context.sni_callback = sni

    async def handle(reader, writer):
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen["requests"] += 1
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:])}
                seen["host"].append(headers.get("host"))
                await reader.readexactly(int(headers.get("content-length", "0")))
                body = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1], seen


async def test_tls_verifies_the_url_host_name_and_reuses_the_connection(pki, resolver):
    server, port, seen = await _server(pki([x509.DNSName(HOST)]))
    runner = ToolRunner(call_id="c1")
    spec = {**TOOL, "url": f"https://{HOST}:{port}/meals"}
    try:
        assert await runner.run(spec, {}, agent_name="a") == '{"ok": true}'
        assert await runner.run(spec, {}, agent_name="a") == '{"ok": true}'
    finally:
        await runner.aclose()
        server.close()
    assert seen["sni"] == [HOST]  # the name, not 127.0.0.1
    assert seen["host"] == [f"{HOST}:{port}"] * 2
    assert (seen["connections"], seen["requests"]) == (1, 2)


@pytest.mark.parametrize(
    "sans",
    [
        [x509.DNSName("other.example")],
        # A certificate for the address connected to is not one for the URL's name.
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    ],
    ids=["other-name", "the-ip"],
)
async def test_a_certificate_not_for_the_url_host_name_is_refused(pki, resolver, sans):
    server, port, seen = await _server(pki(sans))
    runner = ToolRunner(call_id="c1")
    try:
        with pytest.raises(ToolError):
            await runner.run({**TOOL, "url": f"https://{HOST}:{port}/m"}, {}, agent_name="a")
    finally:
        await runner.aclose()
        server.close()
    assert seen["requests"] == 0


async def test_an_idle_connection_is_not_reused_after_httpx_keepalive_expiry(
    pki, resolver, monkeypatch
):
    """httpx's transport keeps an idle connection 5 s (DEFAULT_LIMITS); the pool built
    by hand for the public-only backend kept them for ever. A load balancer or NAT that
    dropped the idle connection silently then swallowed the next tool call: the caller
    waited out the whole timeout for an answer that could never come."""
    import time as real_time

    import httpcore._async.http11 as http11

    import agent.workflow as workflow

    monkeypatch.setattr(workflow, "TOOL_TIMEOUT_SECONDS", 2.0)
    context = pki([x509.DNSName(HOST)])
    connections = {"n": 0}

    async def handle(reader, writer):
        connections["n"] += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [
                    ln
                    for ln in head.decode().split("\r\n")
                    if ln.lower().startswith("content-length")
                ]
                await reader.readexactly(int(length[0].split(":")[1]) if length else 0)
                if served:  # dropped by a middlebox: nothing comes back on this one
                    await asyncio.sleep(30)
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    runner = ToolRunner(call_id="c1")
    spec = {**TOOL, "url": f"https://{HOST}:{port}/m"}
    try:
        assert await runner.run(spec, {}, agent_name="a") == "{}"

        class _Later:  # a minute of conversation between two tool calls
            @staticmethod
            def monotonic() -> float:
                return real_time.monotonic() + 60

        monkeypatch.setattr(http11, "time", _Later)
        assert await runner.run(spec, {}, agent_name="a") == "{}"
    finally:
        await runner.aclose()
        server.close()
    assert connections["n"] == 2


async def test_a_proxy_in_the_environment_is_not_used_for_tool_calls(pki, resolver, monkeypatch):
    """Through a proxy, the proxy would resolve the name again and connect where it
    points then (rebinding): tool calls connect to the address checked, directly."""
    seen = []

    async def proxy(reader, writer):
        seen.append((await reader.readuntil(b"\r\n")).decode().strip())
        writer.close()

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    monkeypatch.setenv(
        "HTTPS_PROXY", f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    )
    server, port, _ = await _server(pki([x509.DNSName(HOST)]))
    runner = ToolRunner(call_id="c1")
    try:
        result = await runner.run({**TOOL, "url": f"https://{HOST}:{port}/m"}, {}, agent_name="a")
    finally:
        await runner.aclose()
        server.close()
        proxy_server.close()
    assert (result, seen) == ('{"ok": true}', [])


async def test_a_dead_address_first_does_not_cost_the_tool_call(pki, monkeypatch):
    """A name with several addresses, the first one silent (a blackholed IPv6 route, a
    server gone): httpx's own backend (anyio) tries the next after 250 ms (happy
    eyeballs); connecting to the checked addresses one by one waited out the whole
    timeout on the first."""
    import agent.workflow as workflow

    monkeypatch.setattr(workflow, "TOOL_TIMEOUT_SECONDS", 3.0)
    server, port, seen = await _server(pki([x509.DNSName(HOST)]))
    # 127.0.0.2:port accepts nothing: its queue is full, so a SYN there goes unanswered.
    dead = socket.socket()
    dead.bind(("127.0.0.2", port))
    dead.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.2", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    real = socket.getaddrinfo

    def getaddrinfo(host, port_, *args, **kwargs):
        if (host.decode() if isinstance(host, bytes) else host) == HOST:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port_)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_)),
            ]
        return real(host, port_, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(tool_http, "address_is_public", lambda a: a.startswith("127."))
    runner = ToolRunner(call_id="c1")
    try:
        result = await runner.run({**TOOL, "url": f"https://{HOST}:{port}/m"}, {}, agent_name="a")
    finally:
        await runner.aclose()
        server.close()
        for sock in (dead, *fillers):
            sock.close()
    assert result == '{"ok": true}'
