"""The read-only HTTP endpoints: ``/healthz``, ``/readyz``, ``/metrics`` (aiohttp).

- ``GET /healthz``: 200 while the event loop is alive (the daemon's heartbeat task keeps a
  fresh timestamp), else 503. For liveness probes and Docker ``HEALTHCHECK``.
- ``GET /readyz``: 200 when every readiness condition passes (state dir writable, destination
  reachable, no upload overdue, spool below its limit), else 503; the JSON body names each
  condition and why it fails. For readiness probes and load balancers.
- ``GET /metrics``: the per-daemon Prometheus registry in text exposition format.

Nothing here changes state; every other method gets 405. Bound to ``http.listen``
(loopback by default); ``host:0`` picks a free port, reported by `HttpServer.port`.

The endpoints must never starve the daemon of file descriptors: at most
`MAX_CONNECTIONS` are served at once (more are answered 503 and closed at once), a
connection idle for `IDLE_TIMEOUT_SECONDS` (before or between requests) is closed, and
aiohttp's one-traceback-per-malformed-request lines are rate-limited (`archiverd.logs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from archiverd.errors import ConfigError


class Probes(Protocol):
    """What the endpoints ask the daemon (`archiverd.service.health.Health` answers)."""

    def liveness(self) -> str | None:
        """None while the loop is alive, else why not."""
        ...

    async def readiness(self) -> Mapping[str, str | None]:
        """Each readiness condition mapped to None (passing) or why it fails."""
        ...


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:9464`` too) into host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"http.listen = {listen!r}: use host:port, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


MAX_CONNECTIONS = 32
ACCEPT_BACKLOG = 16
"""asyncio accepts up to `backlog` connections per wake-up before any of them is answered:
kept small so a crowd of clients cannot take a burst of fds (EMFILE) from the daemon."""
IDLE_TIMEOUT_SECONDS = 10.0
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Gate:
    """Counts the connections being served."""

    def __init__(self) -> None:
        self.open = 0


class _Counted(asyncio.Protocol):
    """Forwards to aiohttp's handler; counts the connection from accept to close."""

    def __init__(self, inner: asyncio.Protocol, gate: _Gate) -> None:
        self._inner = inner
        self._gate = gate
        gate.open += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.open -= 1
        self._inner.connection_lost(exc)


class _Busy(asyncio.Protocol):
    """Over the cap: answer 503 and close, holding the descriptor for no time."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class HttpServer:
    """aiohttp server for the three endpoints; `start` then `aclose`."""

    def __init__(
        self,
        listen: str,
        health: Probes,
        registry: CollectorRegistry,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.host, self._port = parse_listen(listen)
        self._health = health
        self._registry = registry
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._gate = _Gate()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    @property
    def connections(self) -> int:
        """Connections being served now (at most `max_connections`)."""
        return self._gate.open

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        return self._port

    def app(self) -> web.Application:
        """The application (also what tests serve with aiohttp's test client)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz, allow_head=True)
        app.router.add_get("/readyz", self._readyz, allow_head=True)
        app.router.add_get("/metrics", self._metrics, allow_head=True)
        return app

    async def start(self) -> None:
        """Bind and serve; raises `ConfigError` when the address cannot be bound."""
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.idle_timeout,
        )
        await runner.setup()
        handler = runner.server
        assert handler is not None
        gate, cap = self._gate, self.max_connections

        def protocol() -> asyncio.Protocol:
            if gate.open >= cap:
                return _Busy()
            return _Counted(handler(), gate)

        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                protocol, self.host or None, self._port, reuse_address=True, backlog=ACCEPT_BACKLOG
            )
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"http.listen = '{self.host}:{self._port}' cannot be bound ({exc.strerror}): "
                "pick a free port or set http.listen = '' to disable HTTP"
            ) from None
        self._runner = runner
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop serving; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.shutdown()
            await runner.cleanup()
        if server is not None:
            await server.wait_closed()

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self._health.liveness()
        if problem is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "failing", "reason": problem}, status=503)

    async def _readyz(self, request: web.Request) -> web.Response:
        conditions = dict(await self._health.readiness())
        failing = {name: why for name, why in conditions.items() if why is not None}
        body = {
            "status": "failing" if failing else "ok",
            "failing": failing,
            "checks": {
                name: "ok" if why is None else "failing" for name, why in conditions.items()
            },
        }
        return web.json_response(body, status=503 if failing else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        response = web.Response(body=body)
        # aiohttp rejects a charset inside content_type=, so set the header verbatim.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
