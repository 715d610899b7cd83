from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import Organization
from providerkeys.fields import EncryptedSecretField

MASK = "••••"
API_KEY_MIN_LENGTH = 8
API_KEY_MAX_LENGTH = 512


def is_printable_ascii(value: str) -> bool:
    return all(" " <= char <= "~" for char in value)


class ProviderType(models.TextChoices):
    STT = "stt", "Speech-to-text"
    LLM = "llm", "Language model"
    TTS = "tts", "Text-to-speech"


class ProviderKey(models.Model):
    """A customer's own key for an STT/LLM/TTS provider (BYOK).

    `api_key` is ciphertext at rest; only `last4` is stored readable, for masking.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="provider_keys"
    )
    provider_type = models.CharField(max_length=3, choices=ProviderType.choices)
    provider_name = models.CharField(max_length=50)
    api_key = EncryptedSecretField(max_length=API_KEY_MAX_LENGTH)
    last4 = models.CharField(max_length=4)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "provider_type"],
                condition=models.Q(is_default=True),
                name="one_default_provider_key_per_type",
            ),
            models.CheckConstraint(
                condition=models.Q(provider_type__in=ProviderType.values),
                name="provider_key_type_valid",
            ),
        ]
        indexes = [
            # provider_key_for: the newest key of one provider for an organization.
            models.Index(
                fields=["organization", "provider_type", "provider_name", "-created_at"],
                name="provider_key_lookup",
            ),
            models.Index(fields=["organization", "-created_at", "-id"], name="provider_key_list"),
        ]

    def __str__(self) -> str:
        return f"{self.provider_type}/{self.provider_name} {self.masked_key}"

    @property
    def masked_key(self) -> str:
        return f"{MASK}{self.last4}"
