from django.urls import path

from accounts.api import OrganizationView

urlpatterns = [path("organization", OrganizationView.as_view(), name="organization")]
