"""Service tokens the operator presents to the tax and discount services.

The same claims as `billing_common.auth.TokenService` mints (the services verify them with it),
minted here with PyJWT alone so the operator image does not carry the services' dependencies.
One short-lived token per call, for exactly one tenant and one admin scope.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

SUBJECT = "billing-operator"


class TokenMinter:
    ALGORITHM = "HS256"

    def __init__(self, signing_key: str, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        if len(signing_key) < 32:
            raise ValueError("the JWT signing key must be at least 32 characters")
        self._key = signing_key
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds

    def mint(self, *, tenant: str, scope: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": SUBJECT,
            "tenant": tenant,
            "scope": scope,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self.ALGORITHM)
