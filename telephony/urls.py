from django.urls import path, re_path

from telephony.views import (
    CallTransferView,
    PhoneNumberDetailView,
    PhoneNumberListView,
    SipTrunkDetailView,
    SipTrunkListView,
)
from voicecalls.routing import UUID_PATTERN

urlpatterns = [
    re_path(
        rf"^calls/(?P<pk>{UUID_PATTERN})/transfer$",
        CallTransferView.as_view(),
        name="call-transfer",
    ),
    path("sip-trunks", SipTrunkListView.as_view(), name="sip-trunk-list"),
    re_path(
        rf"^sip-trunks/(?P<pk>{UUID_PATTERN})$",
        SipTrunkDetailView.as_view(),
        name="sip-trunk-detail",
    ),
    path("phone-numbers", PhoneNumberListView.as_view(), name="phone-number-list"),
    re_path(
        rf"^phone-numbers/(?P<pk>{UUID_PATTERN})$",
        PhoneNumberDetailView.as_view(),
        name="phone-number-detail",
    ),
]
