"""An endpoint on an internationalised domain name gets its deliveries: DNS, TLS and the
Host header take its punycode form (the Unicode name failed every certificate check,
and over http crashed every attempt)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from accounts.models import Organization
from tests.factories import CallFactory
from tests.test_webhook_receiver_answers import call_status_changed
from tests.webhook_receiver import Receiver
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import DeliveryStatus, WebhookDelivery
from webhooks.services import webhook_endpoint_create
from webhooks.transport import url_problem

NAME = "хуки.пример.рф"
ASCII_NAME = NAME.encode("idna").decode()


@pytest.fixture
def name_resolves_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS answers this machine for the name, in either form."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host in (NAME, ASCII_NAME):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _delivered_once(organization: Organization, url: str) -> tuple[str | None, WebhookDelivery]:
    webhook_endpoint_create(organization=organization, url=url, events=["call.status_changed"])
    call_status_changed(CallFactory(organization=organization))
    delivery = WebhookDelivery.objects.get()
    result = webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    delivery.refresh_from_db()
    return result, delivery


def test_a_delivery_to_an_idn_endpoint_names_its_host_in_punycode(
    organization: Organization, name_resolves_here: None
) -> None:
    with Receiver() as receiver:
        result, delivery = _delivered_once(organization, f"http://{NAME}:{receiver.port}/hooks")

    assert (result, delivery.attempts.count()) == (DeliveryStatus.SUCCEEDED, 1)
    (received,) = receiver.received
    assert received.headers["host"] == f"{ASCII_NAME}:{receiver.port}"


def test_an_https_delivery_to_an_idn_endpoint_with_a_valid_certificate_succeeds(
    organization: Organization, name_resolves_here: None, monkeypatch, tmp_path
) -> None:
    """Production's case (https): the certificate names the host as DNS does (punycode)."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", key, "-out", cert, "-subj", f"/CN={ASCII_NAME}",
            "-addext", f"subjectAltName=DNS:{ASCII_NAME}",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    with Receiver(tls=(cert, key)) as receiver:
        result, delivery = _delivered_once(organization, f"https://{NAME}:{receiver.port}/hooks")

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
    assert url_problem(url, allow_private=False) == problem
