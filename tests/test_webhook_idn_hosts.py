"""An endpoint on an internationalised domain name gets its deliveries: DNS, TLS and the
Host header take its punycode form (the Unicode name failed every certificate check,
and over http crashed every attempt)."""

from __future__ import annotations

import socket

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from tests.webhook_receiver import Receiver
from webhooks import outbox
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import DeliveryStatus, WebhookDelivery

NAME = "хуки.пример.рф"


def test_a_delivery_to_an_idn_endpoint_is_made_or_logged(
    api: APIClient, organization: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host in (NAME, NAME.encode("idna").decode()):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with Receiver() as receiver:
        url = f"http://{NAME}:{receiver.port}/hooks"
        created = api.post(
            "/api/v1/webhook-endpoints",
            {"url": url, "events": ["call.status_changed"]},
            format="json",
        )
        assert created.status_code == 201, created.json()
        call = CallFactory(organization=organization)
        with transaction.atomic():
            Call.objects.filter(pk=call.pk).update(status=CallStatus.ACTIVE)
            outbox.call_status_changed_record(
                call_id=call.id,
                from_status=CallStatus.CONNECTING,
                to_status=CallStatus.ACTIVE,
                end_reason=None,
                at=timezone.now(),
            )
        delivery = WebhookDelivery.objects.get()
        result = webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)

    delivery.refresh_from_db()
    assert delivery.attempts.count() == 1
    assert result == DeliveryStatus.SUCCEEDED
    (received,) = receiver.received
    assert received.headers["host"] == f"{NAME.encode('idna').decode()}:{receiver.port}"


def test_an_https_delivery_to_an_idn_endpoint_with_a_valid_certificate_succeeds(
    organization: Organization, monkeypatch: pytest.MonkeyPatch, tmp_path: object, settings: object
) -> None:
    """Production's case (https): the certificate names the host as DNS does (punycode)."""
    import subprocess

    from webhooks.services import webhook_endpoint_create

    ascii_name = NAME.encode("idna").decode()
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", key, "-out", cert, "-subj", f"/CN={ascii_name}",
            "-addext", f"subjectAltName=DNS:{ascii_name}",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host in (NAME, ascii_name):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with Receiver(tls=(cert, key)) as receiver:
        webhook_endpoint_create(
            organization=organization,
            url=f"https://{NAME}:{receiver.port}/hooks",
            events=["call.status_changed"],
        )
        call = CallFactory(organization=organization)
        with transaction.atomic():
            Call.objects.filter(pk=call.pk).update(status=CallStatus.ACTIVE)
            outbox.call_status_changed_record(
                call_id=call.id,
                from_status=CallStatus.CONNECTING,
                to_status=CallStatus.ACTIVE,
                end_reason=None,
                at=timezone.now(),
            )
        delivery = WebhookDelivery.objects.get()
        result = webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)

    delivery.refresh_from_db()
    assert (result, delivery.last_error) == (DeliveryStatus.SUCCEEDED, "")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        # Fullwidth letters map to "localhost", as a browser maps them.
        ("https://ｌｏｃａｌｈｏｓｔ/hooks", "The URL must not point at a local or internal host."),
        ("https://" + "ü" * 70 + ".example/hooks", "Enter a valid host name."),  # > 63
        ("https://a\u200db.example/hooks", "Enter a valid host name."),
    ],
)
def test_a_host_is_judged_in_the_form_dns_takes(url: str, problem: str) -> None:
    from webhooks.transport import url_problem

    assert url_problem(url, allow_private=False) == problem
