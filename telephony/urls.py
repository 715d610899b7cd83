from django.urls import path, re_path

from telephony.views import SipTrunkDetailView, SipTrunkListView
from voicecalls.routing import UUID_PATTERN

urlpatterns = [
    path("sip-trunks", SipTrunkListView.as_view(), name="sip-trunk-list"),
    re_path(
        rf"^sip-trunks/(?P<pk>{UUID_PATTERN})$",
        SipTrunkDetailView.as_view(),
        name="sip-trunk-detail",
    ),
]
