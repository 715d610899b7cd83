from rest_framework.routers import SimpleRouter

from calls.views import CallViewSet

# SimpleRouter: exactly the seed's paths, no trailing slash, no `.json` suffixes.
router = SimpleRouter(trailing_slash=False)
router.register("calls", CallViewSet, basename="call")

urlpatterns = router.urls
