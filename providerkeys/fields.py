"""An encrypted text field built on django-cryptography, keyed by providerkeys.crypto."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.encoding import force_bytes
from django_cryptography.fields import get_encrypted_field

from providerkeys import crypto


class EncryptedSecretField(get_encrypted_field(models.CharField, True)):
    """A string stored as ciphertext (binary column); only `isnull` lookups work.

    The library's field pickles values and signs with `SECRET_KEY`; this one stores
    UTF-8 and uses keys derived from `CRYPTOGRAPHY_KEY` (and its fallbacks) only.
    """

    def _dump(self, value: Any) -> bytes:
        return crypto.encrypt(force_bytes(value))

    def _load(self, value: bytes) -> str:
        return crypto.decrypt(value).decode()
