from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from accounts.models import Organization
from providerkeys.models import ProviderKey
from providerkeys.services import provider_key_create, provider_key_update
from tests.factories import ProviderKeyFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"provider_type": "asr"}, "provider_type"),
        ({"provider_name": "cartesia"}, "provider_name"),
        ({"api_key": "sk-1234"}, "api_key"),
        ({"api_key": "sk-" + "x" * 510}, "api_key"),
        ({"api_key": "sk-tab\tkey-123"}, "api_key"),
    ],
)
def test_create_keeps_the_rules_whoever_calls_it(
    organization: Organization, changes: dict, field: str
) -> None:
    """The admin and any future caller get the API's rules: the service is the gate."""
    arguments = {"provider_type": "stt", "provider_name": "deepgram", "api_key": "sk-valid-key"}

    with pytest.raises(ValidationError) as excinfo:
        provider_key_create(organization=organization, **{**arguments, **changes})

    assert list(excinfo.value.message_dict) == [field]
    assert changes.get("api_key", "sk-valid-key") not in str(excinfo.value)
    assert ProviderKey.objects.count() == 0


def test_update_of_a_key_deleted_meanwhile_raises_does_not_exist(
    organization: Organization,
) -> None:
    key = ProviderKeyFactory(organization=organization)
    ProviderKey.objects.filter(pk=key.pk).delete()

    with pytest.raises(ProviderKey.DoesNotExist):
        provider_key_update(provider_key=key, is_default=True)
