"""What `run --once` loads: a file:// pass must not pay for the S3 and HTTP stacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.service.test_daemon_process import REPO, archiverd_env

_PROBE = """
import json, sys
from archiverd.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"aiohttp", "botocore", "aiobotocore"})
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_once_to_a_file_destination_loads_neither_s3_nor_http_libraries(tmp_path: Path) -> None:
    """`run --once` to file:// archives without importing aiohttp, botocore or aiobotocore
    (they were 40% of its start-up CPU)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(100)))
    bucket = tmp_path / "bucket"
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    env = archiverd_env(tmp_path, ARCHIVERD_DESTINATION__URL=f"file://{bucket}")
    args = ["--log-format", "json", "run", "--config", str(config), "--once", "--seal-open"]
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout.splitlines()[-1])
    assert result == {"code": 0, "heavy": []}
    assert len([p for p in bucket.rglob("*.log.gz.enc.versions/*") if p.is_file()]) == 1


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
