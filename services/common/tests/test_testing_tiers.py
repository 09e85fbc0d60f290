"""The kernel's tier rule: a test that needs a real server is `integration`, so that
`make test-unit` (-m "not integration") never runs one. Before, a test's own
`params=["sqlite", "postgresql"]` fixture ran its PostgreSQL half in the fast tier."""

from __future__ import annotations

from types import SimpleNamespace

from billing_common.testing import needs_a_server


def item(*fixtures: str, **params: object) -> object:
    callspec = SimpleNamespace(params=params) if params else None
    return SimpleNamespace(fixturenames=fixtures, callspec=callspec)


def test_a_postgresql_parameter_needs_a_server_and_sqlite_does_not() -> None:
    assert needs_a_server(item("platform", backend="postgresql"))  # type: ignore[arg-type]
    assert not needs_a_server(item("platform", backend="sqlite"))  # type: ignore[arg-type]


def test_the_server_fixtures_need_a_server() -> None:
    assert needs_a_server(item("postgres_url"))  # type: ignore[arg-type]
    assert needs_a_server(item("tmp_path", "amqp_url"))  # type: ignore[arg-type]
    assert not needs_a_server(item("tmp_path", service=3))  # type: ignore[arg-type]
