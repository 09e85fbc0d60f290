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


def test_a_verified_token_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = _service()
    token = tokens.mint(subject="u1", tenant="acme", scopes=["tax:read"])
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    first, second = tokens.verify(token), tokens.verify(token)
    assert first == second and first.tenant == "acme" and first.scopes == {"tax:read"}
    assert decoded == [token]
    # A token that failed is checked in full every time, and never remembered.
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(AuthError):
            tokens.verify(forged)
    assert decoded == [token, forged, forged]


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    tokens = _service()
    started = int(time.time())
    # Expired 28 s ago: inside the 30 s leeway until `started + 2`, at least a second more.
    claims = {"sub": "u", "tenant": "t", "iss": "billing-platform", "aud": "billing-api"}
    token = jwt.encode({**claims, "exp": started - 28}, KEY, algorithm="HS256")
    assert tokens.verify(token).tenant == "t"
    time.sleep(max(0.0, started + 2 - time.time()) + 0.05)
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(token)


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
