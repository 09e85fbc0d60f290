"""The one base of every domain error: what the problem document of an error says (RFC 9457
type, title, HTTP status, Retry-After), declared on the error class itself.

Pure Python (no framework): domains subclass it. The kernel's problem handler
(billing_common.problems) answers any DomainError from these attributes, so a service needs
no error -> status map of its own.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar


def slug(name: str) -> str:
    """`InvalidCursor` -> `invalid-cursor`; a trailing `Error` is dropped."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower().removesuffix("-error")


def title_of(name: str) -> str:
    """`InvalidCursor` -> `Invalid cursor`; a trailing `Error` is dropped."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).removesuffix(" Error").capitalize()


class DomainError(Exception):
    """A rule a request breaks, answered as a problem document.

    Subclasses set `status` (default 422: the request is well formed but breaks a rule) and
    may set `retry_after_seconds` (answered as Retry-After: a retry later may succeed).
    `problem_type` and `title` default to the class name (`InvalidCursor` ->
    `/problems/invalid-cursor`, "Invalid cursor"). Keyword arguments become extension
    members of the problem document."""

    status: ClassVar[int] = 422
    problem_type: ClassVar[str | None] = None
    title: ClassVar[str | None] = None
    retry_after_seconds: ClassVar[int | None] = None

    problem_extensions: dict[str, Any]

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.problem_extensions = extensions

    @classmethod
    def type_slug(cls) -> str:
        return cls.problem_type or slug(cls.__name__)

    @classmethod
    def problem_title(cls) -> str:
        return cls.title or title_of(cls.__name__)
