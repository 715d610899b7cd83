from django.urls import path
from rest_framework.routers import SimpleRouter

from calls.views import CallViewSet
from calls.webhooks import livekit_webhook

# SimpleRouter: exactly the seed's paths, no trailing slash, no `.json` suffixes.
router = SimpleRouter(trailing_slash=False)
router.register("calls", CallViewSet, basename="call")

urlpatterns = [
    path("webhooks/livekit", livekit_webhook, name="livekit-webhook"),
    *router.urls,
]
