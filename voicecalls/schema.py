"""drf-spectacular extensions: how our authentication appears in openapi.yaml."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "voicecalls.auth.APIKeyAuthentication"
    name = "BearerAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <key>`.",
        }
