"""With WEBHOOKS_ALLOW_PRIVATE_URLS off (production), webhooks never reach internal
addresses: refused when the endpoint is saved and again, after resolving, at send."""

from __future__ import annotations

import ipaddress
import socket
import threading

import pytest
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from tests.webhook_receiver import Receiver
from voicecalls.addresses import address_is_public
from webhooks import outbox, transport
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import DeliveryStatus, EventType, WebhookDelivery, WebhookEndpoint

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture(autouse=True)
def _guard_on(settings: object) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False


def resolve_as(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> None:
    """A DNS where `names` resolve to the given addresses; everything else as usual."""

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host in names:
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (address, port),
                )
                for address in names[host]
            ]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# Every form an internal IPv4 address can take inside an IPv6 one, and the special
# blocks Python's `is_global` (3.11) calls global.
NOT_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",  # deprecated 6to4 relay anycast
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "168.63.129.16",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fec0::1",  # site-local (deprecated, not global)
    "fd00:ec2::254",
    "ff02::1",
    "ff0e::1",
    "100::1",
    "2001:db8::1",
    "3fff::1",
    "5f00::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:0:127.0.0.1",  # IPv4-translated (SIIT)
    "::127.0.0.1",  # IPv4-compatible
    "::169.254.169.254",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2002:c0a8:101:1::1",  # 6to4 of 192.168.1.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::808:808",  # local-use NAT64: never public
    "64:ff9b:1:7f00:1::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (obfuscated)
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "2001:0:a00:1:8000:63bf:3fff:fdd2",  # Teredo, server 10.0.0.1
]
PUBLIC = [
    "93.184.215.14",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:1.1.1.1",
    "2002:101:101::1",  # 6to4 of 1.1.1.1
    "64:ff9b::101:101",  # NAT64 of 1.1.1.1
    "2001:0:4136:e378:8000:63bf:fefe:fefe",  # Teredo, server and client public
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_internal_addresses_in_every_form_are_not_public(address: str) -> None:
    assert not address_is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_unicast_addresses_in_every_form_are_public(address: str) -> None:
    assert address_is_public(address)


def test_the_teredo_client_address_is_unwrapped_from_its_obfuscation() -> None:
    assert ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe").teredo == (
        ipaddress.ip_address("65.54.227.120"),
        ipaddress.ip_address("127.0.0.1"),
    )


@pytest.mark.parametrize("address", [a for a in NOT_PUBLIC if "%" not in a])
def test_endpoint_urls_at_internal_addresses_are_refused_when_saved(
    api: APIClient, address: str
) -> None:
    host = f"[{address}]" if ":" in address else address
    response = api.post(
        "/api/v1/webhook-endpoints",
        {"url": f"https://{host}/hook", "events": [EventType.CALL_STATUS_CHANGED]},
        format="json",
    )

    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0]["attr"] == "url"
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize(
    "address", ["2002:7f00:1::", "64:ff9b::a9fe:a9fe", "fec0::1", "192.88.99.1", "::127.0.0.1"]
)
def test_a_name_resolving_to_an_internal_transition_address_is_refused_at_connect(
    organization: Organization, call: Call, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    resolve_as(monkeypatch, {"hooks.example.com": [address]})

    delivery = deliver_to("https://hooks.example.com/x", organization, call)

    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "refused: hooks.example.com resolves to a non-public address"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://10.0.0.1/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://localhost/x",
        "https://LOCALHOST./x",
        "https://api.localhost/x",
        "https://metadata.google.internal/computeMetadata/v1/",
        "http://hooks.example.com/x",
    ],
)
def test_internal_or_plain_http_urls_are_refused_when_saved(url: str) -> None:
    assert transport.url_problem(url, allow_private=False) is not None


def test_a_public_https_url_is_accepted() -> None:
    assert (
        transport.url_problem("https://hooks.example.com:8443/x?a=1", allow_private=False) is None
    )


@pytest.fixture
def call(organization: Organization) -> Call:
    return CallFactory(organization=organization)


