from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import APIKey, KeyKind, Organization
from tests.conftest import bearer_client

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_organization_and_prints_the_key_last(workflow) -> None:
    output = run("ci", "--org", "newco")

    plaintext = output.strip().splitlines()[-1]
    key = APIKey.objects.get(organization__slug="newco")
    assert key.kind == KeyKind.CLIENT
    assert Organization.objects.filter(slug="newco").exists()
    assert bearer_client(plaintext).get("/api/v1/calls").status_code == 200


def test_it_reuses_an_existing_organization(organization) -> None:
    run("second", "--org", organization.slug)

    assert Organization.objects.filter(slug=organization.slug).count() == 1


def test_a_platform_agent_key_has_no_organization(db: None) -> None:
    output = run("fleet", "--agent")

    key = APIKey.objects.get()
    assert (key.kind, key.organization) == (KeyKind.AGENT, None)
    plaintext = output.strip().splitlines()[-1]
    assert bearer_client(plaintext).get("/api/v1/calls").status_code == 403


def test_an_organization_agent_key_belongs_to_it(organization) -> None:
    run("own-worker", "--agent", "--org", organization.slug)

    key = APIKey.objects.get()
    assert (key.kind, key.organization) == (KeyKind.AGENT, organization)


def test_a_client_key_needs_an_organization(db: None) -> None:
    with pytest.raises(CommandError):
        run("orphan")
    assert APIKey.objects.count() == 0


def test_an_invalid_organization_slug_is_refused(db: None) -> None:
    with pytest.raises(CommandError):
        run("x", "--org", "not a slug!")
    assert Organization.objects.count() == 0


@pytest.mark.parametrize("command", ["create_api_key", "first_run_key", "load_demo"])
def test_an_empty_organization_slug_is_refused_not_created(db: None, command: str) -> None:
    args = ["x"] if command == "create_api_key" else []
    with pytest.raises(CommandError, match="(?i)slug"):
        call_command(command, *args, "--org", "", stdout=StringIO())
    assert Organization.objects.count() == 0


def test_an_agent_key_for_an_empty_organization_slug_is_refused_not_made_platform_wide(
    db: None,
) -> None:
    """`--org "$SLUG"` with the variable unset: the operator asked for one
    organization's worker key, not one that reaches every organization's calls."""
    with pytest.raises(CommandError, match="(?i)slug"):
        run("own-worker", "--agent", "--org", "")
    assert (APIKey.objects.count(), Organization.objects.count()) == (0, 0)


def test_a_slug_longer_than_the_column_is_refused_before_any_insert(db: None) -> None:
    with pytest.raises(CommandError, match="Invalid organization slug"):
        run("x", "--org", "a" * 65)
    assert Organization.objects.count() == 0


@pytest.mark.parametrize("name", ["nul\x00name", "tab\there", "   "])
def test_a_name_that_is_not_printable_text_is_refused(organization, name: str) -> None:
    with pytest.raises(CommandError, match="printable"):
        run(name, "--org", organization.slug)
    assert APIKey.objects.count() == 0


def first_run_key(org: str) -> str:
    out = StringIO()
    call_command("first_run_key", "--org", org, stdout=out)
    return out.getvalue()


def test_the_first_run_key_stands_in_a_box_on_a_line_of_its_own(db: None) -> None:
    output = first_run_key("demo")

    lines = output.splitlines()
    plaintext = lines[5].strip()
    rule = "=" * 76
    assert lines == [
        "",
        rule,
        "  Your client API key for organization demo. It is shown only this once:",
        "  copy it now, before the server's log below pushes it out of sight.",
        "",
        f"    {plaintext}",
        "",
        '  Use it as "Authorization: Bearer <key>" (README: "A call, with curl").',
        "  Lost it? .venv/bin/python manage.py create_api_key NAME --org demo",
        rule,
    ]
    assert bearer_client(plaintext).get("/api/v1/calls").status_code == 200


def test_the_first_run_key_is_shown_on_the_first_run_only(db: None) -> None:
    first_run_key("demo")

    output = first_run_key("demo")

    assert output == (
        "Organization demo already has a client key (keys are shown only once; make another "
        "with: .venv/bin/python manage.py create_api_key NAME --org demo).\n"
    )
    assert APIKey.objects.filter(organization__slug="demo").count() == 1
