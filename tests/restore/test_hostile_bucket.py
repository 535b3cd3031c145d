"""Restore output is safe on any bucket: a bucket writer controls keys, names and files, and
none of that reaches the terminal or the file system raw (issue 11, items 8 to 11)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiverd.destinations.filesystem import FileDestination
from archiverd.formats.layout import SegmentDescription, object_key
from archiverd.pack import Keyring
from tests.restore import corpus
from tests.restore.cli import Result, run

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
ESC_ID = "\x1b[2J\x1b[Hcid" + "ab" * 8
ESC_NAME = "\x1b]0;owned\x07\x1b[31mred\u202e"


@dataclass
class Bucket:
    """A file:// bucket, the key and config to read it, and what each object holds."""

    root: Path
    destination: FileDestination
    config: Path
    keyring: Keyring
    written: dict[str, bytes]

    def store(self, container_id: str, name: str, n: int, host: str = "web-1") -> str:
        """Pack and store one segment of `n`-numbered lines; return its key."""
        first = T0 + timedelta(minutes=n)
        plain = b"".join(
            corpus.record(f"{container_id[-4:]} line {n}.{i}\n", first + timedelta(seconds=i))
            for i in range(5)
        )
        desc = SegmentDescription(
            host=host,
            container_id=container_id,
            seq=n,
            first_ts=first,
            last_ts=first + timedelta(seconds=4),
            start_offset=0,
            end_offset=len(plain),
            line_count=5,
            plaintext_sha256="",
            container_name=name,
            source="docker",
        )
        body, metadata = corpus.pack(plain, desc, self.keyring)
        spooled = self.root.parent / "body"
        spooled.write_bytes(body)
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        key = object_key("", desc)
        asyncio.run(self.destination.put_file(key, spooled, metadata, digest))
        self.written[key] = plain
        return key

    def version_file(self, key: str) -> Path:
        [path] = self.destination._dir(key).iterdir()
        return path


@pytest.fixture
def bucket(tmp_path: Path) -> Bucket:
    key_file, raw = corpus.write_key(tmp_path / "archive.key")
    destination = FileDestination((tmp_path / "bucket").as_uri())
    config = corpus.write_config(tmp_path / "c.toml", url=destination.url, key_file=key_file)
    return Bucket(tmp_path / "bucket", destination, config, Keyring.from_raw_keys(raw), {})


def cli(capsysbinary: pytest.CaptureFixture[bytes], bucket: Bucket, *args: str) -> Result:
    return run(capsysbinary, args[0], "--config", str(bucket.config), *args[1:])


def restored_dir(out: Path) -> bytes:
    return b"".join(sorted(path.read_bytes() for path in out.iterdir()))


def test_control_characters_never_reach_the_terminal_or_file_names(
    bucket: Bucket, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """ESC/OSC/bidi characters in a container id (key) and name (metadata) are shown
    escaped by `ls` and `ls -l`, kept out of error messages and of `get --out DIR` file
    names; the restored bytes are exactly those written."""
    hostile = bucket.store(ESC_ID, ESC_NAME, 1)
    bucket.store("c" * 64, "plain", 2)
    for args in (("ls",), ("ls", "--long"), ("ls", "--versions", "--long")):
        result = cli(capsysbinary, bucket, *args)
        assert result.code == 0, result.err
        assert b"\x1b" not in result.out
        assert b"\x07" not in result.out
        assert "\u202e".encode() not in result.out
        assert b"\\x1b[2J\\x1b[Hc" in result.out
    assert b"\\x1b]0;owned\\x07\\x1b[31mred\\u202e" in cli(capsysbinary, bucket, "ls", "-l").out
    out = tmp_path / "out"
    result = cli(capsysbinary, bucket, "get", "--out", str(out))
    assert result.code == 0, result.err
    names = sorted(path.name for path in out.iterdir())
    assert all(name.isascii() and name.isprintable() for name in names), names
    assert restored_dir(out) == b"".join(sorted(bucket.written.values()))
    # An error quoting the key: a tampered version of the hostile object.
    version = bucket.version_file(hostile)
    data = bytearray(version.read_bytes())
    data[-20] ^= 1
    version.write_bytes(bytes(data))
    failed = cli(capsysbinary, bucket, "get", "--out", str(tmp_path / "again"))
    assert failed.code == 65
    assert "\x1b" not in failed.err
    assert "\\x1b[2J\\x1b[Hcid" in failed.err


def test_long_names_are_shortened_deterministically(
    bucket: Bucket, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """A CRI pod's namespace (63), pod (150) and container (63) names: `get --out DIR`
    writes names of at most 255 bytes, distinct per segment, the same on a rerun; every
    byte restored."""
    long_name = "n" * 63 + "_" + "p" * 150 + "_" + "c" * 63
    bucket.store("d" * 64, long_name, 1)
    bucket.store("d" * 64, long_name, 2)
    bucket.store("e" * 64, long_name[:-1] + "x", 3)
    out = tmp_path / "out"
    result = cli(capsysbinary, bucket, "get", "--out", str(out))
    assert result.code == 0, result.err
    names = sorted(path.name for path in out.iterdir())
    assert len(names) == 3
    assert all(len(name.encode()) <= 255 for name in names)
    assert restored_dir(out) == b"".join(sorted(bucket.written.values()))
    again = cli(capsysbinary, bucket, "get", "--out", str(out))
    assert again.code == 0, again.err
    assert sorted(path.name for path in out.iterdir()) == names


def test_stray_files_in_a_file_bucket_are_skipped_and_named(
    bucket: Bucket, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """A README inside a .versions dir and a junk (newest-named) version file: `ls` and
    `get` exit 0, name both paths on stderr, and restore every archived byte."""
    key = bucket.store("f" * 64, "app", 1)
    folder = bucket.destination._dir(key)
    (folder / "README").write_text("not an object\n")
    junk = folder / ("9" * 20 + "-deadbeef")
    junk.write_bytes(b"junk junk junk")
    listed = cli(capsysbinary, bucket, "ls", "--json")
    assert listed.code == 0, listed.err
    assert [row["key"] for row in listed.json_lines()] == [key]
    assert str(folder / "README") in listed.err
    assert str(junk) in listed.err
    out = tmp_path / "out"
    result = cli(capsysbinary, bucket, "get", "--out", str(out))
    assert result.code == 0, result.err
    assert "not an archive object" in result.err
    assert restored_dir(out) == bucket.written[key]
    stdout = cli(capsysbinary, bucket, "get", "--out", "-")
    assert (stdout.code, stdout.out) == (0, bucket.written[key])


def test_tampered_body_on_a_file_bucket_exits_65(
    bucket: Bucket, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """A flipped byte in a stored body: `get` exits 65 (not 75) naming the version file;
    nothing of it is written, and the intact segment is restored exactly."""
    bad = bucket.store("a" * 64, "app", 1)
    good = bucket.store("b" * 64, "db", 2)
    version = bucket.version_file(bad)
    data = bytearray(version.read_bytes())
    data[-20] ^= 1
    version.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = cli(capsysbinary, bucket, "get", "--out", str(out))
    assert result.code == 65, result.err
    assert str(version) in result.err
    assert "was changed" in result.err
    assert restored_dir(out) == bucket.written[good]
