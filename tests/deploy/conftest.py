"""Session fixtures for the live deployment tests: the real image, built once per session."""

from __future__ import annotations

import threading
import time

import pytest

from archiverd import __version__
from tests.deploy import images
from tests.dockerd import DockerDaemon

IMAGE_TAG = f"archiverd:{__version__}"
# Filled by the fixtures, printed at the end of the run so CI logs carry the numbers.
REPORT: dict[str, str] = {}


@pytest.fixture(scope="session")
def archiverd_image(dockerd: DockerDaemon) -> str:
    """The repository's Dockerfile built (unchanged) on a local Debian base; its tag."""
    started = time.monotonic()
    # The systemd tests' root file system is made meanwhile (a cold cache: minutes each).
    threading.Thread(target=_warm, args=(images.SYSTEMD,), daemon=True).start()
    try:
        images.build_archiverd_image(dockerd, IMAGE_TAG)
    except images.ImageUnavailable as exc:
        pytest.fail(f"cannot build the image here: {exc}")
    size = images.image_size(dockerd, IMAGE_TAG)
    layers = images.layer_sizes(dockerd, IMAGE_TAG)
    venv = sum(
        size for size, made_by in layers if "COPY" in made_by and "/opt/archiverd" in made_by
    )
    REPORT["image"] = (
        f"{IMAGE_TAG}: {size / 1e6:.1f} MB in all, of which the archiverd venv layer "
        f"{venv / 1e6:.1f} MB (base and images built in {time.monotonic() - started:.0f} s)"
    )
    return IMAGE_TAG


def _warm(spec: images.Rootfs) -> None:
    """Make a root file system into the cache; a failure is reported when a test needs it."""
    try:
        images.rootfs_tarball(spec)
    except Exception as exc:  # the test that needs it raises it again
        REPORT[f"rootfs {spec.name}"] = f"not made in the background: {exc}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the image size and build time measured by the session fixtures."""
    for name, line in REPORT.items():
        terminalreporter.write_line(f"deploy {name}: {line}")
