from django.urls import path

from streams.views import CallStreamView
from voicecalls import routing  # noqa: F401  (registers <any_uuid:>)

urlpatterns = [
    path("calls/<any_uuid:pk>/stream", CallStreamView.as_view(), name="call-stream"),
]
