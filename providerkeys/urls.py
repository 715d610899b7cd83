from django.urls import path, re_path

from providerkeys.views import ProviderKeyDetailView, ProviderKeyListView
from voicecalls.routing import UUID_PATTERN

# Exactly the seed's paths: no trailing slash, no redirects. An id that is not a
# uuid matches nothing and is answered 404.

urlpatterns = [
    path("provider-keys", ProviderKeyListView.as_view(), name="provider-key-list"),
    re_path(
        rf"^provider-keys/(?P<pk>{UUID_PATTERN})$",
        ProviderKeyDetailView.as_view(),
        name="provider-key-detail",
    ),
]
