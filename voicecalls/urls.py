from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularSwaggerView

from streams.views import staff_call_stream
from voicecalls.api_index import ApiIndexView, SchemaView
from voicecalls.errors import not_found
from voicecalls.health import healthz, readyz
from voicecalls.ops_metrics import ops_metrics

handler400 = "voicecalls.errors.bad_request"
handler403 = "voicecalls.errors.permission_denied"
handler404 = "voicecalls.errors.not_found"
handler500 = "voicecalls.errors.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # The operator's metrics, for Prometheus (METRICS_TOKEN); not part of the API.
    path("ops/metrics", ops_metrics, name="ops-metrics"),
    path("api/v1/agent/", include("calls.agent_urls")),
    path("api/v1/", ApiIndexView.as_view(), name="api-index"),
    path("api/v1/", include("calls.urls")),
    path("api/v1/", include("streams.urls")),
    path("api/v1/", include("providerkeys.urls")),
    path("api/v1/", include("workflows.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/v1/", include("billing.urls")),
    path("api/v1/", include("telephony.urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("recordings.urls")),
    path("api/v1/", include("privacy.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # The admin call page's live transcript (staff session; streams.views).
    path(
        "admin/calls/call/<uuid:pk>/stream/",
        admin.site.admin_view(staff_call_stream),
        name="admin-call-stream",
    ),
    path("admin/", admin.site.urls),
    # Unknown API paths answer in the API's error shape, in DEBUG too, whatever the
    # method (the API has no cookies, so no CSRF check either).
    re_path(r"^api/", csrf_exempt(not_found)),
]
