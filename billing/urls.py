from django.urls import path

from billing.api import PriceOverridesView, PriceOverrideView, PricesView, UsageDailyView
from voicecalls import routing  # noqa: F401  (registers <any_uuid:>)

urlpatterns = [
    path("usage/daily", UsageDailyView.as_view(), name="usage-daily"),
    path("prices", PricesView.as_view(), name="prices"),
    path("prices/overrides", PriceOverridesView.as_view(), name="price-overrides"),
    path(
        "prices/overrides/<any_uuid:override_id>",
        PriceOverrideView.as_view(),
        name="price-override",
    ),
]
