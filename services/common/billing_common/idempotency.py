"""Idempotent requests: the Idempotency-Key header rule and the request fingerprint, the same
in every service (docs/api-contracts.md, "Idempotency").

- A key is 1 to `max_length` printable ASCII characters with no space at either end (the
  strictest of the rules the services had: a key that differs from another only by its
  surrounding spaces is one a proxy may already have trimmed).
- A missing key is 400 `/problems/idempotency-key-required`, a malformed one 400
  `/problems/invalid-idempotency-key`.
- The fingerprint is the SHA-256 of the request's canonical JSON (keys sorted, no
  whitespace): the same key with an equal request is a replay, with another request a 409.

Pure Python: the domain and the use cases may compute fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from billing_common.errors import DomainError

IDEMPOTENCY_KEY: Final = "Idempotency-Key"
# What a key may be as long as where nothing keeps it longer (a database column of 255).
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255


class IdempotencyKeyRequired(DomainError):
    status = 400
    title = "Idempotency key required"


class InvalidIdempotencyKey(DomainError):
    status = 400
    title = "Invalid idempotency key"


@cache
def idempotency_key_pattern(max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH) -> str:
    """The rule as a regular expression (published in the OpenAPI document)."""
    if not 2 <= max_length <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"max_length must be 2..{MAX_IDEMPOTENCY_KEY_LENGTH}")
    return rf"^[\x21-\x7e]([\x20-\x7e]{{0,{max_length - 2}}}[\x21-\x7e])?$"


def check_idempotency_key(
    value: str | None,
    *,
    max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH,
    why: str = "the request is carried out once per key",
) -> str:
    """`value` if it is a well-formed key; IdempotencyKeyRequired if there is none,
    InvalidIdempotencyKey if it breaks the rule. `why` tells the client what the key is for."""
    if value is None:
        raise IdempotencyKeyRequired(f"send an Idempotency-Key header: {why}")
    if not re.fullmatch(idempotency_key_pattern(max_length), value):
        raise InvalidIdempotencyKey(
            f"the Idempotency-Key must be 1-{max_length} printable ASCII characters, "
            "without spaces at either end"
        )
    return value


def request_fingerprint(canonical: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a request's canonical form: a JSON-able mapping of what the request
    means (amounts normalised, codes case-folded: the caller decides what is equal)."""
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()
