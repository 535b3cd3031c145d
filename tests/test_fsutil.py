"""Durable private writes: all-or-nothing, mode 0600 files in 0700 directories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from archiverd.fsutil import ensure_private_dir, write_private
from tests.disk import file_size_limit


def test_write_private_is_0600_and_replaces_atomically(tmp_path: Path) -> None:
    """The file ends with the new content, mode 0600, and no temp file beside it."""
    target = tmp_path / "state.json"
    target.write_text("old")
    write_private(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_ensure_private_dir_tightens_an_open_dir(tmp_path: Path) -> None:
    """An existing 0755 directory is tightened to 0700."""
    path = tmp_path / "spool"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    ensure_private_dir(path)
    assert path.stat().st_mode & 0o777 == 0o700


def test_write_private_never_publishes_a_short_write(tmp_path: Path) -> None:
    """Where only part of the data fits (a disk nearly full; here a file size limit, which
    cuts a write short, then EFBIG), write_private raises and leaves neither the file nor
    its temp file. (It published the first 8 of 100 bytes and returned.)"""
    target = tmp_path / "record.json"
    script = (
        "import sys\nfrom pathlib import Path\nfrom archiverd.fsutil import write_private\n"
        "write_private(Path(sys.argv[1]), b'x' * 100)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        capture_output=True,
        timeout=60,
        check=False,
        preexec_fn=file_size_limit(8),
    )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == "OSError: [Errno 27] File too large"
    assert list(tmp_path.iterdir()) == []
