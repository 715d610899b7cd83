"""What OPTIONS answers about an endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.metadata import SimpleMetadata

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads
    from rest_framework.request import Request
    from rest_framework.views import APIView


class EndpointMetadata(SimpleMetadata):
    """Name, description, renders and parses, without DRF's `actions`: it lists the
    view's response serializer as the POST/PUT body (`id` required on POST /calls, and
    no `workflow_slug`). The request bodies are in openapi.yaml."""

    def determine_actions(self, request: Request, view: APIView) -> dict:
        return {}
