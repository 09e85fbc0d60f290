"""JWT bearer authentication: scopes per operation and a tenant claim on every token.

Tokens are HS256-signed with `jwt-signing-key` from the secret store. Services calling each
other mint short-lived service tokens for the caller's tenant with only the scopes they need.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

SCOPES: dict[str, str] = {
    "tax:read": "read tax rules and calculation history",
    "tax:calculate": "calculate taxes",
    "tax:admin": "create, change and delete tax rules",
    "discount:read": "read coupons, policies and application history",
    "discount:quote": "quote discounts without side effects",
    "discount:redeem": "redeem discounts",
    "discount:admin": "manage coupons and discount policies",
    "invoice:read": "read invoices and download PDFs",
    "invoice:write": "create, finalize and void invoices",
    "invoice:admin": "manage sellers (the tenant's legal entities)",
    "payment:read": "read payments",
    "payment:write": "pay invoices",
    "payment:refund": "refund payments",
}
ALL_SCOPES = frozenset(SCOPES)
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# fullmatch with \Z semantics: `$` alone would also accept "demo\n".
_TENANT = re.compile(TENANT_PATTERN.removeprefix("^").removesuffix("$"), re.ASCII)


class AuthError(Exception):
    """The request is not authenticated (401)."""


class ScopeError(Exception):
    """Authenticated, but the token lacks the scope the operation needs (403)."""

    def __init__(self, needed: str) -> None:
        super().__init__(f"this operation needs the '{needed}' scope")
        self.needed = needed


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ScopeError(scope)


class TokenService:
    ALGORITHM = "HS256"
    LEEWAY_SECONDS = 30
    # Verified tokens remembered per process (a client sends the same token for its whole
    # lifetime: a user's session, a service token cached until near expiry).
    VERIFIED_CACHE_SIZE = 4096

    def __init__(
        self,
        signing_key: str,
        *,
        issuer: str,
        audience: str,
    ) -> None:
        if len(signing_key) < 32:
            raise ValueError("the JWT signing key must be at least 32 characters")
        self._key = signing_key
        self._issuer = issuer
        self._audience = audience
        # token -> (its principal, first and last instant it is valid, leeway included)
        self._verified: dict[str, tuple[Principal, float, float]] = {}

    def mint(
        self,
        *,
        subject: str,
        tenant: str,
        scopes: Iterable[str],
        ttl_seconds: int = 3600,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "tenant": tenant,
            "scope": " ".join(sorted(set(scopes))),
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self.ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The token's principal, or AuthError.

        A token that passed once is remembered with its validity window: until it expires
        the same string gives the same principal without a second decode. PyJWT prepares
        the HMAC key anew on every decode (it tries it as PEM, SSH, DER and JSON to refuse
        asymmetric keys), which was most of the ~0.2 ms a check cost per request. Only the
        time claims can change the answer for the same bytes, and they are checked on every
        use; a token that failed is not remembered (it is checked in full each time)."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, valid_from, valid_until = cached
            if valid_from <= time.time() < valid_until:
                return principal
            del self._verified[token]
        principal, valid_from, valid_until = self._decode(token)
        if len(self._verified) >= self.VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, valid_from, valid_until)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub", "iss", "aud"]},
                leeway=self.LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        tenant = claims.get("tenant")
        if not isinstance(tenant, str) or not tenant:
            raise AuthError("the token has no tenant claim")
        # The tenant keys every row and the subject is recorded as the actor of changes:
        # a value no column can hold (a NUL) or no one can read back is refused here.
        if not _TENANT.fullmatch(tenant):
            raise AuthError(f"the tenant claim must match {TENANT_PATTERN}")
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= 255 or not subject.isprintable():
            raise AuthError("the sub claim must be 1-255 printable characters")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise AuthError("the scope claim must be a space-separated string")
        # PyJWT has checked these are integers: exp <= now - leeway is expired, nbf or
        # iat > now + leeway not yet valid.
        leeway = self.LEEWAY_SECONDS
        starts = max(int(claims.get("nbf", 0) or 0), int(claims.get("iat", 0) or 0)) - leeway
        ends = int(claims["exp"]) + leeway
        return Principal(subject, tenant, frozenset(scope.split())), starts, ends
