"""Counts the PostgreSQL statements and transactions of a process under test, for `make bench`.

Imported at interpreter start-up (Python imports `sitecustomize` from the path) only by the
processes the bench starts with this directory on PYTHONPATH and BENCH_SQL_COUNTS set: the
services need no hook of their own, and nothing else ever loads it. The counts live in a
16-byte memory-mapped file per process (`<dir>/<pid>.sqlcounts`), so counting is two integer
writes and the harness reads them at any moment without asking the server."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

_DIRECTORY = os.environ.get("BENCH_SQL_COUNTS")


def _install(directory: str) -> None:
    import functools
    import mmap
    import struct

    try:
        from asyncpg.connection import Connection
        from asyncpg.prepared_stmt import PreparedStatement
    except ImportError:  # a process without asyncpg sends no PostgreSQL SQL to count
        return
    fd = os.open(os.path.join(directory, f"{os.getpid()}.sqlcounts"), os.O_CREAT | os.O_RDWR)
    os.ftruncate(fd, 16)
    counts = mmap.mmap(fd, 16)
    os.close(fd)
    layout = struct.Struct("<QQ")  # statements (round trips), transactions
    state = [0, 0]

    def counted(
        method: Callable[..., Awaitable[Any]],
        *,
        begins: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            state[0] += 1
            if begins is not None and begins(args):
                state[1] += 1
            layout.pack_into(counts, 0, *state)
            return await method(*args, **kwargs)

        return wrapper

    def explicit_begin(args: tuple[object, ...]) -> bool:
        query = args[1] if len(args) > 1 else ""
        return isinstance(query, str) and query.lstrip()[:5].upper() == "BEGIN"

    # At asyncpg, where every PostgreSQL statement of a service goes: SQLAlchemy's (its
    # dialect runs prepared statements and Transaction) and the raw hot paths alike. One
    # count per message sent, so a multi-statement simple query counts once (a round trip).
    # Transactions: each BEGIN sent, by asyncpg's Transaction (SQLAlchemy's) or by a raw
    # path; an autocommitted single statement is not counted as one.
    Connection.execute = counted(Connection.execute, begins=explicit_begin)  # type: ignore[method-assign]
    for name in ("executemany", "fetch", "fetchrow", "fetchval"):
        setattr(Connection, name, counted(getattr(Connection, name)))
    for name in ("executemany", "fetch", "fetchrow", "fetchval"):
        setattr(PreparedStatement, name, counted(getattr(PreparedStatement, name)))


if _DIRECTORY:
    _install(_DIRECTORY)
