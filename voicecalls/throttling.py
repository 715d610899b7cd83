"""Rate limits on create requests, and on workflow writes, per organization, shared by
every process.

Each organization's rate is one row moved by one statement (accounts/rates.py), so
any number of gunicorn workers and hosts count together at a constant cost. Only
requests that create something are counted: a client polling a call's status is
never throttled, nor one retrying a create that was done (same Idempotency-Key: let
through when over the rate, its slot given back when under it), while a runaway loop
creating calls is. Workflow writes (POST, PUT, PATCH: each keeps a new version) have a
rate of their own besides.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from accounts.rates import rate_hit, rate_refund
from voicecalls.auth import Principal

# Viewset actions and plain-view methods that create a resource, and those that queue a
# webhook send (a test event, a replay): each costs a delivery attempt.
CREATE_ACTIONS = frozenset({"create", "send_test", "replay_delivery"})
# Workflow requests that keep a new version.
WORKFLOW_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_create_operation(*, method: str, action: str | None, path: str) -> bool:
    """A POST that makes a resource: a viewset's `create`, or a plain view's POST on
    a collection (a path without parameters)."""
    if method != "POST":
        return False
    # Viewsets name the action; a plain APIView's POST on a collection creates.
    return action in CREATE_ACTIONS if action is not None else "{" not in path


def _is_replay(request: Request, view: Any) -> bool:
    """A refused request that only replays a create done before (a view that stores
    its answers: `idempotent_body` names what they are stored for; the same
    Idempotency-Key and body) gets that first answer: it creates nothing. Looked up only
    once refused."""
    # Imported here: DRF imports this module while its own settings load.
    from calls.idempotency import idempotency_key, idempotent_answer_exists

    try:
        key = idempotency_key(request.headers)
    except ValidationError:
        # No answer is stored under a key the API refuses (and PostgreSQL refuses a
        # NUL in the look-up: a 500).
        return False
    body_of = getattr(view, "idempotent_body", None)
    body = body_of(request) if key and body_of is not None else None
    if body is None:
        return False
    return idempotent_answer_exists(
        organization_id=request.user.organization.pk, key=key, body=body
    )


class OrganizationRateThrottle(SimpleRateThrottle):
    """A rate per organization (the setting named `rate_setting`) on the requests
    `counts_operation` picks; over it, 429 + Retry-After. DRF's parsing of the rate and
    its hooks, our counting (GCRA, not DRF's list of timestamps in the cache, which
    grows with the rate).

    Agent-worker keys are not throttled here (their event batches are idempotent and
    bounded per request), nor are organizations in `THROTTLE_EXEMPT_ORGANIZATIONS`.
    Where two rates count a request and one refuses it, the other keeps nothing of it.
    """

    rate_setting: str

    @staticmethod
    def counts_operation(*, method: str, action: str | None, path: str) -> bool:
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        key = self.get_cache_key(request, view)
        if key is None or getattr(request, "rate_refused", False):
            return True  # (refused by another rate already: not counted by this one)
        decision = rate_hit(key=key, limit=self.num_requests, window=self.duration)
        self.retry_after = decision.retry_after
        if decision.allowed:
            slot = {
                "key": key,
                "limit": self.num_requests,
                "window": self.duration,
                "hit_tat_us": decision.tat_us,
            }
            request.rates_counted = [*getattr(request, "rates_counted", []), (self.scope, slot)]
            return True
        if self.lets_through(request, view):
            return True
        request.rate_refused = True
        for _, slot in getattr(request, "rates_counted", []):
            rate_refund(**slot)
        return False

    def lets_through(self, request: Request, view: Any) -> bool:
        """A request over the rate that is let through all the same."""
        return False

    def wait(self) -> float:
        return self.retry_after

    def get_rate(self) -> str:
        # Read per request (DRF reads its rates once, at import) so settings changes apply.
        return getattr(settings, self.rate_setting)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        principal = request.user
        if not isinstance(principal, Principal) or principal.is_agent:
            return None
        organization = principal.organization
        if organization is None or organization.slug in settings.THROTTLE_EXEMPT_ORGANIZATIONS:
            return None
        action = getattr(view, "action", None)
        path = "{}" if view.kwargs else request.path
        if not self.counts_operation(method=request.method, action=action, path=path):
            return None
        return f"throttle:{self.scope}:{organization.pk}"


class OrganizationCreateThrottle(OrganizationRateThrottle):
    """`API_CREATE_RATE` create requests per organization, over every create endpoint."""

    scope = "create"
    rate_setting = "API_CREATE_RATE"
    counts_operation = staticmethod(is_create_operation)

    def lets_through(self, request: Request, view: Any) -> bool:
        return _is_replay(request, view)


class WorkflowWriteThrottle(OrganizationRateThrottle):
    """`API_WORKFLOW_WRITE_RATE` workflow writes per organization: each create, replace
    or update keeps a new version (up to a 1 MiB body), so writes are limited, not only
    creates. Reads are not."""

    scope = "workflow_write"
    rate_setting = "API_WORKFLOW_WRITE_RATE"

    @staticmethod
    def counts_operation(*, method: str, action: str | None, path: str) -> bool:
        return method in WORKFLOW_WRITE_METHODS


def create_uncount(request: Request) -> None:
    """Give back the create a request was counted for: it replayed one done before."""
    for scope, slot in getattr(request, "rates_counted", []):
        if scope == OrganizationCreateThrottle.scope:
            rate_refund(**slot)


def rate_settings_check() -> None:
    """Refuse to start with a rate DRF cannot read: it would fail every request the rate
    applies to (a 500), not the start-up."""
    for throttle in (OrganizationCreateThrottle, WorkflowWriteThrottle):
        try:
            throttle()  # DRF reads the rate as the throttle is made
        except (ValueError, LookupError, TypeError, AttributeError):
            value = getattr(settings, throttle.rate_setting)
            raise ImproperlyConfigured(
                f'{throttle.rate_setting} must be "<number>/<second|minute|hour|day>", '
                f"not {value!r}."
            ) from None
