"""`archiverd get` over the real SeaweedFS archive: exact bytes, time order, grep, resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from archiverd.formats.layout import object_key
from archiverd.restore.output import human_bytes
from tests.disk import file_size_limit
from tests.restore.cli import run
from tests.restore.conftest import Archive
from tests.restore.corpus import Container, Seg

pytestmark = pytest.mark.slow  # real servers or processes: seconds each


def messages(data: bytes) -> list[tuple[str, bytes]]:
    """Docker records grouped into application lines: (joined text, raw bytes)."""
    out: list[tuple[str, bytes]] = []
    text, raw = "", b""
    for line in data.splitlines(keepends=True):
        text += json.loads(line)["log"]
        raw += line
        if text.endswith("\n"):
            out.append((text, raw))
            text, raw = "", b""
    assert raw == b""
    return out


def owner(text: str) -> str:
    return text.split(" ", 1)[0]


def written(archive: Archive, container: Container) -> bytes:
    """What `get` must return for one container: every segment (deleted ones from their
    newest live version), in seq order."""
    segs = [s for s in archive.corpus.restored() if s.container == container]
    return b"".join(s.plaintext for s in sorted(segs, key=lambda s: s.description.seq))


def times(data: bytes) -> list[str]:
    return [json.loads(line)["time"] for line in data.splitlines()]


def get(archive: Archive, capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> bytes:
    result = run(capsysbinary, "get", "--config", str(archive.config), *args)
    assert result.code == 0, result.err
    return result.out


def test_one_container_is_byte_identical_to_what_it_wrote(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--out - for one container: every live segment's latest version, in order, exactly."""
    segs = archive.corpus.segments
    container = next(
        c
        for c in {s.container for s in segs}
        if not any(s.deleted for s in segs if s.container == c)
        and any(len(s.versions) > 1 for s in segs if s.container == c)
    )
    out = get(archive, capsysbinary, "--container", container.id[:10], "--out", "-")
    assert out == written(archive, container)
    assert len(out.splitlines()) >= 4 * 8 * 10


