import time

import jwt
import pytest

from billing_common.auth import AuthError, ScopeError, TokenService

KEY = "k" * 40


def _service() -> TokenService:
    return TokenService(KEY, issuer="billing-platform", audience="billing-api")


def test_round_trip_carries_tenant_and_scopes() -> None:
    tokens = _service()
    principal = tokens.verify(tokens.mint(subject="u1", tenant="acme", scopes=["tax:read"]))
    assert principal.tenant == "acme"
    assert principal.scopes == {"tax:read"}
    principal.require("tax:read")
    with pytest.raises(ScopeError):
        principal.require("tax:admin")


def test_expired_wrong_key_wrong_audience_and_missing_tenant_are_rejected() -> None:
    tokens = _service()
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(tokens.mint(subject="u", tenant="t", scopes=[], ttl_seconds=-120))
    other = TokenService("x" * 40, issuer="billing-platform", audience="billing-api")
    with pytest.raises(AuthError):
        tokens.verify(other.mint(subject="u", tenant="t", scopes=[]))
    wrong_aud = TokenService(KEY, issuer="billing-platform", audience="elsewhere")
    with pytest.raises(AuthError):
        tokens.verify(wrong_aud.mint(subject="u", tenant="t", scopes=[]))
    now = int(time.time())
    no_tenant = jwt.encode(
        {"sub": "u", "iss": "billing-platform", "aud": "billing-api", "exp": now + 60}, KEY
    )
    with pytest.raises(AuthError, match="tenant"):
        tokens.verify(no_tenant)


def test_none_algorithm_is_rejected() -> None:
    unsigned = jwt.encode(
        {
            "sub": "u",
            "tenant": "t",
            "iss": "billing-platform",
            "aud": "billing-api",
            "exp": int(time.time()) + 60,
        },
        key=None,
        algorithm="none",
    )
    with pytest.raises(AuthError):
        _service().verify(unsigned)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenService("short", issuer="i", audience="a")
