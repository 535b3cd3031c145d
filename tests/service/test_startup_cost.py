"""What `run --once` loads: a file:// pass must not pay for the S3 and HTTP stacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import S3Server
from tests.service.test_daemon_process import REPO, archiverd_env

_PROBE = """
import json, sys
from archiverd.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"aiohttp", "botocore", "aiobotocore"})
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _once_to_a_file_destination(tmp_path: Path, probe: str) -> subprocess.CompletedProcess[str]:
    """`run --once --seal-open` of one 100-line log to file://, through the Python `probe`
    (which gets archiverd's arguments); fails unless it exits 0 having stored one object."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(100)))
    bucket = tmp_path / "bucket"
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    env = archiverd_env(tmp_path, ARCHIVERD_DESTINATION__URL=f"file://{bucket}")
    args = ["--log-format", "json", "run", "--config", str(config), "--once", "--seal-open"]
    ran = subprocess.run(
        [sys.executable, "-c", probe, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert len([p for p in bucket.rglob("*.log.gz.enc.versions/*") if p.is_file()]) == 1
    return ran


def test_once_to_a_file_destination_loads_neither_s3_nor_http_libraries(tmp_path: Path) -> None:
    """`run --once` to file:// archives without importing aiohttp, botocore or aiobotocore
    (they were 40% of its start-up CPU)."""
    probe = _once_to_a_file_destination(tmp_path, _PROBE)
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result == {"code": 0, "heavy": []}


_DAEMON_PROBE = """
import atexit, gc, json, sys
from archiverd.service.daemon import Daemon
seen = {}
original = Daemon.run_once
async def run_once(self, **kwargs):
    seen.update(collecting=gc.isenabled(), frozen=gc.get_freeze_count() > 0)
    return await original(self, **kwargs)
Daemon.run_once = run_once
class Teardown:
    def __del__(self):
        print("interpreter teardown", file=sys.stderr)
marker = Teardown()
atexit.register(lambda: print(json.dumps(seen), file=sys.stderr))
sys.argv = ["archiverd", *sys.argv[1:]]
from archiverd.cli import run
run()
"""


def test_the_daemon_collects_cycles_once_loaded_and_exits_without_teardown(
    tmp_path: Path,
) -> None:
    """`archiverd run` loads without the cycle collector, collects again (its start-up
    frozen) before it reads a byte, and once it has closed everything exits with its code,
    output flushed, without the interpreter's teardown (0.04-0.15 s of CPU freeing objects
    one by one, bench/daemon.py)."""
    probe = _once_to_a_file_destination(tmp_path, _DAEMON_PROBE)
    *logged, seen = probe.stderr.splitlines()
    assert json.loads(seen) == {"collecting": True, "frozen": True}
    assert json.loads(logged[-1])["event"] == "run --once complete"
    assert "interpreter teardown" not in probe.stderr


_SCRIPT_PROBE = """
import sys
from archiverd.launch import run  # what the `archiverd` console script imports
print(sorted(m for m in sys.modules if m.startswith(("archiverd", "pydantic", "structlog"))))
"""


def test_the_console_script_imports_nothing_until_it_runs() -> None:
    """multiprocessing re-runs the main script in every worker it starts: importing what the
    `archiverd` script imports loads no command line, settings or logging (0.2 s each)."""
    probe = subprocess.run(
        [sys.executable, "-c", _SCRIPT_PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "['archiverd', 'archiverd.launch']"


_RESTORE_PROBE = """
import atexit, gc, json, sys
watched = json.loads(sys.argv[1])
def report():
    loaded = sorted(m for m in watched if m in sys.modules)
    state = {"loaded": loaded, "frozen": gc.get_freeze_count() > 0, "collecting": gc.isenabled()}
    print(json.dumps(state), file=sys.stderr)
atexit.register(report)  # run by the executable's quick exit too
sys.argv = ["archiverd", *sys.argv[2:]]
from archiverd.cli import run
run()
"""

_NEEDED = "archiverd.restore.listing"
"""Loaded by every restore command: proof that the probe sees what a command imports."""
_MERGE_ONLY = [
    "archiverd.restore.records",
    "archiverd.restore.workers",
    "multiprocessing",
]
"""Only `get --out -` merging containers needs the record parser and worker processes."""
_FETCH = "archiverd.restore.fetch"
"""`ls` downloads nothing."""
_VERIFY = "archiverd.restore.verify"
"""Only `verify` runs verify's pipeline."""
_RSA_ONLY = "cryptography.hazmat.primitives.serialization"
"""Read PEM keys: loaded by no command of an archive with a raw AES key (10-15 ms)."""


@pytest.fixture(scope="module")
def small_s3_archive(
    seaweedfs: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], int]:
    """Environment of an archiverd reading a bucket that `run --once` filled (two files,
    one segment each); and how many lines were archived."""
    tmp_path = tmp_path_factory.mktemp("small-s3-archive")
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("a", "b"):
        (logs / f"{name}.log").write_text("".join(f"{name} line {i}\n" for i in range(500)))
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    bucket = seaweedfs.make_bucket()
    env = archiverd_env(
        tmp_path,
        **seaweedfs.env(),
        ARCHIVERD_DESTINATION__URL=f"s3://{bucket}/archive/",
        ARCHIVERD_DESTINATION__ENDPOINT_URL=seaweedfs.endpoint_url,
        ARCHIVERD_DESTINATION__ADDRESSING_STYLE="path",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    archive = ["run", "--config", str(config), "--once", "--seal-open"]
    once = subprocess.run(
        [sys.executable, "-m", "archiverd", *archive],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    return env, 1000


def _restore_probe(env: dict[str, str], *args: str) -> tuple[int, bytes, dict[str, Any]]:
    """Run `archiverd <args>` as the executable does; its exit code, stdout, and which of
    the watched modules it loaded (and whether collection was on and start-up frozen)."""
    watched = [_NEEDED, *_MERGE_ONLY, _FETCH, _VERIFY, _RSA_ONLY]
    probe = subprocess.run(
        [sys.executable, "-c", _RESTORE_PROBE, json.dumps(watched), "--log-format", "json", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    err = probe.stderr.decode(errors="replace")
    return probe.returncode, probe.stdout, json.loads(err.splitlines()[-1])


@pytest.mark.s3
@pytest.mark.slow
def test_ls_get_and_verify_load_only_what_they_use(
    small_s3_archive: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    """`ls`, `get --out DIR` and `verify` against S3 load neither the merge (record parser,
    worker processes) nor (`ls`) the download pipeline nor (`ls`, `get`) verify's, nor (with
    a raw AES key) the PEM key readers; each
    collects cycles again once loaded, its start-up frozen (`archiverd.startup`)."""
    env, lines = small_s3_archive

    code, out, state = _restore_probe(env, "ls", "--json")
    assert code == 0
    assert len(out.splitlines()) == 2
    assert state["loaded"] == [_NEEDED]
    assert state["collecting"] is True
    assert state["frozen"] is True

    restored = tmp_path / "restored"
    code, _, state = _restore_probe(env, "get", "--out", str(restored))
    assert code == 0
    assert sum(p.read_text().count("\n") for p in restored.iterdir()) == lines
    assert state["loaded"] == sorted([_NEEDED, _FETCH])
    assert state["collecting"] is True
    assert state["frozen"] is True

    code, out, state = _restore_probe(env, "verify", "--json")
    assert code == 0, out
    assert json.loads(out)["objects"] == 2
    assert state["loaded"] == sorted([_NEEDED, _FETCH, _VERIFY])
    assert state["collecting"] is True
    assert state["frozen"] is True
