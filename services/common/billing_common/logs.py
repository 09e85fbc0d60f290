"""Loguru set-up: one line per request and per event, each carrying the trace id.

JSON lines (`LOG_JSON=true`, the default in containers) for machines; a compact text format
for people at a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Any

import orjson
from loguru import logger

from billing_common.tracing import current_request_id, current_trace_id

_configured = False

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
    sys.stderr.write(encoded + "\n")


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (uvicorn, sqlalchemy, aio-pika) into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(*, json: bool, level: str = "INFO") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    logger.remove()
    logger.configure(patcher=_add_context)
    if json:
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
