from django.urls import path, re_path

from privacy.api import ErasureDetailView, ErasureListView
from voicecalls.routing import UUID_PATTERN

urlpatterns = [
    path("erasures", ErasureListView.as_view(), name="erasure-list"),
    re_path(
        rf"^erasures/(?P<pk>{UUID_PATTERN})$", ErasureDetailView.as_view(), name="erasure-detail"
    ),
]
