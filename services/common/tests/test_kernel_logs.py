"""The access line (billing_common.logs.AccessLog) and the buffered JSON lines: the same
object loguru's JSON sink writes, the configured level honoured, nothing lost at exit."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from loguru import logger

from billing_common import logs, tracing
from billing_common.logs import AccessLog
from billing_common.web import StrictJsonRoute, create_service_app

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """JSON mode at INFO, as configure_logging sets it, without reconfiguring loguru."""
    logs.flush()
    monkeypatch.setattr(logs, "_json_lines", True)
    monkeypatch.setattr(logs, "_threshold", logger.level("INFO").no)
    yield
    logs.flush()


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def test_the_access_line_is_what_the_json_sink_writes_for_the_same_call(
    json_lines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    tracing.bind(TRACEPARENT, "req-7")
    sink = logger.add(logs._json_sink, format="{message}", level="INFO")
    try:
        # As the middleware logged it before: the patcher adds the trace context.
        logger.patch(logs._add_context).bind(service="tax").info("POST /v1/x {} 201 1.0ms")
        AccessLog("tax", logged_as=__name__).info("POST /v1/x {} 201 1.0ms")
        logs.flush()
    finally:
        logger.remove(sink)
    through_loguru, direct = _lines(capsys.readouterr().err)
    assert list(direct) == list(through_loguru)  # the same fields, in the same order
    stamped = datetime.fromisoformat(direct.pop("time"))
    loguru_stamped = datetime.fromisoformat(through_loguru.pop("time"))
    assert stamped.utcoffset() == loguru_stamped.utcoffset()  # the local offset, as loguru
    assert timedelta(0) <= stamped - loguru_stamped < timedelta(seconds=1)
    assert direct == through_loguru
    assert direct["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert direct["request_id"] == "req-7"
    assert direct["level"] == "INFO" and direct["logger"] == __name__


async def test_lines_are_written_within_the_flush_delay(
    json_lines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    tracing.bind(None)
    access = AccessLog("discount", logged_as=__name__)
    access.info("GET /a 200 0.1ms")
    access.info("GET /b 200 0.1ms")
    assert capsys.readouterr().err == ""  # buffered on the running loop
    await asyncio.sleep(logs.FLUSH_DELAY_SECONDS * 5)
    lines = _lines(capsys.readouterr().err)
    assert [line["message"] for line in lines] == ["GET /a 200 0.1ms", "GET /b 200 0.1ms"]
    assert all(line["trace_id"] == tracing.current_trace_id() for line in lines)


async def test_a_warning_is_written_at_once_after_the_lines_before_it(
    json_lines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = logger.add(logs._json_sink, format="{message}", level="INFO")
    try:
        AccessLog("tax", logged_as=__name__).info("GET /first 200 0.1ms")
        logger.patch(logs._add_context).warning("then this")
        messages = [line["message"] for line in _lines(capsys.readouterr().err)]
    finally:
        logger.remove(sink)
    assert messages == ["GET /first 200 0.1ms", "then this"]


def test_outside_an_event_loop_a_line_is_written_at_once(
    json_lines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    AccessLog("tax", logged_as=__name__).info("GET /sync 200 0.1ms")
    assert _lines(capsys.readouterr().err)[0]["message"] == "GET /sync 200 0.1ms"


async def test_below_the_configured_level_no_access_line_is_written(
    json_lines: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logs, "_threshold", logger.level("WARNING").no)
    AccessLog("tax", logged_as=__name__).info("GET /quiet 200 0.1ms")
    logs.flush()
    assert capsys.readouterr().err == ""


async def test_in_text_mode_the_access_line_goes_through_loguru() -> None:
    assert not logs._json_lines  # what the tests run with: configure_logging not called
    seen: list[Any] = []
    sink = logger.add(seen.append, format="{extra[service]} {message}", level="INFO")
    try:
        AccessLog("tax", logged_as="ignored").info("GET /{braces} 200 0.1ms")
    finally:
        logger.remove(sink)
    assert [str(message) for message in seen] == ["tax GET /{braces} 200 0.1ms\n"]
    assert seen[0].record["name"] == __name__  # the caller's module, as before


@pytest.mark.parametrize(
    "ending", ["", "raise SystemExit(3)", "raise RuntimeError('crash')", "import sys; sys.exit(1)"]
)
def test_no_buffered_line_is_lost_at_exit(ending: str) -> None:
    """The loop ends before the flush timer fires: the lines are written at exit, a clean
    one or not."""
    program = textwrap.dedent(
        f"""
        import asyncio
        from billing_common import logs
        from billing_common.logs import AccessLog, configure_logging

        configure_logging(json=True, level="INFO")

        async def serve():
            for number in range(3):
                AccessLog("tax", logged_as="x").info(f"GET /{{number}} 200 0.1ms")

        asyncio.run(serve())
        assert logs._pending, "nothing was buffered: the test would prove nothing"
        {ending}
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    lines = done.stderr.splitlines()
    messages = [json.loads(line)["message"] for line in lines if line.startswith("{")]
    assert messages == ["GET /0 200 0.1ms", "GET /1 200 0.1ms", "GET /2 200 0.1ms"], done.stderr
    if "Traceback (most recent call last):" in lines:  # after the lines that led to it
        assert lines.index("Traceback (most recent call last):") == 3, done.stderr


