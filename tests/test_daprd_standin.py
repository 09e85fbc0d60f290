"""The daprd stand-in's delivery semantics, one answer per topic, on the real RabbitMQ: what
daprd does with SUCCESS, RETRY, DROP, 404 and status codes, with and without a dead-letter
topic, and where the message ends up (postman/http and subscription.go)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.daprd_standin import (
    DaprCluster,
    DaprResources,
    RabbitMqComponent,
    RetryPolicy,
    sidecar_servers,
)

PUBSUB = "pubsub"
ANSWERS: dict[str, tuple[int, dict[str, Any] | None]] = {
    "t.success": (200, {"status": "SUCCESS"}),
    "t.retry": (200, {"status": "RETRY"}),
    "t.drop": (200, {"status": "DROP"}),
    "t.drop-with-dead-letter-topic": (200, {"status": "DROP"}),
    "t.missing": (404, None),
    "t.refused": (422, {"title": "refused"}),
    "t.unavailable": (503, None),
}


def resources() -> DaprResources:
    component = {
        "kind": "Component",
        "metadata": {"name": PUBSUB},
        "spec": {
            "type": "pubsub.rabbitmq",
            "version": "v1",
            "metadata": [
                {"name": "connectionString", "value": "amqp://replaced"},
                {"name": "durable", "value": "true"},
                {"name": "deletedWhenUnused", "value": "false"},
                {"name": "requeueInFailure", "value": "false"},
                {"name": "enableDeadLetter", "value": "true"},
                {"name": "deliveryMode", "value": "2"},
                {"name": "publisherConfirm", "value": "true"},
            ],
        },
    }
    resiliency = {
        "kind": "Resiliency",
        "metadata": {"name": "r"},
        "spec": {
            "policies": {
                "retries": {
                    "delivery": {
                        "policy": "constant",
                        "duration": "1s",
                        "maxRetries": 2,
                        "matching": {"httpStatusCodes": "500-599"},
                    }
                }
            },
            "targets": {"components": {PUBSUB: {"inbound": {"retry": "delivery"}}}},
        },
    }
    return DaprResources.from_objects([component, resiliency], {})


def app() -> FastAPI:
    api = FastAPI()

    @api.get("/dapr/subscribe")
    async def subscribe() -> list[dict[str, Any]]:
        listed = [{"pubsubname": PUBSUB, "topic": t, "route": f"/on/{t}"} for t in ANSWERS]
        listed[3]["deadLetterTopic"] = "t.dead-letters"
        return listed

    @api.post("/on/{topic}")
    async def on(topic: str, request: Request) -> JSONResponse:
        status, body = ANSWERS[topic]
        return JSONResponse(body, status_code=status)

    return api


async def queue_depth(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_what_daprd_does_with_each_answer(amqp_url: str, tmp_path: Path) -> None:
    cluster = DaprCluster(resources(), amqp_url, {}, time_scale=0.001)
    async with sidecar_servers(cluster):
        sidecar = cluster.sidecar_for("app")
        sidecar.attach(app())
        await sidecar.init_components()
        await sidecar.subscribe_all()
        for topic in ANSWERS:
            envelope = b'{"id": "%s", "specversion": "1.0", "type": "x", "source": "s"}' % (
                topic.encode()
            )
            await sidecar.adapter_publish(PUBSUB, topic, envelope, {})

        expected_attempts = {
            "t.success": 1,
            "t.retry": 3,  # maxRetries 2: three attempts, then final
            "t.drop": 1,
            "t.drop-with-dead-letter-topic": 1,
            "t.missing": 1,
            "t.refused": 1,  # a code error `matching` does not list: final at once
            "t.unavailable": 3,
        }

        def attempts(topic: str) -> int:
            return sum(1 for a in cluster.attempts if a.topic == topic)

        async with asyncio.timeout(20):
            while any(attempts(t) < n for t, n in expected_attempts.items()):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the acks and nacks of the last attempts
        assert {t: attempts(t) for t in ANSWERS} == expected_attempts

        depths = {t: await queue_depth(amqp_url, f"dlq-app-{t}") for t in ANSWERS}
        # Final failures are nacked into the component's dead-letter queue; DROP and 404 are
        # acked: gone, unless a dead-letter topic is named — then published there, where
        # nothing is bound, and gone as well (defect 1's class).
        assert depths == {
            "t.success": 0,
            "t.retry": 1,
            "t.drop": 0,
            "t.drop-with-dead-letter-topic": 0,
            "t.missing": 0,
            "t.refused": 1,
            "t.unavailable": 1,
        }
        assert [t for a, t, _ in cluster.published if t == "t.dead-letters"] == ["t.dead-letters"]
        for topic in ANSWERS:
            assert await queue_depth(amqp_url, f"app-{topic}") == 0


def test_the_component_refuses_what_its_decoder_refuses() -> None:
    with pytest.raises(ValueError, match="uint8"):
        RabbitMqComponent(PUBSUB, {"connectionString": "amqp://x", "prefetchCount": "300"}, "a")
    with pytest.raises(ValueError, match="delivery mode"):
        RabbitMqComponent(PUBSUB, {"connectionString": "amqp://x", "deliveryMode": "3"}, "a")


def test_retry_policy_defaults_are_daprs() -> None:
    constant = RetryPolicy.parse({"policy": "constant", "maxRetries": 3})
    assert list(constant.delays()) == [5.0, 5.0, 5.0]
    exponential = RetryPolicy.parse({"policy": "exponential", "maxRetries": 4, "maxInterval": "1s"})
    waits = list(exponential.delays())
    assert len(waits) == 4 and all(0.25 <= w <= 1.5 for w in waits)
    assert RetryPolicy.parse({"matching": {"httpStatusCodes": "429,500-599"}}).retries_status(503)
    assert not RetryPolicy.parse({"matching": {"httpStatusCodes": "429,500-599"}}).retries_status(
        422
    )
