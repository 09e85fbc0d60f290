"""Peer tokens are reused until shortly before they expire, per tenant and scope."""

from __future__ import annotations

import pytest

from billing_common.auth import TokenService
from billing_common.service_tokens import ServiceTokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_reused_until_it_nears_expiry_then_renewed() -> None:
    service = TokenService("k" * 40, issuer="billing", audience="billing")
    clock = Clock()
    cache = ServiceTokenCache(
        service, subject="svc:invoice", ttl_seconds=300, renew_before_seconds=60, clock=clock
    )
    first = cache.bearer("acme", "tax:calculate")
    assert cache.bearer("acme", "tax:calculate") == first
    principal = service.verify(first)
    assert principal.tenant == "acme" and principal.scopes == frozenset({"tax:calculate"})

    assert cache.bearer("globex", "tax:calculate") != first  # per tenant
    assert cache.bearer("acme", "discount:redeem") != first  # per scope

    clock.now += 239  # 61 s left: still reused
    assert cache.bearer("acme", "tax:calculate") == first
    clock.now += 1  # 60 s left: a fresh one
    assert cache.bearer("acme", "tax:calculate") != first


def test_the_cache_is_bounded() -> None:
    service = TokenService("k" * 40, issuer="billing", audience="billing")
    cache = ServiceTokenCache(service, subject="svc", max_entries=2)
    first = cache.bearer("t1", "s")
    cache.bearer("t2", "s")
    cache.bearer("t3", "s")  # t1, the least recently used, goes
    assert cache.bearer("t1", "s") != first


def test_renewal_must_come_before_expiry() -> None:
    service = TokenService("k" * 40, issuer="billing", audience="billing")
    with pytest.raises(ValueError):
        ServiceTokenCache(service, subject="svc", ttl_seconds=60, renew_before_seconds=60)
