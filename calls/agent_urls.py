"""The voice-agent worker's API under /api/v1/agent/ (agent keys only)."""

from __future__ import annotations

from django.urls import path  # noqa: F401 - used as endpoints are added

urlpatterns: list = []
