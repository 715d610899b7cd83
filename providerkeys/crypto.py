"""Encryption of customers' provider keys, keyed by `CRYPTOGRAPHY_KEY` alone.

django-cryptography's own field signs its ciphertext with `SECRET_KEY` (its
`FernetSigner()` default), so rotating `SECRET_KEY` would make every stored key
unreadable. Here both halves come from `CRYPTOGRAPHY_KEY`: an AES-256-CBC key and an
HMAC-SHA256 key, split by HKDF from the library's own PBKDF2 derivation. The
library's `FernetBytes`/`FernetSigner` do the actual encryption.

Reads try `CRYPTOGRAPHY_KEY`, then each of `CRYPTOGRAPHY_KEY_FALLBACKS`; writes always
use `CRYPTOGRAPHY_KEY`. That makes rotation possible without downtime
(docs/key-rotation.md, `manage.py rotate_provider_keys`).
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django_cryptography.core.signing import BadSignature, FernetSigner
from django_cryptography.utils.crypto import FernetBytes, InvalidToken, pbkdf2

# Same derivation as django_cryptography.conf.CryptographyConf.configure.
_PBKDF2_ITERATIONS = 30000
_HKDF_INFO = b"voicecalls.providerkeys v1"


class UndecryptableValue(Exception):
    """No configured key opens this ciphertext (wrong key, or tampered data)."""


def _master_key(secret: str | bytes) -> bytes:
    """The 32-byte master key for a configured secret.

    When django-cryptography is imported, its AppConf replaces
    `settings.CRYPTOGRAPHY_KEY` (a string from the environment) with the PBKDF2
    derivation of it (32 bytes). Fallbacks, and values set by `override_settings`,
    are still strings: derive those the same way so one secret always means one key.
    """
    if isinstance(secret, bytes):
        return secret
    return _derive(secret, bytes(settings.CRYPTOGRAPHY_SALT))


@functools.lru_cache(maxsize=16)
def _derive(secret: str, salt: bytes) -> bytes:
    return pbkdf2(secret, salt, _PBKDF2_ITERATIONS, dklen=32, digest=hashes.SHA256())


@functools.lru_cache(maxsize=16)
def _cipher(master: bytes) -> FernetBytes:
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_HKDF_INFO).derive(master)
    return FernetBytes(key=material[:32], signer=FernetSigner(key=material[32:]))


def _current() -> FernetBytes:
    return _cipher(_master_key(settings.CRYPTOGRAPHY_KEY))


def _all() -> list[FernetBytes]:
    fallbacks = getattr(settings, "CRYPTOGRAPHY_KEY_FALLBACKS", [])
    return [_current(), *(_cipher(_master_key(secret)) for secret in fallbacks)]


def encrypt(plaintext: bytes) -> bytes:
    return _current().encrypt(plaintext)


def decrypt_with_index(ciphertext: bytes) -> tuple[bytes, int]:
    """The plaintext and which key opened it: 0 is `CRYPTOGRAPHY_KEY`, n the n-th fallback."""
    for index, cipher in enumerate(_all()):
        try:
            return cipher.decrypt(ciphertext), index
        except (BadSignature, InvalidToken):
            continue
    raise UndecryptableValue("No configured CRYPTOGRAPHY_KEY opens this value.")


def decrypt(ciphertext: bytes) -> bytes:
    return decrypt_with_index(ciphertext)[0]
