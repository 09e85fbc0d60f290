"""Request bodies parsed strictly, once: what a lenient `json.loads` lets through and what
then fails deep inside a service (as a 500) or silently means something else.

- a key given twice in one object: `json.loads` keeps the last one, so two parsers (a
  gateway, an auditor, this service) may read different amounts from the same bytes;
- NUL characters (`\\u0000`): PostgreSQL text cannot hold them;
- lone UTF-16 surrogates (`\\ud800`): no database driver can encode them as UTF-8;
- nesting deep enough to exhaust the parser's recursion (RecursionError).
"""

from __future__ import annotations

import json
import re
from typing import Any

# Characters a JSON string may carry as an escape but no store can keep.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
# The text is decoded strictly and a raw NUL in a string is invalid JSON, so they only reach
# a parsed string through one of these escapes: most bodies have none and skip the walk.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class JsonBodyError(ValueError):
    """A body that is not acceptable JSON. `status` is the HTTP status to answer with."""

    def __init__(self, status: int, problem_type: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.problem_type = problem_type
        self.title = title
        self.detail = detail


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise JsonBodyError(
                400,
                "duplicate-json-key",
                "Duplicate JSON key",
                f"the key {key!r} appears more than once in one object",
            )
        seen.add(key)
    raise AssertionError("unreachable: a shorter dict has a repeated key")


def _check_strings(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: list[str] = [item]
        elif isinstance(item, dict):
            texts = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            if _UNSTORABLE.search(text):
                raise JsonBodyError(
                    422,
                    "unacceptable-character",
                    "Unacceptable character",
                    "strings must not contain NUL characters or unpaired UTF-16 surrogates",
                )


# One decoder for every body: `json.loads` with a hook builds a JSONDecoder (and its scanner)
# per call, a fifth of the parse of a small body. A decoder holds no state between calls.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def loads(raw: bytes) -> Any:
    """Parse a JSON request body, refusing what the module docstring lists. Malformed JSON
    raises json.JSONDecodeError as `json.loads` does; both are ValueErrors."""
    # Decoded as json.loads decodes bytes (UTF-8, -16 or -32), but strictly: json.loads
    # would let encoded lone surrogates through ("surrogatepass").
    try:
        text = raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as exc:
        raise JsonBodyError(
            400, "malformed-json", "Malformed JSON", f"the request body is not {exc.encoding}"
        ) from exc
    if text.startswith("\ufeff"):  # as json.loads refuses a BOM left in decoded text
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise JsonBodyError(
            400, "malformed-json", "Malformed JSON", "the request body is nested too deeply"
        ) from exc
    if "\\u" in text and _UNSTORABLE_ESCAPE.search(text):
        _check_strings(value)
    return value
