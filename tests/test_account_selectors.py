"""`api_key_get_from_key`: the one plain statement authentication runs on every request
answers exactly what the library's `APIKey.objects.get_from_key` answers."""

from __future__ import annotations

import datetime

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from accounts.models import APIKey, KeyKind, Organization
from accounts.selectors import api_key_get_from_key
from accounts.services import api_key_create
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def _fields(instance: object) -> dict:
    return {
        field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields
    }


def test_a_key_and_its_organization_read_back_as_the_orm_reads_them() -> None:
    organization = OrganizationFactory(slug="limited", name="Limité ✓", concurrency_limit=7)
    expiry = timezone.now() + datetime.timedelta(days=3)
    key, plaintext = APIKey.objects.create_key(
        name="ci", organization=organization, expiry_date=expiry
    )

    found = api_key_get_from_key(plaintext)
    expected = APIKey.objects.get_from_key(plaintext)

    assert _fields(found) == _fields(expected)
    assert _fields(found.organization) == _fields(expected.organization)
    # Types, not only equal text: uuids and aware datetimes (SQLite stores both as text).
    assert found.organization.pk == organization.pk
    assert found.expiry_date == expiry
    assert found.organization.created_at.tzinfo is not None
    assert found.organization.concurrency_limit == 7
    assert found._state.adding is False


def test_the_key_and_its_organization_take_one_query(
    organization: Organization, client_key: str, django_assert_num_queries
) -> None:
    with django_assert_num_queries(1):
        found = api_key_get_from_key(client_key)
        assert found.organization == organization
        assert found.organization.slug == "acme"


def test_a_platform_agent_key_has_no_organization(agent_key: str) -> None:
    found = api_key_get_from_key(agent_key)

    assert found.kind == KeyKind.AGENT
    assert found.organization_id is None
    assert found.organization is None


def test_an_organization_agent_key_has_its_organization(organization: Organization) -> None:
    _, plaintext = api_key_create(name="own", kind=KeyKind.AGENT, organization=organization)

    assert model_to_dict(api_key_get_from_key(plaintext).organization) == model_to_dict(
        organization
    )


def test_a_revoked_key_is_none(organization: Organization, client_key: str) -> None:
    APIKey.objects.filter(organization=organization).update(revoked=True)

    assert api_key_get_from_key(client_key) is None


def test_the_right_prefix_with_a_wrong_secret_is_none(client_key: str) -> None:
    prefix, _, secret = client_key.partition(".")

    assert api_key_get_from_key(f"{prefix}.{secret[::-1]}") is None
    assert api_key_get_from_key(prefix) is None


@pytest.mark.parametrize("raw_key", ["", ".", "nope", "nope.nope", "%._", "' OR 1=1 --.x"])
def test_an_unknown_key_is_none(client_key: str, raw_key: str) -> None:
    assert api_key_get_from_key(raw_key) is None


def test_an_expired_key_is_found_and_says_so(organization: Organization) -> None:
    # Expiry is the authentication class's 401 ("API key has expired."), as with the library.
    key, plaintext = api_key_create(name="old", organization=organization)
    APIKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - datetime.timedelta(days=1))

    assert api_key_get_from_key(plaintext).has_expired is True


def _library_answer(raw_key: str) -> APIKey | None:
    try:
        return APIKey.objects.get_from_key(raw_key)
    except APIKey.DoesNotExist:
        return None


def test_every_kind_of_key_gets_the_librarys_answer(organization: Organization) -> None:
    """The agreement the hand-written statement promises, over every state a key can be in."""
    _, client = api_key_create(name="client", organization=organization)
    _, agent = api_key_create(name="agent", kind=KeyKind.AGENT)
    _, own_agent = api_key_create(name="own", kind=KeyKind.AGENT, organization=organization)
    revoked_key, revoked = api_key_create(name="revoked", organization=organization)
    APIKey.objects.filter(pk=revoked_key.pk).update(revoked=True)
    expired_key, expired = api_key_create(name="expired", organization=organization)
    APIKey.objects.filter(pk=expired_key.pk).update(
        expiry_date=timezone.now() - datetime.timedelta(days=1)
    )
    prefix = client.partition(".")[0]
    raw_keys = [
        client,
        agent,
        own_agent,
        revoked,
        expired,
        f"{prefix}.{'x' * 32}",  # the right prefix, a wrong secret
        f"{prefix}.",
        prefix,
        "nokey123.abcdefghabcdefghabcdefghabcdefgh",
        "",
        ".",
    ]

    for raw_key in raw_keys:
        ours, library = api_key_get_from_key(raw_key), _library_answer(raw_key)
        assert (ours and ours.pk) == (library and library.pk), raw_key
        if library is not None:
            assert ours.organization_id == library.organization_id
