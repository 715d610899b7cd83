from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from accounts.models import Organization
from providerkeys.selectors import provider_key_for
from tests.factories import ProviderKeyFactory

pytestmark = pytest.mark.django_db


def ago(minutes: int) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(minutes=minutes)


def test_it_picks_the_default_key_when_its_provider_matches(organization: Organization) -> None:
    default = ProviderKeyFactory(organization=organization, is_default=True, created_at=ago(10))
    ProviderKeyFactory(organization=organization, created_at=ago(1))

    found = provider_key_for(
        organization=organization, provider_type="stt", provider_name="deepgram"
    )

    assert found == default
    assert found.api_key == default.api_key


def test_it_picks_the_newest_key_of_the_provider_when_the_default_is_another_provider(
    organization: Organization,
) -> None:
    ProviderKeyFactory(organization=organization, provider_name="assemblyai", is_default=True)
    ProviderKeyFactory(organization=organization, created_at=ago(10))
    newest = ProviderKeyFactory(organization=organization, created_at=ago(1))

    found = provider_key_for(
        organization=organization, provider_type="stt", provider_name="deepgram"
    )

    assert found == newest


def test_it_matches_type_as_well_as_provider(organization: Organization) -> None:
    """openai is an stt, llm and tts provider: an llm key must not run the stt."""
    llm = ProviderKeyFactory(organization=organization, provider_type="llm", provider_name="openai")

    assert (
        provider_key_for(organization=organization, provider_type="stt", provider_name="openai")
        is None
    )
    assert (
        provider_key_for(organization=organization, provider_type="llm", provider_name="openai")
        == llm
    )


def test_it_finds_nothing_without_a_key_for_the_provider(organization: Organization) -> None:
    ProviderKeyFactory(organization=organization, provider_name="assemblyai", is_default=True)

    assert (
        provider_key_for(organization=organization, provider_type="stt", provider_name="deepgram")
        is None
    )


def test_it_never_returns_another_organizations_key(
    organization: Organization, outsider: Organization
) -> None:
    ProviderKeyFactory(organization=outsider, is_default=True)

    assert (
        provider_key_for(organization=organization, provider_type="stt", provider_name="deepgram")
        is None
    )


def test_it_is_one_query(organization: Organization, django_assert_num_queries) -> None:
    ProviderKeyFactory(organization=organization, is_default=True)
    ProviderKeyFactory(organization=organization)

    with django_assert_num_queries(1):
        found = provider_key_for(
            organization=organization, provider_type="stt", provider_name="deepgram"
        )
        assert found.api_key.startswith("sk-test-")
