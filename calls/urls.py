from django.urls import path
from rest_framework.routers import SimpleRouter

from calls.livekit_webhooks import livekit_webhook
from calls.usage_api import UsageView
from calls.views import CallViewSet

# SimpleRouter: exactly the seed's paths, no trailing slash, no `.json` suffixes.
router = SimpleRouter(trailing_slash=False)
router.register("calls", CallViewSet, basename="call")

urlpatterns = [
    path("webhooks/livekit", livekit_webhook, name="livekit-webhook"),
    path("usage", UsageView.as_view(), name="usage"),
    *router.urls,
]
