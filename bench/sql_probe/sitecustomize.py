"""Counts the SQL statements and transactions of a process under test, for `make bench`.

Imported at interpreter start-up (Python imports `sitecustomize` from the path) only by the
processes the bench starts with this directory on PYTHONPATH and BENCH_SQL_COUNTS set: the
services need no hook of their own, and nothing else ever loads it. The counts live in a
16-byte memory-mapped file per process (`<dir>/<pid>.sqlcounts`), so counting is two integer
writes and the harness reads them at any moment without asking the server."""

from __future__ import annotations

import os

_DIRECTORY = os.environ.get("BENCH_SQL_COUNTS")


def _install(directory: str) -> None:
    import mmap
    import struct

    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:  # a process without SQLAlchemy runs no SQL to count
        return
    fd = os.open(os.path.join(directory, f"{os.getpid()}.sqlcounts"), os.O_CREAT | os.O_RDWR)
    os.ftruncate(fd, 16)
    counts = mmap.mmap(fd, 16)
    os.close(fd)
    layout = struct.Struct("<QQ")  # statements, transactions
    state = [0, 0]

    def statement(*_: object) -> None:
        state[0] += 1
        layout.pack_into(counts, 0, *state)

    def transaction(*_: object) -> None:
        state[1] += 1
        layout.pack_into(counts, 0, *state)

    # On the Engine class: every engine of the process, async ones included (their sync
    # core fires the events). BEGIN and COMMIT are not cursor executions: counted apart.
    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "begin", transaction)


if _DIRECTORY:
    _install(_DIRECTORY)
