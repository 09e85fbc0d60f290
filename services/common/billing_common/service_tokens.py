"""Bearer tokens a service presents to its peers, minted once per (tenant, scope) and reused
until shortly before they expire: signing a JWT for every call is work the peer cannot tell
apart from reusing one."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from billing_common.auth import TokenService


class ServiceTokenCache:
    def __init__(
        self,
        tokens: TokenService,
        *,
        subject: str,
        ttl_seconds: int = 300,
        renew_before_seconds: int = 60,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= renew_before_seconds < ttl_seconds:
            raise ValueError("renew_before_seconds must be shorter than the token's lifetime")
        self._tokens = tokens
        self._subject = subject
        self._ttl = ttl_seconds
        self._renew_before = renew_before_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def bearer(self, tenant: str, scope: str) -> str:
        """A token for `tenant` with exactly `scope`, valid for at least renew_before_seconds."""
        key = (tenant, scope)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[1] - now > self._renew_before:
            self._cache.move_to_end(key)
            return cached[0]
        token = self._tokens.mint(
            subject=self._subject, tenant=tenant, scopes=[scope], ttl_seconds=self._ttl
        )
        self._cache[key] = (token, now + self._ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return token
