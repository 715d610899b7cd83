from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_healthz_answers_without_authentication() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_checks_the_database_and_migrations() -> None:
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_while_migrations_are_pending(monkeypatch) -> None:
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("x", False)])

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "pending_migrations": 1}
