"""A fault-injecting HTTP/1.1 proxy for S3 tests, on a loopback port of its own.

It forwards each request to the upstream server over its own connection, unless a queued
`Fault` matches the request, in which case it does what the fault says:

- ``status``: answer 503 SlowDown / 500 InternalError / 501 NotImplemented, not forwarding;
- ``reset``: read the request, forward nothing, reset the connection (RST);
- ``reset_after``: forward the request (the server applies it), then reset instead of
  answering — the "response lost" case that makes naive retries upload twice (with a
  `hook`, it is called before the reset, e.g. to kill the client: it never hears back);
- ``delay``: forward, then hold the response `seconds` (past the client's read timeout);
- ``truncate``: forward, then send the headers and half the body, and close;
- ``hook``: forward and answer normally, then call `hook()` (e.g. kill the server).

Faults match by method, a substring of the request target (path and query) and optionally
a request header's presence, and fire `times` times in a row. `log` records every request
with the fault applied (or "").
``Expect: 100-continue`` is answered by the proxy itself so every body arrives whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One kind of misbehaviour for the next `times` requests that match."""

    kind: str
    method: str = ""
    target: str = ""
    times: int = 1
    status: int = 503
    seconds: float = 0.0
    hook: Callable[[], None] | None = None
    code: str = ""
    """``status`` faults: the S3 error code to answer with (default by status)."""
    message: str = ""
    header: str = ""
    """Only requests carrying this header (lower-case name) match, e.g. ``if-none-match``."""

    def matches(self, method: str, target: str, headers: dict[str, str]) -> bool:
        return (
            (not self.method or self.method == method)
            and self.target in target
            and (not self.header or self.header in headers)
        )


@dataclass
class _Message:
    head: bytes
    body: bytes
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """Run with ``async with FaultProxy(upstream_host, upstream_port) as proxy``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, str]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def requests(self, method: str = "", target: str = "") -> list[tuple[str, str, str]]:
        """Logged requests matching `method` and containing `target`."""
        return [e for e in self.log if (not method or e[0] == method) and target in e[1]]

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    def _take(self, method: str, target: str, headers: dict[str, str]) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.matches(method, target, headers):
                fault.times -= 1
                return fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream = _Upstream(self.upstream)
        try:
            while (request := await _read_request(reader, writer)) is not None:
                if not await self._exchange(request, writer, upstream):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._writers.discard(writer)
            upstream.close()
            with contextlib.suppress(Exception):
                writer.close()

    async def _exchange(
        self, request: _Message, writer: asyncio.StreamWriter, upstream: _Upstream
    ) -> bool:
        """Answer one request, applying the first matching fault; False ends the connection."""
        method, target = request.head.split(b" ", 2)[:2]
        m, t = method.decode(), target.decode()
        fault = self._take(m, t, request.headers)
        self.log.append((m, t, fault.kind if fault else ""))
        if fault is not None and fault.kind == "status":
            writer.write(_error_response(fault.status, fault.code, fault.message))
            await writer.drain()
            return True
        if fault is not None and fault.kind == "reset":
            _reset(writer)
            return False
        response = await upstream.send(request, head_only=m == "HEAD")
        if response is None:
            _reset(writer)  # server down or gone mid-response: the client sees a reset
            return False
        return await _deliver(writer, response, fault)


class _Upstream:
    """One keep-alive connection to the real server, opened on first use."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: _Message, *, head_only: bool) -> _Message | None:
        """The server's response, or None when it cannot be reached or hangs up."""
        if self.connection is None:
            try:
                self.connection = await asyncio.open_connection(*self.address)
            except OSError:
                return None
        reader, writer = self.connection
        writer.write(request.head + request.body)
        await writer.drain()
        response = await _read_response(reader, head_only=head_only)
        if response is not None and response.headers.get("connection", "").lower() == "close":
            writer.close()
            self.connection = None
        return response

    def close(self) -> None:
        if self.connection is not None:
            self.connection[1].close()


async def _deliver(writer: asyncio.StreamWriter, response: _Message, fault: Fault | None) -> bool:
    """Pass the response on, damaged as `fault` says; False ends the connection."""
    kind = fault.kind if fault is not None else ""
    if kind == "reset_after":
        if fault is not None and fault.hook is not None:
            fault.hook()
        _reset(writer)
        return False
    if fault is not None and kind == "delay":
        await asyncio.sleep(fault.seconds)
    if kind == "truncate":
        writer.write(response.head + response.body[: len(response.body) // 2])
        await writer.drain()
        writer.close()
        return False
    writer.write(response.head + response.body)
    await writer.drain()
    if fault is not None and kind == "hook" and fault.hook is not None:
        fault.hook()
    return True


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.decode().strip().lower()] = value.decode().strip()
    return head, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";")[0], 16)
            raw += await reader.readexactly(size + 2)
            if size == 0:
                return raw
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> _Message | None:
    parsed = await _read_head(reader)
    if parsed is None:
        return None
    head, headers = parsed
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")]
        head = b"\r\n".join(lines)
    return _Message(head, await _read_body(reader, headers), headers=headers)


async def _read_response(reader: asyncio.StreamReader, *, head_only: bool) -> _Message | None:
    while True:
        try:
            parsed = await _read_head(reader)
        except (ConnectionError, OSError):
            return None
        if parsed is None:
            return None
        head, headers = parsed
        status = int(head.split(b" ", 2)[1])
        if status == 100:
            continue
        no_body = head_only or status in (204, 304)
        body = b"" if no_body else await _read_body(reader, headers)
        return _Message(head, body, status, headers)


def _error_response(status: int, code_override: str = "", message_override: str = "") -> bytes:
    code, message, reason = {
        503: ("SlowDown", "Please reduce your request rate.", "Slow Down"),
        501: ("NotImplemented", "A header you provided implies functionality that is not "
              "implemented", "Not Implemented"),
    }.get(status, ("InternalError", "We encountered an internal error. Please try again.",
                   "Internal Server Error"))  # fmt: skip
    code, message = code_override or code, message_override or message
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>faultproxy</RequestId></Error>"
    ).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) so the client sees ECONNRESET, not a clean EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
