"""HTTP calls to the services' by-key endpoints, with failures sorted into the two kinds the
reconciler cares about: worth retrying (the service is down, overloaded or restarting) and
not (the service understood the request and refused it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from loguru import logger

from billing_operator.tokens import TokenMinter

# Statuses that say "not now" rather than "not this": retry them with backoff. 401/403 are here
# too: they mean the operator's signing key or the service's is being rotated or misconfigured,
# which a fixed secret and a retry cure, not a change to the resource.
_RETRYABLE = {401, 403, 408, 409, 425, 429}


class ServiceUnavailable(Exception):
    """Retry later: unreachable, timed out, 5xx, or a retryable 4xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceRejected(Exception):
    """The service refused the request (4xx): the resource must change first."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(describe_problem(status, problem))


def describe_problem(status: int, problem: dict[str, Any]) -> str:
    """One line from an RFC 9457 problem, with field errors when the service lists them."""
    title = str(problem.get("title") or f"HTTP {status}")
    detail = problem.get("detail")
    text = f"{title}: {detail}" if detail else title
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for error in errors[:5]:
            if isinstance(error, dict):
                where = ".".join(str(p) for p in error.get("loc", []) if p != "body")
                parts.append(f"{where}: {error.get('msg', error)}" if where else str(error))
            else:
                parts.append(str(error))
        text += " (" + "; ".join(parts) + ")"
    return text[:1024]


@dataclass(frozen=True)
class UpsertResult:
    created: bool


@dataclass
class ServiceClient:
    """One per service: base URL, the admin scope its writes need, and a token minter."""

    base_url: str
    scope: str  # for writes (PUT, DELETE)
    read_scope: str  # for the drift check's GET
    tokens: TokenMinter
    http: httpx.AsyncClient
    _log: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._log = logger.bind(service_url=self.base_url)

    async def put(self, path: str, *, tenant: str, body: dict[str, Any]) -> UpsertResult:
        response = await self._send("PUT", path, tenant=tenant, json=body)
        if response.status_code in (200, 201, 204):
            return UpsertResult(created=response.status_code == 201)
        raise self._failure(response)

    async def get(self, path: str, *, tenant: str) -> dict[str, Any] | None:
        """What the service holds under this key, or None if it holds nothing."""
        response = await self._send("GET", path, tenant=tenant, scope=self.read_scope)
        if response.status_code == 200:
            payload = response.json()
            if isinstance(payload, dict):
                return payload
            raise ServiceUnavailable(f"GET {path}: a JSON object was expected")
        if response.status_code in (404, 410):
            return None
        raise self._failure(response)

    async def delete(self, path: str, *, tenant: str) -> bool:
        """True if something was deleted; False if the key was already gone."""
        response = await self._send("DELETE", path, tenant=tenant)
        if response.status_code in (200, 202, 204):
            return True
        if response.status_code in (404, 410):
            return False
        raise self._failure(response)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        tenant: str,
        json: dict[str, Any] | None = None,
        scope: str | None = None,
    ) -> httpx.Response:
        token = self.tokens.mint(tenant=tenant, scope=scope or self.scope)
        url = f"{self.base_url}{path}"
        try:
            response = await self.http.request(
                method,
                url,
                json=json,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        self._log.info("{} {} -> {}", method, url, response.status_code)
        return response

    @staticmethod
    def _failure(response: httpx.Response) -> Exception:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        problem: dict[str, Any] = (
            payload if isinstance(payload, dict) else {"title": response.text[:200] or None}
        )
        if status >= 500 or status in _RETRYABLE:
            retry_after = response.headers.get("Retry-After")
            delay = float(retry_after) if retry_after and retry_after.isdigit() else None
            return ServiceUnavailable(describe_problem(status, problem), retry_after=delay)
        if 400 <= status < 500:
            return ServiceRejected(status, problem)
        return ServiceUnavailable(f"unexpected HTTP {status}")
