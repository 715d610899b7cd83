from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Organization
from privacy.models import Erasure


def erasure_queryset(*, organization: Organization) -> QuerySet[Erasure]:
    """The organization's erasures: another organization's id is simply not found."""
    return Erasure.objects.filter(organization=organization).defer("user_id")
