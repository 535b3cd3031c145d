"""`archiverd ls` over a real SeaweedFS archive: every filter returns exactly the expected set."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from archiverd.formats.layout import format_ts
from tests.restore.cli import run
from tests.restore.conftest import Archive
from tests.restore.corpus import Seg

pytestmark = pytest.mark.slow  # real servers or processes: seconds each

Pick = Callable[[Seg], bool]


def _rfc(moment: object) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def ls_keys(archive: Archive, capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> set[str]:
    result = run(capsysbinary, "ls", "--config", str(archive.config), "--json", *args)
    assert result.code == 0, result.err
    return {row["key"] for row in result.json_lines()}


def expect(archive: Archive, pick: Pick) -> set[str]:
    return {s.key for s in archive.corpus.live() if pick(s)}


def test_no_filter_lists_every_live_segment(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Without filters: every key whose latest version is live (delete-marked keys hidden)."""
    got = ls_keys(archive, capsysbinary)
    assert len(archive.corpus.segments) >= 256
    assert got == expect(archive, lambda s: True)
    assert any(s.deleted for s in archive.corpus.segments)


@pytest.mark.parametrize(
    ("args", "pick"),
    [
        (["--host", "h2"], lambda s: s.container.host == "h2"),
        (["--container", "web-1"], lambda s: s.container.name == "web-1"),
        (["--container", "/db-2"], lambda s: s.container.name == "db-2"),
        (
            ["--container", "web-1", "--host", "h1"],
            lambda s: s.container.name == "web-1" and s.container.host == "h1",
        ),
        (["--label", "app=web"], lambda s: s.container.labels.get("app") == "web"),
        (
            ["--label", "app=web", "--label", "tier=front"],
            lambda s: (
                s.container.labels.get("app") == "web" and s.container.labels.get("tier") == "front"
            ),
        ),
        (
            ["--label", "tier=back", "--host", "h1"],
            lambda s: s.container.labels.get("tier") == "back" and s.container.host == "h1",
        ),
        (["--label", "app=nothing"], lambda s: False),
        (["--container", "no-such-container"], lambda s: False),
        (["--since", "400d"], lambda s: True),
        (["--until", "1h"], lambda s: True),
    ],
)
def test_each_filter_returns_exactly_its_set(
    archive: Archive,
    capsysbinary: pytest.CaptureFixture[bytes],
    args: list[str],
    pick: Pick,
) -> None:
    """Host, container name, labels and their combinations select exactly the expected keys."""
    assert ls_keys(archive, capsysbinary, *args) == expect(archive, pick)


