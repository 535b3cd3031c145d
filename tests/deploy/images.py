"""Container images for the deployment tests, made offline from Debian packages and PyPI wheels.

Nothing here pulls from a container registry. Three things are built once and cached under
`ARCHIVERD_TEST_CACHE` (default `~/.cache/archiverd-test`, outside the checkout, so CI runs on
the same machine reuse them), each keyed by a hash of what goes into it:

- root file systems made with `mmdebstrap` from the host's Debian suite and apt sources (a few
  minutes each the first time; `apt-get install mmdebstrap` when it is missing and we are root);
- a wheelhouse of archiverd's dependencies and its build backend (`pip wheel`, from whatever
  index the host's pip uses), served on loopback during `docker build` so the Dockerfile's
  `pip wheel`/`pip install` never reach the internet (`PIP_NO_INDEX`, `PIP_FIND_LINKS`).

`docker import` turns a root file system into the image the Dockerfile's `FROM` names; the real
Dockerfile is then built unchanged with the legacy builder (`DOCKER_BUILDKIT=0`: BuildKit would
fetch the `# syntax=` frontend from Docker Hub).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.tools import ROOT
from tests.dockerd import DockerDaemon

DOCKERFILE = ROOT / "Dockerfile"
CACHE = Path(
    os.environ.get("ARCHIVERD_TEST_CACHE") or Path.home() / ".cache" / "archiverd-test"
).expanduser()
BUILD_TIMEOUT = 1200.0
# Smaller root file systems: no docs, man pages or translations; no recommends.
MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    '--aptopt=APT::Install-Recommends "false"',
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
)


class ImageUnavailable(RuntimeError):
    """A tool needed to make a test image (mmdebstrap, pip's index) is missing: says which."""


@dataclass(frozen=True)
class Rootfs:
    """A Debian root file system: a name for its cache file and the packages it holds."""

    name: str
    packages: tuple[str, ...]


# Stands in for python:3.11.x-slim-<suite>: python3 with venv and pip, `python` on PATH.
PYTHON_SLIM = Rootfs(
    "python-slim", ("python3", "python3-venv", "python3-pip", "python-is-python3", "passwd")
)
# Stands in for python:3.11.x-<suite>, the build stage: the same Python with a C compiler and
# its headers, which build archiverd's C module.
PYTHON_BUILD = Rootfs("python-build", (*PYTHON_SLIM.packages, "gcc", "libc6-dev", "python3-dev"))
# A machine to boot systemd in, able to run the image's venv (/opt/archiverd/bin/python links
# to /usr/bin/python); procps has /bin/kill, which the unit's ExecReload= runs.
SYSTEMD = Rootfs(
    "systemd", ("systemd", "systemd-sysv", "dbus", "procps", "python3", "python-is-python3")
)


def from_images(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The base images the Dockerfile's FROM lines name (stages excluded)."""
    stages: set[str] = set()
    images: list[str] = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line.strip(), flags=re.IGNORECASE)
        if match:
            if match.group(1) not in stages and match.group(1) not in images:
                images.append(match.group(1))
            if match.group(2):
                stages.add(match.group(2))
    return images


def host_suite() -> str:
    """The Debian suite of this host (its apt sources serve that suite)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise ImageUnavailable("no VERSION_CODENAME in /etc/os-release: not a Debian host")


def _sources() -> list[str]:
    """The host's Debian apt sources files (mmdebstrap takes .list and .sources files)."""
    found = [
        str(path)
        for path in [
            Path("/etc/apt/sources.list"),
            *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
            *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
        ]
        if path.is_file() and "debian" in path.read_text()
    ]
    if not found:
        raise ImageUnavailable("no Debian apt sources in /etc/apt: cannot run mmdebstrap")
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (concurrent sessions build each cache entry once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _ensure_mmdebstrap() -> str:
    found = shutil.which("mmdebstrap")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"],
            env=env,
            capture_output=True,
            check=False,
        )
        found = shutil.which("mmdebstrap")
    if found is None:
        raise ImageUnavailable("mmdebstrap is not installed (apt-get install mmdebstrap)")
    return found


def rootfs_tarball(spec: Rootfs) -> Path:
    """The cached tarball of `spec` on this host's suite, made with mmdebstrap if missing."""
    suite = host_suite()
    key = hashlib.sha256(
        json.dumps([suite, spec.packages, MMDEBSTRAP_OPTIONS]).encode()
    ).hexdigest()[:16]
    tarball = CACHE / f"rootfs-{spec.name}-{suite}-{key}.tar"
    with _locked(CACHE / f"{tarball.name}.lock"):
        if tarball.exists():
            return tarball
        partial = tarball.with_suffix(".partial.tar")
        cmd = [
            _ensure_mmdebstrap(),
            *MMDEBSTRAP_OPTIONS,
            f"--include={','.join(spec.packages)}",
            suite,
            str(partial),
            *_sources(),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-3000:]}")
        partial.rename(tarball)
    return tarball


