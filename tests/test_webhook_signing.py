from __future__ import annotations

import base64
import datetime
import json
import time
from pathlib import Path

import pytest
from django.conf import settings
from standardwebhooks import Webhook, WebhookVerificationError

from webhooks.signing import secret_generate, signature, signed_headers

# The documented test vector (docs/webhooks.md).
VECTOR_SECRET = "whsec_dm9pY2VjYWxscy10ZXN0LXNlY3JldC0zMi1ieXRlcyE="
VECTOR_ID = "evt_01HZX0000000000000000000"
VECTOR_TIMESTAMP = 1767225600
VECTOR_BODY = b'{"type":"call.ended","timestamp":"2026-01-01T00:00:00Z","data":{"call_id":"c_1"}}'
VECTOR_SIGNATURE = "v1,U3CYsdumUswDNXFUG6jt/22uJUtkl/THeBF9KKpP2dA="


def test_the_documented_test_vector_holds() -> None:
    assert (
        signature(
            secret=VECTOR_SECRET, msg_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY
        )
        == VECTOR_SIGNATURE
    )


def test_standardwebhooks_signs_the_vector_the_same_way() -> None:
    at = datetime.datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=datetime.UTC)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, at, VECTOR_BODY.decode()) == VECTOR_SIGNATURE


def test_the_docs_show_the_test_vector() -> None:
    docs = (Path(settings.BASE_DIR) / "docs" / "webhooks.md").read_text()
    for value in (VECTOR_SECRET, VECTOR_ID, str(VECTOR_TIMESTAMP), VECTOR_SIGNATURE):
        assert value in docs
    assert VECTOR_BODY.decode() in docs


def test_a_generated_secret_is_whsec_and_32_random_bytes() -> None:
    secrets = {secret_generate() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


def test_standardwebhooks_verifies_our_headers() -> None:
    secret = secret_generate()
    body = json.dumps({"type": "call.status_changed", "data": {"é": "ü"}}, ensure_ascii=False)
    headers = signed_headers(
        secrets=[secret], msg_id="evt_abc", timestamp=int(time.time()), body=body.encode()
    )
    assert Webhook(secret).verify(body.encode(), headers) == json.loads(body)


def test_a_tampered_body_or_another_secret_fails_verification() -> None:
    secret = secret_generate()
    body = b'{"type":"call.ended"}'
    headers = signed_headers(
        secrets=[secret], msg_id="evt_abc", timestamp=int(time.time()), body=body
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"type":"call.endeD"}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_generate()).verify(body, headers)


def test_during_a_rotation_both_secrets_verify() -> None:
    old, new = secret_generate(), secret_generate()
    body = b'{"type":"call.ended"}'
    headers = signed_headers(
        secrets=[new, old], msg_id="evt_abc", timestamp=int(time.time()), body=body
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers) == {"type": "call.ended"}
    assert Webhook(old).verify(body, headers) == {"type": "call.ended"}
