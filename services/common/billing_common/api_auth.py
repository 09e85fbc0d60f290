"""FastAPI side of auth: `Annotated[Principal, Depends(requires("tax:calculate"))]` gives the
caller's Principal."""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPBearer

from billing_common.auth import AuthError, Principal, TokenService

_NO_BEARER = "send a bearer token: Authorization: Bearer <jwt>"


class _ScopedBearer(HTTPBearer):
    """The bearer scheme (in the OpenAPI document as `HTTPBearer`, as before) that answers the
    caller's Principal with `scope`, or raises AuthError / ScopeError.

    One dependency with no sub-dependency: the former `requires` depended on an
    `HTTPBearer(auto_error=False)` for the header, and FastAPI resolves every level of a
    dependency tree anew on each request (a second solve, a credentials model built and
    validated) only to hand two strings over. The header is read here as HTTPBearer reads it."""

    def __init__(self, scope: str) -> None:
        super().__init__(
            auto_error=False, scheme_name="HTTPBearer", description="JWT from `make token`"
        )
        self.required_scope = scope

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        # HTTPBearer's parsing: "<scheme> <credentials>", both non-empty, scheme "bearer" in
        # any case; the first Authorization header counts. Read from the raw headers, as
        # Starlette's Headers.get reads them (ASGI servers give lower-case names), without
        # building the Headers mapping for one value.
        authorization = None
        for name, value in request.scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        if not authorization:
            raise AuthError(_NO_BEARER)
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if not scheme or not credentials or scheme.lower() != "bearer":
            raise AuthError(_NO_BEARER)
        tokens: TokenService = request.app.state.ctx.tokens
        principal = tokens.verify(credentials)
        principal.require(self.required_scope)
        return principal


def requires(scope: str) -> _ScopedBearer:
    """The dependency giving the caller's Principal, which must hold `scope`."""
    return _ScopedBearer(scope)