def test_merged_output_is_time_ordered_and_each_stream_exact(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--out - over every container: record times never decrease; each container's bytes exact."""
    out = get(archive, capsysbinary, "--out", "-", "--parallel", "8")
    stamps = times(out)
    assert stamps == sorted(stamps)
    streams: dict[str, bytes] = {}
    for text, raw in messages(out):
        streams[owner(text)] = streams.get(owner(text), b"") + raw
    containers = {s.container for s in archive.corpus.segments}
    assert set(streams) == {f"{c.host}/{c.name}" for c in containers}
    for c in containers:
        assert streams[f"{c.host}/{c.name}"] == written(archive, c)


def test_grep_returns_exactly_the_matching_lines(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--grep matches message text (split records joined) and outputs the original records."""
    pattern = r"ERROR code=(3|7)\b"
    out = get(archive, capsysbinary, "--host", "h1", "--grep", pattern, "--out", "-")
    want = [
        raw
        for s in archive.corpus.restored()
        if s.container.host == "h1"
        for text, raw in messages(s.plaintext)
        if re.search(pattern, text.rstrip("\n"))
    ]
    assert sorted(raw for _, raw in messages(out)) == sorted(want)
    assert any(raw.count(b"\n") == 2 for raw in want)  # a split record matched across pieces
    assert times(out) == sorted(times(out))


def test_text_prints_only_the_messages(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--text: the application's lines (split records joined), no JSON around them."""
    c = archive.corpus.segments[0].container
    out = get(archive, capsysbinary, "--container", c.id, "--text", "--out", "-")
    assert out.decode() == "".join(text for text, _ in messages(written(archive, c)))


def test_grep_without_a_match_exits_1(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Like grep: no matching line is exit 1 with a note on stderr and nothing on stdout."""
    c = archive.corpus.segments[0].container
    result = run(
        capsysbinary,
        "get",
        "--config",
        str(archive.config),
        "--container",
        c.id,
        "--grep",
        "never-logged",
        "--out",
        "-",
    )
    assert (result.code, result.out) == (1, b"")
    assert "no line matched --grep" in result.err


def test_out_dir_writes_one_verified_file_per_segment_and_resumes(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """--out DIR: a file per segment named after container and time; a rerun redoes only
    missing or damaged files."""
    c = next(c for c in {s.container for s in archive.corpus.segments} if c.name == "web-2")
    segs = sorted(
        (s for s in archive.corpus.restored() if s.container == c), key=lambda s: s.description.seq
    )
    out = tmp_path / "restored"
    get(archive, capsysbinary, "--container", "web-2", "--out", str(out))
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(
        f"web-2_{c.id[:12]}_{s.key.rsplit('/', 1)[1].split('_')[0]}_{s.description.seq:08d}.log"
        for s in segs
    )
    by_seq = {int(f.name.rsplit("_", 1)[1][:8]): f for f in files}
    assert all(by_seq[s.description.seq].read_bytes() == s.plaintext for s in segs)
    assert all(f.stat().st_mode & 0o077 == 0 for f in files)
    before = {f.name: f.stat().st_ino for f in files}
    with files[0].open("rb"):  # held open, its inode cannot be reused by the restored file
        files[0].unlink()
        files[1].write_bytes(b"damaged")
        get(archive, capsysbinary, "--container", "web-2", "--out", str(out))
        after = {f.name: f.stat().st_ino for f in out.iterdir()}
    assert set(after) == set(before)
    assert [n for n in after if after[n] != before[n]] == sorted([files[0].name, files[1].name])
    assert files[1].read_bytes() == by_seq_plain(segs, files[1])


def by_seq_plain(segs: list[Seg], path: Path) -> bytes:
    seq = int(path.name.rsplit("_", 1)[1][:8])
    return next(s.plaintext for s in segs if s.description.seq == seq)


def test_version_id_restores_that_version(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--version-id picks an older version; a delete-marked key's live version is reachable."""
    versioned = next(s for s in archive.corpus.segments if len(s.versions) > 1 and not s.deleted)
    old = versioned.versions[0]
    out = get(
        archive,
        capsysbinary,
        "--container",
        versioned.container.id,
        "--version-id",
        old.version_id,
        "--out",
        "-",
    )
    assert out == old.plaintext != versioned.plaintext
    deleted = next(s for s in archive.corpus.segments if s.deleted)
    live = deleted.versions[-2]
    out = get(archive, capsysbinary, "--version-id", live.version_id, "--out", "-")
    assert out == live.plaintext


def test_file_destination_restores_too(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """A file:// destination filled by its own put_file is listed and restored the same way."""
    import asyncio

    from archiverd.destinations.filesystem import FileDestination
    from tests.restore import corpus

    bucket = tmp_path / "bucket"
    destination = FileDestination(bucket.as_uri())
    segs = archive.corpus.restored()[:5]
    for s in segs:
        body, metadata = corpus.pack(
            s.plaintext,
            s.description,
            archive.keyring if not s.container.old_key else archive.old_keyring,
        )
        path = tmp_path / "body"
        path.write_bytes(body)
        import base64
        import hashlib

        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        asyncio.run(destination.put_file(object_key("", s.description), path, metadata, digest))
    config = corpus.write_config(
        tmp_path / "file.toml",
        url=destination.url,
        key_file=archive.new_key,
        old_key_files=[archive.old_key],
    )
    result = run(capsysbinary, "ls", "--config", str(config), "--json")
    assert {r["key"] for r in result.json_lines()} == {object_key("", s.description) for s in segs}
    result = run(capsysbinary, "get", "--config", str(config), "--out", "-")
    assert result.code == 0, result.err
    assert sorted(raw for _, raw in messages(result.out)) == sorted(
        raw for s in segs for _, raw in messages(s.plaintext)
    )


def test_stdout_keeps_only_records_inside_the_window(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """--out - with --since/--until: exactly the records timed inside it (to the second);
    --out DIR keeps the overlapping segments whole."""
    c = next(c for c in {s.container for s in archive.corpus.segments} if c.name == "db-1")
    segs = sorted(
        (s for s in archive.corpus.restored() if s.container == c), key=lambda s: s.description.seq
    )
    since = (
        segs[5].description.first_ts
        + (segs[5].description.last_ts - segs[5].description.first_ts) / 2
    )
    since = since.replace(microsecond=0)
    until = segs[9].description.first_ts.replace(microsecond=0)
    window = ["--since", f"{since:%Y-%m-%dT%H:%M:%SZ}", "--until", f"{until:%Y-%m-%dT%H:%M:%SZ}"]
    out = get(archive, capsysbinary, "--container", c.id, *window, "--out", "-")
    lo, hi = f"{since:%Y-%m-%dT%H:%M:%S}", f"{until:%Y-%m-%dT%H:%M:%S}.000000000Z"
    want = [
        raw
        for s in segs
        for _, raw in messages(s.plaintext)
        if lo <= json.loads(raw.splitlines()[0])["time"] <= hi
    ]
    assert out == b"".join(want)
    assert b"".join(want) != b"".join(s.plaintext for s in segs[5:10])
    restored = tmp_path / "dir"
    get(archive, capsysbinary, "--container", c.id, *window, "--out", str(restored))
    overlapping = [
        s for s in segs if s.description.first_ts <= until and s.description.last_ts >= since
    ]
    assert sorted(p.read_bytes() for p in restored.iterdir()) == sorted(
        s.plaintext for s in overlapping
    )


def test_a_reader_that_goes_away_is_not_an_error(archive: Archive) -> None:
    """`get --out - | head -c 100`: exit 0, no traceback or 'Exception ignored' on stderr."""
    import subprocess
    import sys

    c = next(
        s.container
        for s in archive.corpus.segments
        if not any(x.deleted for x in archive.corpus.segments if x.container == s.container)
    )
    command = (
        f"{sys.executable} -m archiverd get --config {archive.config} "
        f"--container {c.id} --out - | head -c 100; exit ${{PIPESTATUS[0]}}"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == 100
    assert done.stderr == b""


def _container_kept_whole(archive: Archive) -> Container:
    """A container none of whose segments was deleted."""
    return next(
        s.container
        for s in archive.corpus.segments
        if not any(x.deleted for x in archive.corpus.segments if x.container == s.container)
    )


def _stored_bytes(archive: Archive, seg: Seg) -> int:
    """The size in the bucket of the version of `seg` that `get` restores (its newest)."""
    version = next(v for v in reversed(seg.versions) if not v.is_delete_marker)
    head = archive.server.boto3_client().head_object(
        Bucket=archive.corpus.bucket, Key=seg.key, VersionId=version.version_id
    )
    return int(head["ContentLength"])


def _get_to_stdout(
    archive: Archive, *args: str, stdout: Any = subprocess.PIPE, **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    """`archiverd get ... --out -` as the executable; stderr without its warnings."""
    command = [sys.executable, "-m", "archiverd", "get", "--config", str(archive.config)]
    done = subprocess.run(
        [*command, *args, "--out", "-"],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
        **kwargs,
    )
    said = [line for line in done.stderr.splitlines() if not line.startswith(b"warning: ")]
    done.stderr = b"".join(line + b"\n" for line in said)
    return done


@pytest.mark.parametrize("merged", [False, True], ids=["one container", "merged"])
def test_a_full_disk_under_stdout_is_an_error_not_a_traceback(
    archive: Archive, merged: bool
) -> None:
    """`get --out - > file` on a full disk (here /dev/full): exit 73 (EX_CANTCREAT) and one
    line saying why and that the output is incomplete; no traceback, nothing left to flush
    at exit. (A traceback and exit 1 before: sendfile, or the merge's write, raised ENOSPC.)"""
    args = [] if merged else ["--container", _container_kept_whole(archive).id]
    with open("/dev/full", "wb") as full:
        done = _get_to_stdout(archive, *args, stdout=full)
    assert (done.returncode, done.stderr.decode()) == (
        73,
        "archiverd get: writing to stdout: No space left on device: the output is incomplete\n",
    )


def test_a_temp_dir_without_room_is_an_error_and_nothing_is_written(
    archive: Archive, tmp_path: Path
) -> None:
    """`get --out -` keeps every verified segment (compressed) in a temp dir (under TMPDIR)
    until all are verified. Where that has no room (here a file size limit, EFBIG; ENOSPC
    the same): exit 73, each segment listed with why, where and how much room it takes,
    nothing on stdout and nothing left in TMPDIR. (A traceback and exit 1 before.)"""
    container = _container_kept_whole(archive)
    segs = [s for s in archive.corpus.restored() if s.container == container]
    assert min(_stored_bytes(archive, s) - 16 for s in segs) > 64  # each one past the limit
    tmp = tmp_path / "tmp"
    tmp.mkdir()

    done = _get_to_stdout(
        archive,
        "--container",
        container.id,
        env={**os.environ, "TMPDIR": str(tmp)},
        preexec_fn=file_size_limit(64),  # tempfile's probe of TMPDIR fits
    )
    room = human_bytes(sum(_stored_bytes(archive, s) for s in segs))
    why = (
        f"no room for it in the temp dir {tmp}: File too large (get --out - keeps every "
        f"segment there, compressed, until all are verified: {room} here; set TMPDIR to a "
        "file system with room)"
    )
    lines = done.stderr.decode().splitlines()
    assert (done.returncode, done.stdout, lines[0]) == (
        73,
        b"",
        f"archiverd get: {len(segs)} of {len(segs)} segment(s) failed verification or "
        "download; nothing was written",
    )
    listed = min(len(segs), 20)  # then "... and N more"
    assert set(lines[1 : listed + 1]) <= {f"  {s.key}: {why}" for s in segs}
    more = [f"  ... and {len(segs) - listed} more"] if len(segs) > listed else []
    assert (len(set(lines[1 : listed + 1])), lines[listed + 1 :]) == (listed, more)
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("merged", [False, True], ids=["one container", "merged"])
def test_the_temp_dir_holds_segments_compressed_not_their_plaintext(
    archive: Archive, merged: bool, tmp_path: Path
) -> None:
    """`get --out -` keeps every verified segment until all are verified, compressed as
    archived (its verified gzip stream, gunzipped again on the way out), not its plaintext:
    a temp dir where no file may grow past the largest gzip stream, but where none of the
    plaintexts fits, restores every byte. (Each segment failed with "no room for it in the
    temp dir" before: the temp dir needed the plaintext of everything selected.)"""
    segs = archive.corpus.restored()
    if not merged:
        container = _container_kept_whole(archive)
        segs = [s for s in segs if s.container == container]
    # Its gzip stream is its body without the 16-byte tag; the merge's index files (8 or 16
    # bytes a record) fit as well.
    limit = max(512, *(_stored_bytes(archive, s) for s in segs))
    assert limit < min(len(s.plaintext) for s in segs)  # no plaintext fits
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = [] if merged else ["--container", segs[0].container.id]

    done = _get_to_stdout(
        archive, *args, env={**os.environ, "TMPDIR": str(tmp)}, preexec_fn=file_size_limit(limit)
    )
    assert (done.returncode, done.stderr) == (0, b"")
    if merged:
        assert sorted(done.stdout.splitlines()) == sorted(
            b"".join(s.plaintext for s in segs).splitlines()
        )
    else:
        assert done.stdout == written(archive, segs[0].container)
    assert list(tmp.iterdir()) == []


def test_grep_into_a_directory_keeps_only_segments_with_matches(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    """--grep --out DIR: one file per segment that matched, holding exactly its matching
    records; segments without a match leave no file."""
    c = next(c for c in {s.container for s in archive.corpus.segments} if c.name == "cron")
    pattern = r"ERROR code=10\b"
    out = tmp_path / "grep"
    get(archive, capsysbinary, "--container", c.id, "--grep", pattern, "--out", str(out))
    want = {}
    for s in archive.corpus.restored():
        if s.container == c:
            hits = [raw for text, raw in messages(s.plaintext) if re.search(pattern, text)]
            if hits:
                want[s.description.seq] = b"".join(hits)
    got = {int(p.name.rsplit("_", 1)[1][:8]): p.read_bytes() for p in out.iterdir()}
    assert got == want
    assert 0 < len(want) < len([s for s in archive.corpus.restored() if s.container == c])