@asynccontextmanager
async def _no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


async def test_the_middleware_writes_one_access_line_per_request_with_its_trace_id(
    json_lines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    router = APIRouter(route_class=StrictJsonRoute)

    @router.get("/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {"name": name}

    app = create_service_app(
        service="things",
        title="t",
        description="d",
        version="1",
        routers=[router],
        lifespan=_no_lifespan,
        domain_errors={},
        readiness_checks=lambda _: [],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get(
            "/v1/things/a%0Ab", headers={"traceparent": TRACEPARENT, "x-request-id": "r-1"}
        )
        assert answer.status_code == 200
        await client.get("/healthz")  # not logged
    logs.flush()
    (line,) = _lines(capsys.readouterr().err)
    assert line["message"].startswith("GET /v1/things/a\\x0ab 200 ")  # the newline escaped
    assert line["message"].endswith("ms")
    assert (line["service"], line["request_id"], line["logger"]) == (
        "things",
        "r-1",
        "billing_common.web",
    )
    assert line["trace_id"] == answer.headers["x-trace-id"] == TRACEPARENT[3:35]


def test_a_stderr_that_cannot_be_written_fails_no_caller(
    json_lines: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = io.StringIO()
    gone.close()  # writes raise ValueError, as on a closed stream
    monkeypatch.setattr(sys, "stderr", gone)
    AccessLog("tax", logged_as=__name__).info("GET /lost 200 0.1ms")
    assert not logs._pending  # dropped, as loguru drops what its sink cannot write


def _subscribed_context(handled: list[str]) -> tuple[Any, Any]:
    """A ServiceContext with only what `subscribe` uses (the bus, the service's name)."""
    from billing_common.adapters.inprocess_bus import InProcessEventBus
    from billing_common.events import CloudEvent
    from billing_common.runtime import Adapters, ServiceContext
    from billing_common.settings import ServiceSettings

    bus = InProcessEventBus()
    unused: Any = None
    ctx = ServiceContext(
        settings=ServiceSettings.for_service("payment", secrets_file=None),
        engine=unused,
        sessions=unused,
        relay=unused,
        adapters=Adapters(
            bus=bus, invoker=unused, secrets=unused, state_store=unused, owns_bus=False
        ),
        state=unused,
        tokens=unused,
    )

    async def handle(event: CloudEvent) -> None:
        handled.append(event.id)

    ctx.subscribe("test.logs.ping", handle)
    return bus, CloudEvent


async def test_an_event_cannot_forge_its_log_line() -> None:
    handled: list[str] = []
    bus, cloud_event = _subscribed_context(handled)
    forged = "e1\n00:00:00.000 INFO    payment - event x ok\x1b[2K"
    seen: list[Any] = []
    sink = logger.add(seen.append, format="{extra[service]} {message}", level="INFO")
    try:
        await bus.start()
        await bus.publish(cloud_event(id=forged, source="/test", type="test.logs.ping"))
        await bus.wait_idle()
        await bus.stop()
    finally:
        logger.remove(sink)
    assert handled == [forged]
    (line,) = [str(message) for message in seen if "test.logs.ping" in str(message)]
    assert line.startswith("payment event test.logs.ping e1\\x0a00:00:00.000 INFO ")
    assert "\\x1b[2K ok " in line and line.endswith("ms\n") and line.count("\n") == 1
    assert seen[0].record["name"] == "billing_common.runtime"


async def test_in_json_mode_the_event_line_carries_its_trace(
    json_lines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    handled: list[str] = []
    bus, cloud_event = _subscribed_context(handled)
    await bus.start()
    event = cloud_event(source="/test", type="test.logs.ping", traceparent=TRACEPARENT)
    await bus.publish(event)
    await bus.wait_idle()
    await bus.stop()
    logs.flush()
    (line,) = [line for line in _lines(capsys.readouterr().err) if "ping" in line["message"]]
    assert line["message"].startswith(f"event test.logs.ping {event.id} ok ")
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["service"] == "payment" and line["logger"] == "billing_common.runtime"
