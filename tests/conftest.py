"""Fixtures shared by every test package: real S3 servers on loopback, isolated state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

from tests import servers
from tests.dockerd import (  # noqa: F401 - fixtures: a private real dockerd, per-test cleanup
    _containers_removed,
    dockerd,
)

# Tests never reach a real AWS account, whatever the developer's shell has configured.
for _name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(autouse=True, scope="session")
def _retries_without_waiting() -> Iterator[None]:
    """stamina's test mode: every retry policy keeps its attempt count but never waits."""
    with stamina.set_testing(True, attempts=1_000, cap=True):
        yield


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.S3Server]:
    """A real SeaweedFS S3 server (signatures, checksums, versioning) for the whole session."""
    server = servers.start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    servers.stop(server)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[servers.S3Server]:
    """moto's threaded server (S3 with SSE-KMS, KMS, STS) for the whole session."""
    server = servers.start_moto()
    yield server
    servers.stop(server)


@pytest.fixture(scope="session")
def moto_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.S3Server]:
    """A moto server process enforcing IAM policies (S3, KMS, IAM); admin keys."""
    server = servers.start_moto_iam(tmp_path_factory.mktemp("moto-iam"))
    yield server
    servers.stop(server)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty state directory with the permissions the daemon creates (0700)."""
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Undo `configure_logging` after each test: a test that ran `cli.main` under pytest's
    capture must not leave structlog printing to that (then closed) stream."""
    yield
    import structlog

    structlog.reset_defaults()
