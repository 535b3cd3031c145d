"""`archiverd keygen|pack|unpack` as real subprocesses: exit codes, files left, stdio."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from archiverd.pack.container import MAGIC
from tests.disk import file_size_limit
from tests.pack.dockerlogs import bulk_log
from tests.pack.helpers import leftovers

pytestmark = pytest.mark.slow  # real servers or processes: seconds each

EX_DATAERR, EX_NOPERM = 65, 77


def archiverd(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "archiverd", "--log-format", "json", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A key made by `archiverd keygen`."""
    path = tmp_path / "keys" / "archive.key"
    path.parent.mkdir()
    done = archiverd("keygen", "--out", str(path))
    assert done.returncode == 0, done.stderr
    return path


def test_keygen_writes_private_key_and_refuses_overwrite(key: Path) -> None:
    """keygen writes a 0600 base64 key, prints only its id, and never overwrites a key."""
    content = key.read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(content.strip()) == 44
    again = archiverd("keygen", "--out", str(key))
    assert again.returncode == EX_NOPERM
    assert b"refusing to overwrite" in again.stderr
    assert key.read_bytes() == content
    assert content.strip() not in again.stderr + again.stdout
    assert leftovers(key.parent) == ["archive.key"]


@pytest.mark.parametrize("room", ["no directory", "no room"])
def test_keygen_where_no_key_can_be_written_says_so(tmp_path: Path, room: str) -> None:
    """keygen into a directory that does not exist, or onto a disk without room (a file size
    limit here, EFBIG; ENOSPC the same): exit 73 and one line naming the file and why; no
    key and no temp file left. (A traceback and exit 1 before; with no room, exit 0 and a
    key cut to its first 8 bytes.)"""
    target = tmp_path / "missing" / "archive.key" if room == "no directory" else tmp_path / "k"
    done = subprocess.run(
        [sys.executable, "-m", "archiverd", "keygen", "--out", str(target)],
        capture_output=True,
        timeout=60,
        check=False,
        preexec_fn=file_size_limit(8) if room == "no room" else None,
    )
    why = "No such file or directory" if room == "no directory" else "File too large"
    assert (done.returncode, done.stdout, done.stderr.decode()) == (
        73,
        b"",
        f"archiverd keygen: cannot write a key to {str(target)!r}: {why}: nothing was "
        "written; choose another --out\n",
    )
    assert leftovers(tmp_path) == []


def test_pack_unpack_files(tmp_path: Path, key: Path) -> None:
    """pack writes header+body; unpack restores the exact bytes; the key is never echoed."""
    data = bulk_log(3_000_000)
    (tmp_path / "in.log").write_bytes(data)
    packed = archiverd(
        "pack", "--key-file", str(key), str(tmp_path / "in.log"), str(tmp_path / "p")
    )
    assert packed.returncode == 0, packed.stderr
    assert (tmp_path / "p").read_bytes().startswith(MAGIC)
    assert (tmp_path / "p").stat().st_size < len(data) // 3
    done = archiverd("unpack", "--key-file", str(key), str(tmp_path / "p"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == data
    secret = key.read_bytes().strip()
    assert secret not in packed.stderr + done.stderr
    assert leftovers(tmp_path) == ["in.log", "keys", "out", "p"]


def test_pack_unpack_stdio(key: Path) -> None:
    """`-` packs from stdin to stdout and unpacks back."""
    data = bulk_log(500_000, seed=5)
    packed = archiverd("pack", "--key-file", str(key), "-", "-", stdin=data)
    assert packed.returncode == 0, packed.stderr
    assert packed.stdout.startswith(MAGIC)
    done = archiverd("unpack", "--key-file", str(key), "-", "-", stdin=packed.stdout)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


def test_unpack_to_stdout_keeps_the_gzip_stream_meanwhile_not_the_plaintext(
    tmp_path: Path, key: Path
) -> None:
    """`unpack - -` holds the object in a temp file until its tag verifies: its verified
    gzip stream, not its plaintext. No file may grow past the packed size here, far below
    the plaintext's, and every byte comes out. (It failed with "File too large" before.)"""
    data = bulk_log(2_000_000, seed=9)
    packed = archiverd("pack", "--key-file", str(key), "-", "-", stdin=data)
    assert packed.returncode == 0, packed.stderr
    assert len(packed.stdout) < len(data) // 2
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "archiverd", "unpack", "--key-file", str(key), "-", "-"],
        input=packed.stdout,
        capture_output=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp)},
        preexec_fn=file_size_limit(len(packed.stdout)),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    assert list(tmp.iterdir()) == []


