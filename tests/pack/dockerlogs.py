"""Realistic Docker json-file log lines for pack tests (hypothesis strategies and bulk)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

_BASE = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
_WORDS = (
    "GET",
    "POST",
    "/api/v1/orders",
    "/healthz",
    "200",
    "404",
    "500",
    "user_id=",
    "latency_ms=",
    "INFO",
    "WARN",
    "ERROR",
    "connection",
    "reset",
    "by",
    "peer",
    "retrying",
    "upstream",
    "timeout",
    "cache",
    "hit",
    "miss",
    "request_id=",
    "order",
    "created",
    "payment",
    "accepted",
    "db",
    "pool",
    "exhausted",
)


def docker_line(message: str, stream: str, when: datetime) -> bytes:
    """One json-file record exactly as dockerd writes it."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}123Z"
    record = {"log": message + "\n", "stream": stream, "time": stamp}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


@st.composite
def docker_logs(draw: st.DrawFn) -> bytes:
    """A json-file log: text (unicode, escapes), both streams, increasing timestamps."""
    messages = draw(
        st.lists(
            st.tuples(
                st.text(max_size=300) | st.sampled_from(_WORDS),
                st.sampled_from(["stdout", "stderr"]),
                st.integers(min_value=0, max_value=5_000_000),
            ),
            max_size=60,
        )
    )
    when, out = _BASE, []
    for message, stream, step_us in messages:
        when += timedelta(microseconds=step_us)
        out.append(docker_line(message, stream, when))
    return b"".join(out)


def bulk_log(size: int, seed: int = 1) -> bytes:
    """About `size` bytes of plausible service logs (compressible like the real thing)."""
    rng = random.Random(seed)
    when, out, total = _BASE, [], 0
    while total < size:
        when += timedelta(microseconds=rng.randrange(50, 50_000))
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 18)))
        message = f"{when:%H:%M:%S} {words} {rng.randrange(10**6)}"
        line = docker_line(message, rng.choice(("stdout", "stdout", "stderr")), when)
        out.append(line)
        total += len(line)
    return b"".join(out)[:size]
