from django.urls import path
from rest_framework.routers import SimpleRouter

from webhooks.views import (
    ToolSigningSecretRotateView,
    ToolSigningSecretView,
    WebhookEndpointViewSet,
)

router = SimpleRouter(trailing_slash=False)
router.register("webhook-endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")

urlpatterns = [
    *router.urls,
    path("tool-signing-secret", ToolSigningSecretView.as_view(), name="tool-signing-secret"),
    path(
        "tool-signing-secret/rotate",
        ToolSigningSecretRotateView.as_view(),
        name="tool-signing-secret-rotate",
    ),
]