def deliver_to(url: str, organization: Organization, call: Call) -> WebhookDelivery:
    """An endpoint saved while private URLs were allowed (or pointing at a name that
    later resolves inside), then one delivery attempt with the guard on."""
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url=url,
        events=[EventType.CALL_STATUS_CHANGED],
        secret="whsec_dm9pY2VjYWxscy10ZXN0LXNlY3JldC0zMi1ieXRlcyE=",
    )
    outbox.call_status_changed_record(
        call_id=call.id,
        from_status=CallStatus.CONNECTING,
        to_status=CallStatus.ACTIVE,
        end_reason=None,
        at=call.created_at,
    )
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    delivery.refresh_from_db()
    return delivery


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.0.0.1", "169.254.169.254", "[::1]", "hooks.attacker.example"],
)
def test_deliveries_to_internal_targets_are_refused(
    organization: Organization, call: Call, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    # A name the attacker controls, resolving to loopback.
    resolve_as(monkeypatch, {"hooks.attacker.example": ["127.0.0.1"]})
    with Receiver() as receiver:
        port = receiver.port
        delivery = deliver_to(f"https://{host}:{port}/x", organization, call)

    assert receiver.received == []
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error.startswith("refused:")
    assert delivery.next_attempt_at is None
    (logged,) = delivery.attempts.all()
    assert logged.status_code is None


def test_a_name_with_any_internal_address_is_refused(
    organization: Organization, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve_as(monkeypatch, {"hooks.example.com": ["93.184.215.14", "10.0.0.7"]})

    delivery = deliver_to("https://hooks.example.com/x", organization, call)

    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "refused: hooks.example.com resolves to a non-public address"


def test_the_request_goes_to_the_address_that_was_checked(
    organization: Organization, call: Call, monkeypatch: pytest.MonkeyPatch, settings: object
) -> None:
    """DNS rebinding: the name is resolved once, and the connection is made to that
    address, with the name kept in the Host header."""
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    lookups = []

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list:
        if host == "hooks.example.com":
            lookups.append(host)
            host = "127.0.0.1" if len(lookups) == 1 else "192.0.2.1"  # rebinds afterwards
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]

    with Receiver() as receiver:
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        delivery = deliver_to(f"http://hooks.example.com:{receiver.port}/x", organization, call)

    assert lookups == ["hooks.example.com"]
    assert delivery.status == DeliveryStatus.SUCCEEDED
    (received,) = receiver.received
    assert received.headers["host"] == f"hooks.example.com:{receiver.port}"


def test_an_unresolvable_name_is_retried(
    organization: Organization, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    def getaddrinfo(*args: object, **kwargs: object) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    delivery = deliver_to("https://hooks.example.com/x", organization, call)

    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.last_error.startswith("DNS resolution failed for hooks.example.com")


def test_a_name_server_that_does_not_answer_ends_the_attempt_at_its_timeout(
    organization: Organization, call: Call, monkeypatch: pytest.MonkeyPatch, settings: object
) -> None:
    """getaddrinfo has no timeout: the resolver's own (5 s a try, per server and attempt)
    kept the attempt past its hold on the delivery, and the overdue sweep sent it again."""
    settings.WEBHOOKS_TIMEOUT_SECONDS = 0.5
    release, answered = threading.Event(), threading.Event()

    def silent_name_server(*args: object, **kwargs: object) -> list:  # a stand-in
        release.wait(30)
        answered.set()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", silent_name_server)
    try:
        delivery = deliver_to("https://hooks.silent.example/x", organization, call)
        still_resolving = not answered.is_set()
    finally:
        release.set()

    assert still_resolving
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.last_error == "DNS resolution of hooks.silent.example took over 0.5 s"


def test_the_internal_address_a_refused_name_resolves_to_is_never_shown_to_the_customer(
    organization: Organization, call: Call, monkeypatch: pytest.MonkeyPatch, api: APIClient
) -> None:
    """The platform's resolver knows names of its own network (a cluster's services, a
    private zone): the delivery log must not turn into a way to look them up."""
    resolve_as(monkeypatch, {"db.cluster.example": ["10.96.0.12"]})

    delivery = deliver_to("https://db.cluster.example/x", organization, call)
    response = api.get(f"/api/v1/webhook-endpoints/{delivery.endpoint_id}/deliveries")

    assert response.status_code == 200
    (listed,) = response.json()["items"]
    assert listed["last_error"] == "refused: db.cluster.example resolves to a non-public address"
    assert "10.96" not in response.content.decode()
