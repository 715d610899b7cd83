from rest_framework.routers import SimpleRouter

from workflows.views import WorkflowViewSet

# SimpleRouter: exact paths, no trailing slash, no `.json` suffixes.
router = SimpleRouter(trailing_slash=False)
router.register("workflows", WorkflowViewSet, basename="workflow")

urlpatterns = router.urls
