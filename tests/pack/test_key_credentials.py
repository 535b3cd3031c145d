"""A systemd credentials directory the process cannot search is a key error (77), not a crash.

Seen under a real systemd: `/run/credentials/archiverd.service/` unreadable by the service's
user made `archiverd run` die with a PermissionError traceback (exit 1), which
`RestartPreventExitStatus=77` does not stop systemd from restart-looping on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EX_NOPERM = 77


def _without_dac_override() -> list[str]:
    """A command prefix that makes root obey file modes, as the service's user does.

    Root bypasses modes through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; dropped from the
    bounding set before exec, they are gone from the child (setpriv is in util-linux).
    """
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unsearchable_credentials_directory_is_exit_77(tmp_path: Path) -> None:
    """pack with $CREDENTIALS_DIRECTORY unsearchable exits 77 with a message, no traceback."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "archive.key").write_text("not read\n")
    creds.chmod(0o000)
    source = tmp_path / "in.log"
    source.write_bytes(b"a line\n")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(creds)}
    try:
        done = subprocess.run(
            [*_without_dac_override(), sys.executable, "-m", "archiverd", "pack",
             "--key-file", "/etc/archiverd/archive.key", str(source), "-"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        creds.chmod(0o700)
    assert done.returncode == EX_NOPERM, done.stderr
    assert "Traceback" not in done.stderr
    assert str(creds / "archive.key") in done.stderr
    assert "Permission denied" in done.stderr
    assert done.stdout == ""