def test_container_id_prefix_selects_that_container(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A hex --container is an id prefix (no metadata needed); the full id works too."""
    target = archive.corpus.segments[40].container
    want = expect(archive, lambda s: s.container.id == target.id)
    assert ls_keys(archive, capsysbinary, "--container", target.id[:8]) == want
    assert ls_keys(archive, capsysbinary, "--container", target.id) == want


def test_time_window_is_exact_to_the_second(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--since/--until select segments overlapping the window, boundaries inclusive."""
    segs = archive.corpus.live()
    since = segs[10].description.last_ts
    until = segs[14].description.first_ts
    pick: Pick = lambda s: s.description.first_ts <= until and s.description.last_ts >= since  # noqa: E731
    got = ls_keys(archive, capsysbinary, "--since", _rfc(since), "--until", _rfc(until))
    assert got == expect(archive, pick)
    assert segs[10].key in got
    assert segs[14].key in got
    one_second = timedelta(seconds=1)
    narrower = ls_keys(
        archive,
        capsysbinary,
        "--since",
        _rfc(since + one_second),
        "--until",
        _rfc(until - one_second),
    )
    assert segs[10].key not in narrower
    assert segs[14].key not in narrower


def test_segments_crossing_midnight_are_found_from_the_next_day(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A window early on a day finds the segments begun the evening before (other partition)."""
    day = archive.corpus.base_day + timedelta(days=2)
    since, until = day + timedelta(minutes=1), day + timedelta(minutes=5)
    pick: Pick = lambda s: s.description.first_ts <= until and s.description.last_ts >= since  # noqa: E731
    want = expect(archive, pick)
    earlier = {
        s.key for s in archive.corpus.live() if s.key in want and s.description.first_ts < day
    }
    assert len(earlier) >= 3
    got = ls_keys(archive, capsysbinary, "--since", _rfc(since), "--until", _rfc(until))
    assert got == want
    # With --host only the planned day partitions are listed, so a short lookback misses them.
    h1 = {s.key for s in archive.corpus.live() if s.container.host == "h1"}
    window = ["--since", _rfc(since), "--until", _rfc(until), "--host", "h1"]
    assert ls_keys(archive, capsysbinary, *window) == want & h1
    short = ls_keys(archive, capsysbinary, *window, "--lookback", "1m")
    assert short == (want - earlier) & h1
    assert earlier & h1


def test_versions_show_every_version_and_delete_marker(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--versions lists each stored version and delete marker with its id and latest flag."""
    result = run(capsysbinary, "ls", "--config", str(archive.config), "--json", "--versions")
    assert result.code == 0, result.err
    got = {
        (r["key"], r["version_id"], r["is_delete_marker"], r["is_latest"])
        for r in result.json_lines()
    }
    want = {
        (v.key, v.version_id, v.is_delete_marker, v.is_latest)
        for s in archive.corpus.segments
        for v in s.versions
    }
    assert got == want
    assert sum(1 for v in want if v[2]) >= 3
    assert sum(1 for s in archive.corpus.segments if len(s.versions) > 1) >= 10


def test_versions_with_a_name_filter_keep_delete_markers(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A metadata filter with --versions keeps a matching key's delete marker and old versions."""
    deleted = next(s for s in archive.corpus.segments if s.deleted)
    result = run(
        capsysbinary,
        "ls",
        "--config",
        str(archive.config),
        "--json",
        "--versions",
        "--container",
        deleted.container.name,
        "--host",
        deleted.container.host,
    )
    assert result.code == 0, result.err
    got = {(r["key"], r["version_id"]) for r in result.json_lines()}
    want = {
        (v.key, v.version_id)
        for s in archive.corpus.segments
        if s.container == deleted.container
        for v in s.versions
    }
    assert got == want


def test_json_lines_carry_metadata_with_long(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """--long adds name, labels, lines and plaintext SHA-256 from each object's metadata."""
    seg = archive.corpus.live()[3]
    result = run(
        capsysbinary,
        "ls",
        "--config",
        str(archive.config),
        "--json",
        "--long",
        "--container",
        seg.container.id,
        "--since",
        _rfc(seg.description.first_ts),
        "--until",
        _rfc(seg.description.first_ts),
    )
    rows = {r["key"]: r for r in result.json_lines()}
    row = rows[seg.key]
    assert row["container_name"] == seg.container.name
    assert row["labels"] == seg.container.labels
    assert row["plaintext_sha256"] == seg.description.plaintext_sha256
    assert row["first_ts"].startswith(f"{seg.description.first_ts:%Y-%m-%dT%H:%M:%S}")
    assert format_ts(seg.description.first_ts) in row["key"]


def test_table_has_a_header_and_one_row_per_segment(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Without --json: an aligned table, one row per segment, versions adds VERSION/STATE."""
    c = archive.corpus.segments[0].container
    result = run(capsysbinary, "ls", "--config", str(archive.config), "--container", c.id)
    lines = result.out.decode().splitlines()
    assert lines[0].split()[:4] == ["FIRST", "(UTC)", "LAST", "(UTC)"]
    assert len(lines) - 1 == len(expect(archive, lambda s: s.container == c))
    assert all(c.id[:12] in line for line in lines[1:])
    result = run(
        capsysbinary, "ls", "--config", str(archive.config), "--container", c.id, "--versions"
    )
    assert "VERSION" in result.out.decode().splitlines()[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is not a time"),
        (["--since", "1h", "--until", "2h"], "swap them"),
        (["--label", "novalue"], "must be KEY=VALUE"),
        (["--lookback", "forever"], "is not a duration"),
    ],
)
def test_bad_filters_exit_78_with_the_fix(
    archive: Archive, capsysbinary: pytest.CaptureFixture[bytes], args: list[str], message: str
) -> None:
    """A malformed filter is a config error (exit 78) naming the option; nothing on stdout."""
    result = run(capsysbinary, "ls", "--config", str(archive.config), *args)
    assert result.code == 78
    assert message in result.err
    assert result.out == b""
