from django.urls import path

from recordings.views import RecordingStorageView

urlpatterns = [
    path(
        "organization/recording-storage",
        RecordingStorageView.as_view(),
        name="recording-storage",
    )
]
