"""The kernel's event subscriptions (event type -> use case with its dependencies) and the
answer to a unique violation no use case caught."""

from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI

from billing_common.consumers import subscribe_use_cases
from billing_common.events import CloudEvent
from billing_common.ports import EventHandler
from billing_common.problems import install_problem_handlers
from billing_common.uniqueness import UniqueViolation


@dataclass
class RecordingContext:
    """Takes subscriptions as ServiceContext.subscribe does."""

    handlers: dict[str, EventHandler] = field(default_factory=dict)
    lanes: dict[str, str | None] = field(default_factory=dict)

    def subscribe(self, event_type: str, handler: EventHandler, *, lane: str | None = None) -> None:
        self.handlers[event_type] = handler
        self.lanes[event_type] = lane


@dataclass(frozen=True)
class Deps:
    seen: list[tuple[str, str]]


async def on_created(event: CloudEvent, deps: Deps) -> None:
    deps.seen.append(("created", event.id))


async def on_voided(event: CloudEvent, deps: Deps) -> None:
    deps.seen.append(("voided", event.id))


async def test_each_use_case_is_subscribed_to_its_type_with_the_dependencies() -> None:
    ctx = RecordingContext()
    deps = Deps(seen=[])
    subscribe_use_cases(ctx, {"t.created": on_created, "t.voided": on_voided}, deps)

    assert sorted(ctx.handlers) == ["t.created", "t.voided"]
    assert ctx.handlers["t.created"].__name__ == "on_created"  # what logs and buses show
    await ctx.handlers["t.voided"](CloudEvent(id="e1", source="/test", type="t.voided"))
    await ctx.handlers["t.created"](CloudEvent(id="e2", source="/test", type="t.created"))
    assert deps.seen == [("voided", "e1"), ("created", "e2")]
    assert ctx.lanes == {"t.created": None, "t.voided": None}


def test_a_use_case_listed_in_a_lane_is_subscribed_in_it() -> None:
    ctx = RecordingContext()
    subscribe_use_cases(
        ctx, {"t.created": on_created, "t.voided": on_voided}, Deps([]), lanes={"t.voided": "x"}
    )
    assert ctx.lanes == {"t.created": None, "t.voided": "x"}


async def test_a_unique_violation_nobody_answered_is_a_409_problem() -> None:
    app = FastAPI()
    install_problem_handlers(app, {})

    @app.post("/things")
    async def create() -> None:
        raise UniqueViolation(table="things", columns=("tenant_id", "code"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/things")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "/problems/unique-violation"
