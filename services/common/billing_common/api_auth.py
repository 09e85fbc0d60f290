"""FastAPI side of auth: `Annotated[Principal, Depends(requires("tax:calculate"))]` gives the
caller's Principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from billing_common.auth import AuthError, Principal, TokenService

_bearer = HTTPBearer(auto_error=False, description="JWT from `make token`")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("send a bearer token: Authorization: Bearer <jwt>")
    tokens: TokenService = request.app.state.ctx.tokens
    return tokens.verify(credentials.credentials)


def requires(scope: str) -> Callable[..., Awaitable[Principal]]:
    # One dependency over the bearer scheme, not a chain through `current_principal`:
    # FastAPI resolves each level of sub-dependencies anew on every request.
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = await current_principal(request, credentials)
        principal.require(scope)
        return principal

    dependency.__name__ = f"requires_{scope.replace(':', '_')}"
    return dependency
