"""`archiverd pack` then `unpack` on a 2 GB log: byte-identical, with flat memory."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pack.dockerlogs import bulk_log

SIZE = 2 * 1000**3
RSS_LIMIT_KIB = 64 * 1024


# ru_maxrss survives exec, so a child forked straight from pytest would report pytest's own
# size. A tiny launcher (its own small address space) forks the CLI and reports wait4's rusage.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_measured(*args: str) -> int:
    """Run the CLI as a grandchild; return its peak RSS in KiB, asserting exit 0."""
    command = [sys.executable, "-m", "archiverd", "--log-format", "json", *args]
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    code, rss_kib = (int(field) for field in done.stdout.split())
    assert code == 0, done.stderr
    return rss_kib


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_two_gigabytes_roundtrip_in_flat_memory(tmp_path: Path) -> None:
    """A 2 GB json-file log packs and unpacks byte-identical; each child stays under 64 MiB."""
    block = bulk_log(16 * 1024 * 1024, seed=21)
    source = tmp_path / "big.log"
    expected = hashlib.sha256()
    with source.open("wb") as out:
        written = 0
        while written < SIZE:
            piece = block[: SIZE - written]
            out.write(piece)
            expected.update(piece)
            written += len(piece)
    key = tmp_path / "archive.key"
    subprocess.run([sys.executable, "-m", "archiverd", "keygen", "--out", str(key)], check=True)

    pack_rss = run_measured("pack", "--key-file", str(key), str(source), str(tmp_path / "p"))
    source.unlink()  # keep the disk footprint at one plaintext copy
    unpack_rss = run_measured("unpack", "--key-file", str(key), str(tmp_path / "p"), str(source))

    assert source.stat().st_size == SIZE
    assert sha256_file(source) == expected.hexdigest()
    assert pack_rss < RSS_LIMIT_KIB, f"pack peak RSS {pack_rss} KiB"
    assert unpack_rss < RSS_LIMIT_KIB, f"unpack peak RSS {unpack_rss} KiB"