def test_unpack_failures_exit_nonzero_and_leave_nothing(tmp_path: Path, key: Path) -> None:
    """Flipped, truncated or wrong-key input: exit 65, a clear message, no output file."""
    (tmp_path / "in.log").write_bytes(bulk_log(200_000))
    archiverd("pack", "--key-file", str(key), str(tmp_path / "in.log"), str(tmp_path / "p"))
    packed = (tmp_path / "p").read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    flipped = bytearray(packed)
    flipped[-100] ^= 1
    other = tmp_path / "other.key"
    assert archiverd("keygen", "--out", str(other)).returncode == 0
    (tmp_path / "in2.log").write_bytes(bulk_log(50_000, seed=8))
    archiverd("pack", "--key-file", str(key), str(tmp_path / "in2.log"), str(tmp_path / "p2"))
    second = (tmp_path / "p2").read_bytes()
    header, header2 = packed[: packed.index(b"}") + 1], second[: second.index(b"}") + 1]
    cases = [
        (bytes(flipped), key, b"GCM authentication tag does not verify"),
        (packed[:-40], key, b"truncated"),
        (packed + b"\n", key, b"were appended"),
        (header2 + packed[len(header) :], key, b"swapped"),
        (packed[:10], key, b"ends inside its header"),
        (packed, other, b"not in the keyring"),
    ]
    for content, key_file, message in cases:
        (work / "in.pack").write_bytes(content)
        done = archiverd(
            "unpack", "--key-file", str(key_file), str(work / "in.pack"), str(work / "out")
        )
        assert done.returncode == EX_DATAERR, (message, done.stderr)
        assert message in done.stderr
        assert leftovers(work) == ["in.pack"]
        piped = archiverd("unpack", "--key-file", str(key_file), "-", "-", stdin=content)
        assert piped.returncode == EX_DATAERR
        assert piped.stdout == b""


def test_missing_key_file_is_exit_77(tmp_path: Path) -> None:
    """A key file that does not exist: exit 77, the message names it; no output is created."""
    (tmp_path / "in.log").write_bytes(b"x\n")
    done = archiverd(
        "pack",
        "--key-file",
        str(tmp_path / "nope.key"),
        str(tmp_path / "in.log"),
        str(tmp_path / "p"),
    )
    assert done.returncode == EX_NOPERM
    assert b"nope.key" in done.stderr
    assert leftovers(tmp_path) == ["in.log"]


def test_config_key_and_systemd_credentials(tmp_path: Path, key: Path) -> None:
    """Without --key-file the config's key is used, found in $CREDENTIALS_DIRECTORY."""
    config = tmp_path / "archiverd.toml"
    config.write_text('[encryption]\nkey_file = "/etc/archiverd/archive.key"\n')
    (tmp_path / "in.log").write_bytes(b"via credentials\n")
    env = {"CREDENTIALS_DIRECTORY": str(key.parent)}
    packed = archiverd(
        "pack", "--config", str(config), str(tmp_path / "in.log"), str(tmp_path / "p"), env=env
    )
    assert packed.returncode == 0, packed.stderr
    done = archiverd("unpack", "--key-file", str(key), str(tmp_path / "p"), str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o").read_bytes() == b"via credentials\n"


def test_pack_refuses_terminal_stdout(tmp_path: Path, key: Path) -> None:
    """`pack IN -` with stdout on a terminal refuses instead of spraying binary on it."""
    import pty

    (tmp_path / "in.log").write_bytes(b"x\n")
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "archiverd",
                "pack",
                "--key-file",
                str(key),
                str(tmp_path / "in.log"),
                "-",
            ],
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 66
    assert b"to a terminal" in done.stderr


def test_pack_and_unpack_write_into_a_fifo_without_replacing_it(tmp_path: Path, key: Path) -> None:
    """A target that is not a regular file (a FIFO, /dev/null) is written in place: the
    rename that publishes a regular file must never replace it (it once turned /dev/null
    into a regular file)."""
    data = bulk_log(200_000)
    plain = tmp_path / "app.log"
    plain.write_bytes(data)
    packed = tmp_path / "app.log.gz.enc"
    assert archiverd("pack", "--key-file", str(key), str(plain), str(packed)).returncode == 0
    for args in (
        ("unpack", "--key-file", str(key), str(packed)),
        ("pack", "--key-file", str(key), str(plain)),
    ):
        fifo = tmp_path / f"{args[0]}.fifo"
        os.mkfifo(fifo)
        received: list[bytes] = []
        reader = threading.Thread(target=_read_into, args=(fifo, received))
        reader.start()
        done = archiverd(*args, str(fifo))
        reader.join(timeout=10)
        if reader.is_alive():  # nobody wrote into the FIFO: release the reader, then fail
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join()
        assert done.returncode == 0, done.stderr
        assert fifo.is_fifo()
        if args[0] == "unpack":
            assert received == [data]
        else:
            assert received[0].startswith(MAGIC)


def _read_into(path: Path, sink: list[bytes]) -> None:
    sink.append(path.read_bytes())
