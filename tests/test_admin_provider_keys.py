from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Organization
from providerkeys.models import ProviderKey
from providerkeys.services import MAX_KEYS_PER_ORGANIZATION
from tests.factories import ProviderKeyFactory

pytestmark = pytest.mark.django_db

PLAINTEXT = "el_live_a1b2c3d4e5f6a7b8c9d0"
ADD_URL = reverse("admin:providerkeys_providerkey_add")
LIST_URL = reverse("admin:providerkeys_providerkey_changelist")


def change_url(key: ProviderKey) -> str:
    return reverse("admin:providerkeys_providerkey_change", args=[key.pk])


def add_form(organization: Organization, **changes: object) -> dict:
    return {
        "organization": organization.pk,
        "provider_type": "tts",
        "provider_name": "elevenlabs",
        "api_key": PLAINTEXT,
        **changes,
    }


def test_staff_add_a_key_through_a_password_field(
    staff_client: Client, organization: Organization
) -> None:
    page = staff_client.get(ADD_URL).content.decode()
    assert 'type="password" name="api_key"' in page

    response = staff_client.post(ADD_URL, add_form(organization, is_default="on"))

    assert response.status_code == 302
    key = ProviderKey.objects.get()
    assert (key.organization, key.provider_type, key.provider_name) == (
        organization,
        "tts",
        "elevenlabs",
    )
    assert key.api_key == PLAINTEXT
    assert key.last4 == "c9d0"
    assert key.is_default is True


def test_a_form_with_errors_never_renders_the_key_back(
    staff_client: Client, organization: Organization
) -> None:
    response = staff_client.post(ADD_URL, add_form(organization, provider_name="groq"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Unknown tts provider. Allowed: elevenlabs, cartesia, openai, deepgram." in page
    assert PLAINTEXT not in page
    assert 'type="password" name="api_key"' in page
    assert ProviderKey.objects.count() == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"provider_type": "stt", "provider_name": "elevenlabs"}, "Unknown stt provider."),
        ({"api_key": "short"}, "Ensure this value has at least 8 characters"),
        ({"api_key": "sk-ключ-секрет"}, "Must contain only printable ASCII characters."),
    ],
)
def test_the_add_form_refuses_what_the_api_refuses(
    staff_client: Client, organization: Organization, changes: dict, message: str
) -> None:
    response = staff_client.post(ADD_URL, add_form(organization, **changes))

    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    assert changes.get("api_key", PLAINTEXT) not in page
    assert ProviderKey.objects.count() == 0


def test_a_new_default_from_the_admin_unsets_the_previous_one(
    staff_client: Client, organization: Organization
) -> None:
    old = ProviderKeyFactory(
        organization=organization, provider_type="tts", provider_name="cartesia", is_default=True
    )

    response = staff_client.post(ADD_URL, add_form(organization, is_default="on"))

    assert response.status_code == 302
    old.refresh_from_db()
    assert old.is_default is False
    assert ProviderKey.objects.get(is_default=True).provider_name == "elevenlabs"


def test_the_change_list_shows_only_the_mask(
    staff_client: Client, organization: Organization
) -> None:
    ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)

    page = staff_client.get(LIST_URL).content.decode()

    assert "••••c9d0" in page
    assert PLAINTEXT not in page


def test_the_change_page_shows_only_the_mask_and_offers_no_key_field(
    staff_client: Client, organization: Organization
) -> None:
    key = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)

    page = staff_client.get(change_url(key)).content.decode()

    assert "••••c9d0" in page
    assert PLAINTEXT not in page
    assert 'name="api_key"' not in page


def test_making_a_key_default_on_its_change_page_goes_through_the_service(
    staff_client: Client, organization: Organization
) -> None:
    old = ProviderKeyFactory(organization=organization, is_default=True)
    new = ProviderKeyFactory(organization=organization, provider_name="groq")

    response = staff_client.post(change_url(new), {"is_default": "on"})

    assert response.status_code == 302
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.is_default, new.is_default) == (False, True)


def test_a_key_deleted_while_its_change_page_saves_is_a_message_not_a_500(
    staff_client: Client, organization: Organization
) -> None:
    """The key is deleted (by the API) after the admin loaded it for the save."""
    from django.db.models.signals import post_init

    key = ProviderKeyFactory(organization=organization)

    def deleted_meanwhile(sender: Any, instance: ProviderKey, **kwargs: Any) -> None:
        post_init.disconnect(deleted_meanwhile, sender=ProviderKey)
        ProviderKey.objects.filter(pk=key.pk)._raw_delete(using="default")

    post_init.connect(deleted_meanwhile, sender=ProviderKey)
    try:
        response = staff_client.post(change_url(key), {"is_default": "on"}, follow=True)
    finally:
        post_init.disconnect(deleted_meanwhile, sender=ProviderKey)

    assert response.status_code == 200
    assert "The key was deleted meanwhile: nothing was saved." in response.content.decode()
    # (The deletion ran in the admin's transaction here, rolled back with it.)
    assert ProviderKey.objects.get(pk=key.pk).is_default is False


def test_a_key_over_the_organizations_cap_is_a_message_not_a_500(
    staff_client: Client, organization: Organization
) -> None:
    ProviderKeyFactory.create_batch(MAX_KEYS_PER_ORGANIZATION, organization=organization)

    response = staff_client.post(ADD_URL, add_form(organization), follow=True)

    assert response.redirect_chain == [(ADD_URL, 302)]
    assert "at most 100 provider keys" in response.content.decode()
    assert ProviderKey.objects.count() == MAX_KEYS_PER_ORGANIZATION


def test_delete_and_history_pages_show_only_the_mask(
    staff_client: Client, organization: Organization
) -> None:
    key = ProviderKeyFactory(organization=organization, api_key=PLAINTEXT)
    staff_client.post(change_url(key), {"is_default": "on"})

    for name in ["delete", "history"]:
        url = reverse(f"admin:providerkeys_providerkey_{name}", args=[key.pk])
        page = staff_client.get(url).content.decode()
        assert "••••c9d0" in page
        assert PLAINTEXT not in page

    staff_client.post(
        reverse("admin:providerkeys_providerkey_delete", args=[key.pk]), {"post": "yes"}
    )
    assert ProviderKey.objects.count() == 0
