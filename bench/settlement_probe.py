"""Where a settlement's time goes: the bench's settlement scenario (invoice creation paced at
a given rate, payments spread over it, the invoice row polled every ms), plus, per payment,
the timestamps the services write anyway — the payment's outbox row (created, published),
the invoice's inbox claim and its invoice.paid outbox row — and the moments the payment's
and the invoice's transactions committed, as segments of the path.

python -m bench.settlement_probe [--rate 27] [--payments 155] [--seconds 20]
    [--logs DIR] [--py-spy PATH [--service invoice] [--spy-out FILE.raw]]

A diagnostic, not a figure of `make bench`: the stages are read from wall-clock times
written by different processes on one machine (same clock). The inbox row's time is when
the consumer built its claim: at the start of its transaction before 6e4f797, with its one
write since (so "claim -> invoice.paid emitted" reads about 0 from then on).

Commit moments: a row's `created_at` is written before its transaction commits, and what
the next stage can see is the commit, so the probe adds (to its own fresh databases only) a
trigger on the payment service's outbox and the invoice service's inbox that notifies the
probe with the event id; PostgreSQL delivers a notification only once its transaction has
committed, so its arrival (on a LISTEN connection of the probe, on the probe's event loop
like the poll that sees "paid") is the commit, give or take that loop's delay. Likewise
the probe binds a queue of its own to the payment event: its copy's arrival says when the
relay's publish had reached the broker, which splits the relay from the invoice's consumer.
The claim's time is taken after the consumer's snapshot read, just before its write.

The invoice service's own line for each event it handled ("event <type> <id> ok <ms>ms",
written when the handler returned, with the handler's duration) splits the rest: the
handler's start (that line's time less its duration) ends the delivery (the broker's queue,
the prefetch window, the event loop's delay in running the delivery), and from there to the
claim is the pool checkout and the snapshot read."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path

import aio_pika
import asyncpg
import httpx
from aio_pika.abc import AbstractIncomingMessage

from bench import scenarios
from bench.infra import Resources, pin_self, plain_url, plan_placement, py_spy_record
from bench.loadgen import Request, paced
from bench.platform import Platform, start_platform
from billing_common.event_schemas import PAYMENT_RECEIVED
from billing_launcher import seed_flows


async def _pay_all(
    platform: Platform, headers: dict[str, str], ids: list[str], spread: float
) -> list[dict[str, float | str]]:
    gap = spread / max(1, len(ids))
    rows: list[dict[str, float | str]] = []
    conn = await asyncpg.connect(plain_url(platform.database_urls["invoice"]))
    try:
        async with httpx.AsyncClient(base_url=platform.url("payment"), timeout=30) as client:
            for invoice_id in ids:
                began = time.perf_counter()
                posted = time.time()
                answer = await seed_flows.pay(
                    client, headers, invoice_id, None, "tok_visa", seed_flows.key("probe")
                )
                payment = seed_flows.expect(answer, 201)
                answered = time.time()
                while (
                    await conn.fetchval(
                        "SELECT status FROM invoice_invoices WHERE id = $1", invoice_id
                    )
                ) != "paid":
                    await asyncio.sleep(0.001)
                rows.append(
                    {
                        "invoice_id": invoice_id,
                        "payment_id": str(payment["id"]),
                        "posted": posted,
                        "answered": answered,
                        "seen_paid": time.time(),
                    }
                )
                rest = gap - (time.perf_counter() - began)
                if rest > 0:
                    await asyncio.sleep(rest)
    finally:
        await conn.close()
    return rows


COMMIT_CHANNEL = "settlement_probe_commit"
# (table, the condition on NEW that picks the rows to report): the payment's event as the
# payment service commits it, the invoice's inbox claim as the settling write commits it.
_COMMIT_TRIGGERS = {
    "payment": ("outbox", "NEW.event_type LIKE '%payment.received%'"),
    "invoice": ("inbox", "NEW.event_type LIKE '%payment.received%'"),
}


def _record_commit(
    arrived: dict[str, float], _conn: object, _pid: int, _channel: str, event_id: str
) -> None:
    arrived.setdefault(event_id, time.time())


@asynccontextmanager
async def commit_times(platform: Platform) -> AsyncIterator[dict[str, dict[str, float]]]:
    """Per database ("payment", "invoice"): event id -> the Unix time its row's transaction
    was seen committed (a notification from a trigger the probe installs); and "broker":
    event id -> when the broker delivered the probe its own copy of the payment event (an
    exclusive queue bound beside the invoice's), i.e. the relay's publish had gone out."""
    seen: dict[str, dict[str, float]] = {name: {} for name in (*_COMMIT_TRIGGERS, "broker")}
    connections: list[asyncpg.Connection] = []
    broker = await aio_pika.connect(platform.amqp_url)
    try:
        channel = await broker.channel()
        spy = await channel.declare_queue(exclusive=True, auto_delete=True)
        await spy.bind(platform.exchange, routing_key=PAYMENT_RECEIVED)

        async def at_broker(message: AbstractIncomingMessage) -> None:
            if message.message_id:
                seen["broker"].setdefault(message.message_id, time.time())

        await spy.consume(at_broker, no_ack=True)
        for name, (table, condition) in _COMMIT_TRIGGERS.items():
            conn = await asyncpg.connect(plain_url(platform.database_urls[name]))
            connections.append(conn)
            await conn.execute(
                f"""
                CREATE OR REPLACE FUNCTION settlement_probe_notify() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_notify('{COMMIT_CHANNEL}', NEW.event_id); RETURN NULL; END $$;
                DROP TRIGGER IF EXISTS settlement_probe_commit ON {table};
                CREATE TRIGGER settlement_probe_commit AFTER INSERT ON {table}
                FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION settlement_probe_notify();
                """
            )
            await conn.add_listener(COMMIT_CHANNEL, partial(_record_commit, seen[name]))
        yield seen
    finally:
        for conn in connections:
            await conn.close()
        await broker.close()


def handler_times(log: Path) -> dict[str, tuple[float, float]]:
    """From the invoice service's JSON log: payment event id -> (handler started, returned),
    Unix times."""
    found: dict[str, tuple[float, float]] = {}
    if not log.exists():
        return found
    for line in log.read_text().splitlines():
        if PAYMENT_RECEIVED not in line or not line.startswith("{"):
            continue
        record = json.loads(line)
        words = str(record.get("message", "")).split()
        if len(words) != 5 or words[0] != "event" or not words[4].endswith("ms"):
            continue
        done = datetime.fromisoformat(record["time"]).timestamp()
        found[words[2]] = (done - float(words[4][:-2]) / 1000, done)
    return found


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("nan")


async def _stamp(
    platform: Platform,
    rows: list[dict[str, float | str]],
    committed: dict[str, dict[str, float]],
    handled: dict[str, tuple[float, float]],
) -> None:
    """Add the services' own timestamps, and the commits the probe saw, to each row."""
    nan = float("nan")
    payment_db = await asyncpg.connect(plain_url(platform.database_urls["payment"]))
    invoice_db = await asyncpg.connect(plain_url(platform.database_urls["invoice"]))
    try:
        for row in rows:
            out = await payment_db.fetchrow(
                "SELECT event_id, created_at, published_at FROM outbox"
                " WHERE event_type LIKE '%payment.received%'"
                " AND payload::json->'data'->>'payment_id' = $1",
                row["payment_id"],
            )
            row["outbox_created"] = _ts(out["created_at"])
            row["published"] = _ts(out["published_at"])
            row["payment_committed"] = committed["payment"].get(out["event_id"], nan)
            row["invoice_committed"] = committed["invoice"].get(out["event_id"], nan)
            row["at_broker"] = committed["broker"].get(out["event_id"], nan)
            row["handler_started"], row["handler_done"] = handled.get(out["event_id"], (nan, nan))
            claimed = await invoice_db.fetchval(
                "SELECT processed_at FROM inbox WHERE event_id = $1", out["event_id"]
            )
            row["claimed"] = _ts(claimed)
            paid = await invoice_db.fetchval(
                "SELECT created_at FROM outbox WHERE event_type LIKE '%invoice.paid%'"
                " AND aggregate LIKE '%' || $1",
                row["invoice_id"],
            )
            row["paid_emitted"] = _ts(paid)
    finally:
        await payment_db.close()
        await invoice_db.close()


SEGMENTS = (
    (
        "payment outbox row -> payment committed (write, COMMIT)",
        "outbox_created",
        "payment_committed",
    ),
    ("answer -> payment committed (before answer: negative)", "answered", "payment_committed"),
    ("payment committed -> published (relay + confirm)", "payment_committed", "published"),
    (
        "payment committed -> at the broker (relay: wake, read, publish)",
        "payment_committed",
        "at_broker",
    ),
    ("at the broker -> invoice inbox claim (delivery, handler, read)", "at_broker", "claimed"),
    (
        "at the broker -> invoice handler start (queue, prefetch, loop)",
        "at_broker",
        "handler_started",
    ),
    ("handler start -> invoice inbox claim (pool checkout, read)", "handler_started", "claimed"),
    ("payment committed -> invoice inbox claim (relay, delivery)", "payment_committed", "claimed"),
    ("published -> invoice inbox claim (confirm vs delivery)", "published", "claimed"),
    ("claim -> invoice committed (write, COMMIT)", "claimed", "invoice_committed"),
    ("invoice committed -> paid seen (poll)", "invoice_committed", "seen_paid"),
    ("answer -> invoice inbox claim", "answered", "claimed"),
    ("answer -> paid seen (the bench's settlement)", "answered", "seen_paid"),
)


def _summary(rows: list[dict[str, float | str]]) -> str:
    lines = []
    for label, start, end in SEGMENTS:
        values = sorted(
            (float(r[end]) - float(r[start])) * 1000
            for r in rows
            if r[end] == r[end] and r[start] == r[start]  # not NaN
        )
        if not values:
            continue
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        lines.append(
            f"{label:66} p50 {statistics.median(values):7.2f}  p90 {p90:7.2f}"
            f"  p99 {p99:7.2f}  max {values[-1]:7.2f} ms"
        )
    return "\n".join(lines)


async def _spy(py_spy: str, pid: int, seconds: float, out: Path) -> None:
    """`py-spy record` (raw) of `pid` for `seconds`, into `out`."""
    spy = await asyncio.create_subprocess_exec(
        *py_spy_record(py_spy, pid, seconds, out), stdout=asyncio.subprocess.DEVNULL
    )
    await spy.wait()


async def probe(
    rate: float,
    payments: int,
    seconds: float,
    out: Path | None,
    logs: Path | None = None,
    spy: tuple[str, str, Path] | None = None,
) -> None:
    placement = plan_placement()
    pin_self(placement)
    resources = Resources()
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        try:
            platform = await start_platform(placement, Path(tmp), resources)
            headers = {"authorization": f"Bearer {platform.token()}"}
            ids = await scenarios.issued_invoices(platform, headers, payments)
            await platform.wait_quiet(30)
            async with commit_times(platform) as committed:
                idle_rows = await _pay_all(platform, headers, ids[:5], 1.0)
                creating = paced(
                    platform.url("invoice"),
                    Request(
                        "POST",
                        "/v1/invoices",
                        body=scenarios.body(scenarios.ORDER),
                        token=platform.token(),
                        idempotency_prefix=f"probe-{uuid.uuid4().hex[:8]}",
                    ),
                    rate=rate,
                    seconds=seconds,
                    connections=64,
                )
                paying = _pay_all(platform, headers, ids[5:], seconds * 0.9)
                if spy is None:
                    load, rows = await asyncio.gather(creating, paying)
                else:
                    py_spy, service, raw = spy
                    pid = platform.servers[service].running_pid
                    load, rows, _ = await asyncio.gather(
                        creating, paying, _spy(py_spy, pid, seconds * 0.9, raw)
                    )
                await platform.wait_quiet(30)
            await asyncio.sleep(0.1)  # the services write their buffered log lines every 20 ms
            handled = handler_times(Path(tmp) / "invoice.log")
            await _stamp(platform, idle_rows + rows, committed, handled)
            print(f"idle, {len(idle_rows)} payments one at a time:")
            print(_summary(idle_rows))
            print(
                f"\ncreation paced at {rate:g}/s: {load.rate:.1f}/s p50 {load.p50_ms:.1f}"
                f" p99 {load.p99_ms:.1f} ms ({load.errors} errors); {len(rows)} payments:"
            )
            print(_summary(rows))
            if out is not None:
                out.write_text(json.dumps({"idle": idle_rows, "load": rows}, indent=1))
        finally:
            await resources.close()
            if logs is not None:  # the services' logs, before the temporary directory goes
                logs.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, logs / log.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=27.0)
    # As `make bench`: 150 payments over 90 % of a 20 s paced run (and 5 idle ones first).
    parser.add_argument("--payments", type=int, default=155)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--logs", type=Path, help="copy the services' logs into this directory")
    parser.add_argument(
        "--py-spy", dest="py_spy", help="py-spy's path: profile --service under the load"
    )
    parser.add_argument("--service", default="invoice", help="the service --py-spy records")
    parser.add_argument(
        "--spy-out", type=Path, help="the raw profile (default bench/out/<service>-settlement.raw)"
    )
    args = parser.parse_args()
    spy = None
    if args.py_spy:
        raw = args.spy_out or Path("bench/out") / f"{args.service}-settlement.raw"
        raw.parent.mkdir(parents=True, exist_ok=True)
        spy = (args.py_spy, args.service, raw)
    asyncio.run(probe(args.rate, args.payments, args.seconds, args.out, args.logs, spy))


if __name__ == "__main__":
    main()
