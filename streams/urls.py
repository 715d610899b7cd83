from django.urls import path

from streams.views import CallStreamView

urlpatterns = [
    path("calls/<uuid:pk>/stream", CallStreamView.as_view(), name="call-stream"),
]
