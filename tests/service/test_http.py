"""The HTTP endpoints on a real socket (port 0), hit with a real aiohttp client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest

from archiverd.errors import ConfigError
from archiverd.metrics import Metrics
from archiverd.service.http import HttpServer, parse_listen


class FakeHealth:
    """Liveness and readiness answers set by the test."""

    def __init__(self) -> None:
        self.alive: str | None = None
        self.conditions: dict[str, str | None] = {"state_dir": None, "spool": None}

    def liveness(self) -> str | None:
        return self.alive

    async def readiness(self) -> Mapping[str, str | None]:
        return self.conditions


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, FakeHealth, Metrics, str]]:
    health, metrics = FakeHealth(), Metrics()
    server = HttpServer("127.0.0.1:0", health, metrics.registry)
    await server.start()
    try:
        yield server, health, metrics, f"http://127.0.0.1:{server.port}"
    finally:
        await server.aclose()


async def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_healthz_follows_liveness(
    served: tuple[HttpServer, FakeHealth, Metrics, str],
) -> None:
    """/healthz is 200 while live and 503 with the reason when not."""
    _, health, _, base = served
    assert (await fetch(base + "/healthz"))[0] == 200
    health.alive = "event loop heartbeat is 40s old"
    status, _, body = await fetch(base + "/healthz")
    assert (status, json.loads(body)) == (
        503,
        {"status": "failing", "reason": "event loop heartbeat is 40s old"},
    )


async def test_readyz_names_the_failing_condition(
    served: tuple[HttpServer, FakeHealth, Metrics, str],
) -> None:
    """/readyz is 200 when all pass, else 503 with a JSON body naming what fails and why."""
    _, health, _, base = served
    status, content_type, body = await fetch(base + "/readyz")
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert json.loads(body)["checks"] == {"state_dir": "ok", "spool": "ok"}
    health.conditions["spool"] = "spool is at its limit"
    status, _, body = await fetch(base + "/readyz")
    assert status == 503
    assert json.loads(body) == {
        "status": "failing",
        "failing": {"spool": "spool is at its limit"},
        "checks": {"state_dir": "ok", "spool": "failing"},
    }


async def test_metrics_exposes_the_daemon_registry(
    served: tuple[HttpServer, FakeHealth, Metrics, str],
) -> None:
    """/metrics serves this daemon's registry in Prometheus text format, live values."""
    _, _, metrics, base = served
    metrics.segments_uploaded.inc(3)
    metrics.upload_failures.labels(reason="throttled").inc()
    status, content_type, body = await fetch(base + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    assert "archiverd_segments_uploaded_total 3.0" in body
    assert 'archiverd_upload_failures_total{reason="throttled"} 1.0' in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_endpoints_are_read_only(
    served: tuple[HttpServer, FakeHealth, Metrics, str], method: str
) -> None:
    """Nothing on the HTTP port accepts a state-changing method."""
    _, _, _, base = served
    assert (await fetch(base + "/readyz", method))[0] == 405


async def test_unknown_paths_are_404(served: tuple[HttpServer, FakeHealth, Metrics, str]) -> None:
    """Only the three endpoints exist."""
    assert (await fetch(served[3] + "/flush"))[0] == 404


async def test_port_in_use_is_a_config_error(
    served: tuple[HttpServer, FakeHealth, Metrics, str],
) -> None:
    """Binding an address already in use fails with ConfigError naming http.listen."""
    server, health, metrics, _ = served
    other = HttpServer(f"127.0.0.1:{server.port}", health, metrics.registry)
    with pytest.raises(ConfigError, match=r"http\.listen = '127\.0\.0\.1:\d+' cannot be bound"):
        await other.start()


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_listen(listen: str, parsed: tuple[str, int]) -> None:
    """host:port splits at the last colon; IPv6 brackets are removed."""
    assert parse_listen(listen) == parsed


def test_parse_listen_rejects_missing_port() -> None:
    """An address without a port is a ConfigError."""
    with pytest.raises(ConfigError, match="use host:port"):
        parse_listen("localhost")
