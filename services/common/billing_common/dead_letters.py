"""Dead-letter queue tool for RabbitMQ: the direct runtime's queues and the dapr runtime's.

    python -m billing_common.dead_letters --queue billing.events.invoice list
    python -m billing_common.dead_letters --queue billing.events.invoice replay --all
    python -m billing_common.dead_letters --queue billing.events.invoice replay --id EVENT_ID
    python -m billing_common.dead_letters --queue billing.events.invoice purge [--id EVENT_ID]
    python -m billing_common.dead_letters --dapr-app invoice list
    python -m billing_common.dead_letters --dapr-app invoice [--topic T] replay --all

`--queue` names a direct-runtime consumer's queue (`<exchange>.<service>`); its dead letters
are in `<queue>.dlq`. `--dapr-app` names a Dapr app id: Dapr's RabbitMQ component keeps its
dead letters in `dlq-<app-id>-<topic>`, one per subscribed topic (`--topic`, repeatable;
default every billing event type, skipping the queues that do not exist). Replay moves them
back to the consumer's own queue with a fresh retry budget. The broker URL comes from
`--amqp-url`, else AMQP_URL, else the local default (on Kubernetes: port-forward the broker
and use the connection string of the `<release>-messaging` Secret; README, Kubernetes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

import aio_pika
import aiormq

import billing_common.event_schemas  # noqa: F401 - registers the event types (default topics)
from billing_common.adapters.dapr_dead_letters import DaprDeadLetterQueue, existing_queues
from billing_common.adapters.rabbitmq_bus import DeadLetter, DeadLetterQueue
from billing_common.events import registered_event_types

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m billing_common.dead_letters",
        description="List, replay or purge the dead letters of one consumer queue.",
    )
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL), help="broker URL"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--queue", help="direct runtime: consumer queue, e.g. billing.events.invoice"
    )
    where.add_argument("--dapr-app", help="dapr runtime: the app id, e.g. invoice")
    parser.add_argument(
        "--topic",
        action="append",
        help="with --dapr-app: only this topic (repeatable; default every billing event type)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="show dead letters without removing them")
    listing.add_argument("--limit", type=int, default=100, help="show at most this many")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    replay = commands.add_parser("replay", help="move dead letters back to the queue")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("--id", help="the dead letter with this event id")

    purge = commands.add_parser("purge", help="delete dead letters for good")
    purge.add_argument("--id", help="only the dead letter with this event id (default: all)")
    return parser


def _format(letter: DeadLetter, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "id": letter.message_id,
                "type": letter.event_type,
                "attempts": letter.attempts,
                "error_type": letter.error_type,
                "error": letter.error,
                "dead_lettered_at": letter.dead_lettered_at,
                "subject": letter.event.subject if letter.event else None,
                "tenant": letter.event.tenant if letter.event else None,
            }
        )
    return "\t".join(
        [
            letter.message_id or "-",
            letter.event_type or "-",
            f"attempts={letter.attempts}",
            letter.dead_lettered_at or "-",
            f"{letter.error_type}: {letter.error}" if letter.error_type else letter.error,
        ]
    )


async def run(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """The CLI without the process around it (tests call this). Returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        connection = await aio_pika.connect(args.amqp_url, timeout=10)
    except (aiormq.exceptions.AMQPError, OSError) as exc:
        out.write(f"cannot connect to RabbitMQ: {exc!r}\n")
        return 2
    try:
        if args.dapr_app:
            return await _dapr_command(connection, args, out)
        dlq = DeadLetterQueue(connection, args.queue)
        try:
            return await _command(dlq, args, out)
        except aiormq.exceptions.ChannelNotFoundEntity:
            out.write(f"no queue named {dlq.name}\n")
            return 2
    finally:
        await connection.close()


async def _dapr_command(
    connection: aio_pika.abc.AbstractConnection, args: argparse.Namespace, out: TextIO
) -> int:
    topics = args.topic or registered_event_types()
    queues = await existing_queues(connection, args.dapr_app, topics)
    if not queues:
        out.write(f"no dead-letter queue dlq-{args.dapr_app}-<topic> for {', '.join(topics)}\n")
        return 2
    codes = [await _command(dlq, args, out) for dlq in queues]
    # One queue without the wanted id is not a failure when another had it.
    return 0 if 0 in codes else max(codes)


async def _command(
    dlq: DeadLetterQueue | DaprDeadLetterQueue, args: argparse.Namespace, out: TextIO
) -> int:
    if args.command == "list":
        letters = await dlq.peek(limit=args.limit)
        for letter in letters:
            out.write(_format(letter, as_json=args.json) + "\n")
        if not args.json:
            out.write(f"{len(letters)} dead letter(s) shown from {dlq.name}\n")
        return 0
    if args.command == "replay":
        moved = await dlq.replay(None if args.all else args.id)
        out.write(f"replayed {moved} dead letter(s) from {dlq.name} to {dlq.queue}\n")
        return 0 if moved or args.all else 1
    dropped = await dlq.purge(args.id)
    out.write(f"purged {dropped} dead letter(s) from {dlq.name}\n")
    return 0 if dropped or args.id is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
