from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import FieldError
from django.db import connection

import voicecalls.settings as settings_module
from accounts.models import Organization
from providerkeys import crypto
from providerkeys.models import ProviderKey
from providerkeys.services import provider_key_create
from tests.factories import ProviderKeyFactory
from tests.test_settings import PRODUCTION_SECRETS, run_check

pytestmark = pytest.mark.django_db

PLAINTEXT = "sk-ant-api03-very-secret-value-1234"


def raw_column(key: ProviderKey) -> bytes:
    """The column as the database holds it, read past the ORM."""
    key_id = ProviderKey._meta.pk.get_db_prep_value(key.id, connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM providerkeys_providerkey WHERE id = %s", [key_id])
        return bytes(cursor.fetchone()[0])


def test_the_column_holds_ciphertext_not_the_key(organization: Organization) -> None:
    key = provider_key_create(
        organization=organization, provider_type="llm", provider_name="anthropic", api_key=PLAINTEXT
    )

    raw = raw_column(key)

    assert PLAINTEXT.encode() not in raw
    assert PLAINTEXT[:12].encode() not in raw
    assert raw[:1] == b"\x80"  # the Fernet version byte of django-cryptography's signer
    assert ProviderKey.objects.get().api_key == PLAINTEXT


def test_the_same_key_encrypts_differently_each_time(organization: Organization) -> None:
    first = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)
    second = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)

    assert raw_column(first) != raw_column(second)


def test_the_key_cannot_be_searched_by_value() -> None:
    with pytest.raises(FieldError):
        list(ProviderKey.objects.filter(api_key=PLAINTEXT))


def test_rotating_secret_key_does_not_touch_provider_keys(
    organization: Organization, settings
) -> None:
    """django-cryptography signs with SECRET_KEY by default; ours must not."""
    key = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)
    settings.SECRET_KEY = "a-completely-different-secret-key"

    assert ProviderKey.objects.get(pk=key.pk).api_key == PLAINTEXT


def test_another_cryptography_key_cannot_read_it(organization: Organization, settings) -> None:
    key = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)
    settings.CRYPTOGRAPHY_KEY = "not-the-key-it-was-written-with"
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    with pytest.raises(crypto.UndecryptableValue):
        ProviderKey.objects.get(pk=key.pk)


def test_a_fallback_key_still_reads_it(organization: Organization, settings) -> None:
    settings.CRYPTOGRAPHY_KEY = "old-key"
    key = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)
    settings.CRYPTOGRAPHY_KEY = "new-key"
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = ["old-key"]

    assert ProviderKey.objects.get(pk=key.pk).api_key == PLAINTEXT


def test_tampered_ciphertext_is_refused(organization: Organization) -> None:
    key = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)
    raw = bytearray(raw_column(key))
    raw[30] ^= 0x01

    with pytest.raises(crypto.UndecryptableValue):
        crypto.decrypt(bytes(raw))


def test_the_environment_string_and_the_librarys_derived_key_are_one_key(settings) -> None:
    """django-cryptography replaces settings.CRYPTOGRAPHY_KEY with its PBKDF2 derivation
    at import; the same secret given as a string (a fallback, override_settings) must
    mean the same key, or rotation would lock keys out."""
    assert isinstance(settings.CRYPTOGRAPHY_KEY, bytes)
    assert crypto._master_key(settings.CRYPTOGRAPHY_KEY) == crypto._master_key(
        settings_module.CRYPTOGRAPHY_KEY
    )


def test_production_refuses_a_cryptography_key_equal_to_secret_key() -> None:
    same = PRODUCTION_SECRETS["SECRET_KEY"]

    result = run_check({**PRODUCTION_SECRETS, "CRYPTOGRAPHY_KEY": same, "DEBUG": "0"})

    assert result.returncode != 0
    assert "CRYPTOGRAPHY_KEY must differ from SECRET_KEY" in result.stderr
    assert same not in result.stderr


def test_fallback_keys_come_comma_separated_from_the_environment_or_a_file(
    tmp_path: Path,
) -> None:
    show = "from django.conf import settings; print(settings.CRYPTOGRAPHY_KEY_FALLBACKS)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOGRAPHY_KEY")}
    env["DEBUG"] = "1"

    def fallbacks(**extra: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", show],
            cwd=settings_module.BASE_DIR,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()

    secret_file = tmp_path / "fallbacks"
    secret_file.write_text("older-key\n")

    assert fallbacks(CRYPTOGRAPHY_KEY_FALLBACKS="old-key, older-key,") == "['old-key', 'older-key']"
    assert fallbacks(CRYPTOGRAPHY_KEY_FALLBACKS_FILE=str(secret_file)) == "['older-key']"
