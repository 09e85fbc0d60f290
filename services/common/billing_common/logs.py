"""Loguru set-up: one line per request and per event, each carrying the trace id.

JSON lines (`LOG_JSON=true`, the default in containers) for machines; a compact text format
for people at a terminal.

In JSON mode the lines are buffered and written together, at most `FLUSH_DELAY_SECONDS`
after the first of them (a WARNING or worse at once, with everything before it), and the
access line of a request (`AccessLog`) is built here without loguru's record machinery: both
were a tenth of a small request's CPU. `flush` writes what is buffered; it runs at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from loguru import logger

from billing_common.tracing import current_request_id, current_trace_id

_configured = False
# Whether the JSON sink is the one configured: then `AccessLog` writes its lines itself.
_json_lines = False
# The severity below which lines are dropped, as configured (loguru's default sink: DEBUG).
# Loguru's levels carry the stdlib's numbers.
_threshold = logging.DEBUG

# C0 and C1 controls, DEL and the Unicode line and paragraph separators: a terminal or a log
# viewer acts on them (a newline starts a forged line, ESC[ rewrites what is shown).
_CONTROL_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\x0a`), for a text log line that quotes
    what a client sent."""
    return text if text.isprintable() else text.translate(_CONTROL_ESCAPES)


def _add_context(record: Any) -> None:
    extra = record["extra"]
    extra.setdefault("trace_id", current_trace_id() or "-")
    extra.setdefault("request_id", current_request_id() or "-")
    extra.setdefault("service", "-")


def _json_sink(message: Any) -> None:
    """One JSON object per line: time, level, message, logger and the record's extra (the
    trace id, request id and service among them), and the traceback of an exception.

    Built from the record with orjson instead of loguru's `serialize=True`, which encodes a
    nested copy of every record field (file, function, process, thread, elapsed...) with the
    stdlib encoder: half of a request's logging cost, for fields no one reads."""
    record = message.record
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        **record["extra"],
    }
    exception = record["exception"]
    if exception is not None:
        line["exception"] = "".join(
            traceback.format_exception(exception.type, exception.value, exception.traceback)
        )
    try:
        encoded = orjson.dumps(line, default=str).decode()
    except TypeError:  # what orjson cannot hold (an int past 64 bits, a non-str key)
        encoded = json.dumps(line, default=str)
    _write(encoded + "\n", urgent=record["level"].no >= logging.WARNING)


# Lines not yet written, in order. One stderr write per line (stderr is line-buffered) was
# 29 % of the access line's cost; together, the write is shared by every line of a burst.
FLUSH_DELAY_SECONDS = 0.02
_MAX_PENDING = 256
_pending: list[str] = []
# Loguru calls its sinks from any thread; reentrant, so that a line logged while a flush
# writes (a signal handler's) cannot deadlock.
_pending_lock = threading.RLock()
_flush_loop: asyncio.AbstractEventLoop | None = None  # the loop the flush is due on


def _write(line: str, *, urgent: bool) -> None:
    """Queue `line` for stderr: flushed within FLUSH_DELAY_SECONDS on the running event loop,
    at once if `urgent` (what comes before a crash must not wait), when no loop runs here (a
    thread, a script), or when the buffer is full."""
    global _flush_loop
    with _pending_lock:
        _pending.append(line)
        if urgent or len(_pending) >= _MAX_PENDING:
            _flush_locked()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _flush_locked()
            return
        if _flush_loop is loop:
            return  # a flush is due on this loop
        if _flush_loop is not None:
            # Due on another loop, which may never run it (an ended asyncio.run): now.
            _flush_locked()
            return
        _flush_loop = loop
    loop.call_later(FLUSH_DELAY_SECONDS, flush)


def flush() -> None:
    """Write the buffered log lines to stderr (at exit too: none may be lost)."""
    with _pending_lock:
        _flush_locked()


def _flush_locked() -> None:
    global _flush_loop
    _flush_loop = None
    if not _pending:
        return
    text = "".join(_pending)
    _pending.clear()
    stream = sys.stderr
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        # stderr closed or its reader gone: the lines cannot be written anywhere, and an
        # error here would fail the request or the loop callback that logged them. Loguru
        # drops them the same way (it reports the error on that same stderr).
        pass


atexit.register(flush)


def _flush_then(hook: Any) -> Any:
    def flush_before(*args: Any) -> None:
        flush()  # the lines that led to the crash, before its traceback
        hook(*args)

    return flush_before


# The local UTC offset, as loguru stamps its records (`time` of a line), kept until the next
# whole minute: offsets change only on minute boundaries (DST), and looking the zone up is a
# localtime call per line.
_zone: timezone = UTC
_zone_until = 0.0


def _now() -> datetime:
    global _zone, _zone_until
    now = time.time()
    if now >= _zone_until:
        local = time.localtime(now)
        _zone = timezone(timedelta(seconds=local.tm_gmtoff), local.tm_zone)
        _zone_until = now - now % 60 + 60
    return datetime.fromtimestamp(now, _zone)


class AccessLog:
    """The one INFO line per request of a service, as `logger.bind(service=...).info` would
    write it: in JSON mode the same object (time, level, message, logger, service, trace_id,
    request_id) built straight from the context with orjson, skipping the record loguru
    builds (frame, process and thread lookups, the patcher, the handler's formatting); in
    text mode, or before logging is configured, through loguru itself. Lines below the
    configured level are dropped either way. The JSON line reaches only the configured sink:
    a sink added later (a test's) sees the other lines, not this one."""

    __slots__ = ("_logged_as", "_loguru", "_service")

    def __init__(self, service: str, *, logged_as: str) -> None:
        self._service = service
        self._logged_as = logged_as  # the `logger` field: the module that logs the line
        # depth=1: loguru names the module and line of `info`'s caller, as before.
        self._loguru = logger.bind(service=service).opt(depth=1)

    def info(self, message: str) -> None:
        """Log `message` (already formatted, control characters already escaped)."""
        if not _json_lines:
            self._loguru.info(message)
            return
        if _threshold > logging.INFO:
            return
        line = orjson.dumps(
            {
                "time": _now().isoformat(),
                "level": "INFO",
                "message": message,
                "logger": self._logged_as,
                "service": self._service,
                "trace_id": current_trace_id() or "-",
                "request_id": current_request_id() or "-",
            }
        )
        _write(line.decode() + "\n", urgent=False)


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (uvicorn, sqlalchemy, aio-pika) into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(*, json: bool, level: str = "INFO") -> None:
    global _configured, _json_lines, _threshold
    if _configured:
        return
    _configured = True
    logger.remove()
    logger.configure(patcher=_add_context)
    _threshold = logger.level(level).no
    _json_lines = json
    if json:
        sys.excepthook = _flush_then(sys.excepthook)
        # format="{message}": the sink builds the line from the record, nothing to format.
        logger.add(_json_sink, level=level, format="{message}", backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level,
            format=(
                "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
                "<cyan>{extra[service]}</cyan> <dim>{extra[trace_id]}</dim> {message}"
            ),
            backtrace=False,
            diagnose=False,
        )
    # The stdlib loggers get loguru's threshold too: at level 0 every library builds and
    # routes its DEBUG and TRACE records (uvicorn then even wraps the app in its per-message
    # TRACE logger), only for loguru to drop them.
    logging.basicConfig(handlers=[_InterceptHandler()], level=logger.level(level).no, force=True)
    # httpx logs every outgoing call at INFO; the peer already logs the request it served.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logger.level(level).no))
    # uvicorn's own access log would be a second line per request.
    for name in ("uvicorn.access",):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = False
    logging.getLogger("uvicorn.access").disabled = True
