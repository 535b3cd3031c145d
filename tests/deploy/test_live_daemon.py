"""The deployment files against a real `archiverd run`: health check, probes, scraped metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.test_dockerfile import _healthcheck_command
from tests.deploy.test_monitoring import _dashboard_exprs, _rules, metric_names
from tests.servers import free_port

pytestmark = pytest.mark.slow  # real servers or processes: seconds each


@dataclass
class LiveDaemon:
    """A running `archiverd run` subprocess with its HTTP port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, str]:
        """GET a path on the daemon's HTTP endpoint; return (status, body)."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    """`archiverd run` on the embedded defaults (demo source, file:// bucket), HTTP on loopback."""
    base = tmp_path_factory.mktemp("live")
    archiverd = Path(sys.executable).parent / "archiverd"
    key = base / "archive.key"
    subprocess.run([archiverd, "keygen", "--out", key], check=True, capture_output=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVERD_")}
    env.update(
        ARCHIVERD_STATE__DIR=str(base / "state"),
        ARCHIVERD_ENCRYPTION__KEY_FILE=str(key),
        ARCHIVERD_HTTP__LISTEN=f"127.0.0.1:{port}",
    )
    env.pop("NOTIFY_SOCKET", None)
    log = base / "archiverd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [archiverd, "run"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=base
        )
    daemon = LiveDaemon(process, port, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if daemon.get("/healthz")[0] == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"archiverd run did not become healthy:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    yield daemon
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_docker_healthcheck_passes_against_the_real_daemon(live_daemon: LiveDaemon) -> None:
    """The image's HEALTHCHECK command succeeds against a running daemon's /healthz."""
    done = subprocess.run(
        _healthcheck_command(live_daemon.port), capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_probe_paths_answer_on_the_real_daemon(live_daemon: LiveDaemon) -> None:
    """The manifests' probe paths exist: /healthz and /readyz answer 200 on a healthy daemon."""
    assert live_daemon.get("/healthz")[0] == 200
    status, body = live_daemon.get("/readyz")
    assert status == 200, body


def test_scraped_metrics_cover_alerts_and_dashboard(live_daemon: LiveDaemon) -> None:
    """Every unlabelled series the alerts and dashboard read is in a live /metrics scrape."""
    status, text = live_daemon.get("/metrics")
    assert status == 200
    scraped = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    used: set[str] = set()
    for rule in _rules():
        used |= metric_names(rule["expr"])
    for _, expr in _dashboard_exprs():
        used |= metric_names(expr)
    # Counters with a label (reason, source) appear once a first event is counted.
    labelled = {
        "archiverd_upload_failures_total",
        "archiverd_bad_input_total",
        "archiverd_segments_sealed_total",
        "archiverd_source_bytes_read_total",
        "archiverd_source_gaps_total",
        "archiverd_source_bytes_freed_total",
        "archiverd_source_files_deleted_total",
    }
    missing = used - labelled - {"up"} - scraped
    assert not missing, f"not in a live scrape: {sorted(missing)}"
    assert "archiverd_build_info" in scraped


def test_sigterm_exits_cleanly(live_daemon: LiveDaemon) -> None:
    """SIGTERM (systemd stop, kubelet termination) ends the daemon with exit status 0."""
    live_daemon.process.send_signal(signal.SIGTERM)
    assert live_daemon.process.wait(timeout=60) == 0
    assert "shutdown complete" in live_daemon.log.read_text()
