"""The agent session tests' cast: a call with user data and metadata, and its
session's URL. The fixture is bound by name in each module that uses it."""

from __future__ import annotations

import pytest

from accounts.models import Organization
from calls.models import Call
from tests.factories import CallFactory
from workflows.models import Workflow


def session_url(call: Call) -> str:
    return f"/api/v1/agent/calls/{call.id}/session"


@pytest.fixture
def call(organization: Organization, workflow: Workflow) -> Call:
    return CallFactory(
        organization=organization,
        workflow=workflow,
        user_data={"name": "Ada", "language": "fr"},
        metadata={"source": "app"},
    )