def dependencies() -> list[str]:
    """archiverd's runtime requirements plus its build backend, as pip arguments."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"], "wheel"]


def wheelhouse() -> Path:
    """A cached directory of wheels for every dependency (and the build backend) of archiverd."""
    requirements = dependencies()
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    key = hashlib.sha256(json.dumps([tag, requirements]).encode()).hexdigest()[:16]
    target = CACHE / f"wheelhouse-{tag}-{key}"
    with _locked(CACHE / f"{target.name}.lock"):
        if target.is_dir():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial),
             *requirements],
            capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise ImageUnavailable(f"pip wheel failed (is an index reachable?):\n{done.stderr}")
        partial.rename(target)
    return target


@contextlib.contextmanager
def serve_directory(path: Path) -> Iterator[str]:
    """Serve `path` over HTTP on loopback (a pip --find-links page); yield its URL."""
    handler = functools.partial(_QuietHandler, directory=str(path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def import_rootfs(daemon: DockerDaemon, tarball: Path, tag: str, *changes: str) -> None:
    """`docker import` a root file system tarball as `tag` (with Dockerfile `changes`)."""
    args: list[str] = []
    for change in changes:
        args += ["--change", change]
    daemon.docker("import", *args, str(tarball), tag)


def build_env(daemon: DockerDaemon) -> dict[str, str]:
    """The docker CLI environment for the legacy builder (no registry access needed)."""
    return {**daemon.env(), "DOCKER_BUILDKIT": "0"}


def docker_build(daemon: DockerDaemon, context: Path, tag: str, *args: str) -> str:
    """`docker build` with the legacy builder and host networking; return its output."""
    done = subprocess.run(
        ["docker", "build", "--network", "host", "--tag", tag, *args, str(context)],
        env=build_env(daemon),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"docker build of {tag} failed:\n{done.stdout[-4000:]}{done.stderr}")
    return done.stdout


def build_archiverd_image(daemon: DockerDaemon, tag: str) -> str:
    """Build the repository's Dockerfile as `tag`, pip fed from the cached wheelhouse."""
    build, runtime = from_images()
    import_rootfs(daemon, rootfs_tarball(PYTHON_BUILD), build, 'CMD ["python3"]')
    import_rootfs(daemon, rootfs_tarball(PYTHON_SLIM), runtime, 'CMD ["python3"]')
    with serve_directory(wheelhouse()) as url:
        return docker_build(
            daemon, ROOT, tag,
            "--build-arg", "PIP_NO_INDEX=1",
            "--build-arg", f"PIP_FIND_LINKS={url}",
        )  # fmt: skip


def image_size(daemon: DockerDaemon, tag: str) -> int:
    """The image's size in bytes as dockerd reports it."""
    return int(daemon.docker("image", "inspect", "--format", "{{.Size}}", tag).strip())


def layer_sizes(daemon: DockerDaemon, tag: str) -> list[tuple[int, str]]:
    """(bytes, instruction) for each layer of `tag`, newest first."""
    out = daemon.docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", tag)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [(int(row["Size"]), str(row["CreatedBy"])) for row in rows]
