"""The one module that talks to the voicecalls agent API."""

from __future__ import annotations

import re

import httpx

from agent.redact import log_secrets_add, session_keys

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class AgentAPIError(Exception):
    """A request the API answered with an error, or could not be made."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: object = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        # Seconds the API asked to wait (`Retry-After` of a 429 or 503), if it said.
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        """The API's machine code of the (first) error, e.g. `call_ended`."""
        return self._first_error().get("code")

    @property
    def detail(self) -> str:
        """The API's message for the (first) error, else what failed."""
        return str(self._first_error().get("detail") or self)

    def _first_error(self) -> dict:
        # The API's one error shape: `{"type": ..., "errors": [{"code", "detail", "attr"}]}`.
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return errors[0]
        return {}

    @property
    def codes(self) -> str:
        """The API's error codes and the fields they name (`invalid_choice at events.1.role`),
        without its details, which may quote what was sent."""
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        if not isinstance(errors, list):
            return f"HTTP {self.status_code}"
        return "; ".join(
            f"{error.get('code')} at {error.get('attr')}"
            for error in errors
            if isinstance(error, dict)
        )

    def item_index(self, field: str, count: int) -> int | None:
        """The index of the item of list `field` a 400 names (`attr` `events.3.role`: 3),
        if it names one below `count`."""
        if self.status_code != 400 or not isinstance(self.body, dict):
            return None
        attr = re.compile(rf"^{re.escape(field)}\.(\d+)(?:\.|$)")
        errors = self.body.get("errors")
        for error in errors if isinstance(errors, list) else []:
            if not isinstance(error, dict):
                continue  # a proxy's or gateway's own shape
            match = attr.match(str(error.get("attr") or ""))
            if match and int(match.group(1)) < count:
                return int(match.group(1))
        return None

    @property
    def retryable(self) -> bool:
        """Network errors, 408 (a proxy gave up waiting for the request: not processed),
        429 and 5xx may succeed later; other 4xx will not."""
        return self.status_code is None or self.status_code in (408, 429) or self.status_code >= 500


class AgentAPI:
    """The agent API (`/api/v1/agent/`) with the worker's agent key."""

    def __init__(
        self,
        base_url: str,
        agent_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/api/v1/agent/",
            headers={"Authorization": f"Bearer {agent_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    async def get_session(self, call_id: str, *, timeout: float | None = None) -> dict:
        """The call's session; 409 `call_ended` (an AgentAPIError) once it has ended."""
        extra = {} if timeout is None else {"timeout": timeout}
        return _keys_kept_out_of_logs(
            await self._request("GET", f"calls/{call_id}/session", **extra)
        )

    async def post_events(self, call_id: str, events: list[dict]) -> dict:
        return await self._request("POST", f"calls/{call_id}/events", json={"events": events})

    async def post_inbound_call(self, caller: dict, *, timeout: float | None = None) -> dict:
        """The session of the inbound call in the caller's room, created on first sight
        (so asking again is safe); 404 `unknown_number`, 409 `call_ended`."""
        extra = {} if timeout is None else {"timeout": timeout}
        return _keys_kept_out_of_logs(
            await self._request("POST", "inbound-calls", json=caller, **extra)
        )

    async def post_transfer(
        self, call_id: str, *, tool: str, destination: str, timeout: float
    ) -> dict:
        """Have LiveKit hand the caller to `destination`; the API ends the call on success."""
        body = {"tool": tool, "destination": destination}
        return await self._request("POST", f"calls/{call_id}/transfer", json=body, timeout=timeout)

    async def _request(self, method: str, path: str, **kwargs: object) -> dict:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AgentAPIError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = response.text[:500]
        # A redirect (an http:// URL to an https-only API) is no answer: httpx does not
        # follow it here, and its empty body would pass for a delivery.
        if not response.is_success:
            raise AgentAPIError(
                f"{method} {path}: HTTP {response.status_code}",
                status_code=response.status_code,
                body=body,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        return body

    async def aclose(self) -> None:
        await self._client.aclose()


def _keys_kept_out_of_logs(session: dict) -> dict:
    log_secrets_add(session_keys(session))
    return session


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the API sends whole seconds; an HTTP date is ignored)."""
    if value is None or not value.isascii() or not value.strip().isdigit():
        return None
    return float(value.strip())
