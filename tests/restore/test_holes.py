"""Every kind of hole, on SeaweedFS with hundreds of chained segments: `get` and `verify`
each give exactly the expected message and exit code, and `get` releases no plaintext of a
broken stream without --allow-gaps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiverd.formats.layout import Loss
from archiverd.pack import Keyring
from tests.restore import chain, corpus
from tests.restore.cli import Result, run
from tests.servers import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.s3]

SEGMENTS = 40
MIDDLE = 20
START = datetime(2026, 10, 5, 8, tzinfo=UTC)
LOSS_AFTER = START + timedelta(minutes=10 * (MIDDLE - 1) + 2)
LOSS_BEFORE = START + timedelta(minutes=10 * MIDDLE)
LOSS = Loss(4096, LOSS_AFTER, LOSS_BEFORE, "rotated away before it was read")


def _container(name: str) -> corpus.Container:
    return corpus.Container("h7", name, {"app": name})


@dataclass
class Holes:
    """A bucket of seven streams, each damaged one way (or not at all)."""

    server: S3Server
    s3: Any
    bucket: str
    config: Path
    streams: dict[str, chain.Stream]
    recovered_versions: dict[str, list[tuple[str, str]]]
    forged: bytes


@pytest.fixture(scope="module")
def holes(seaweedfs: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Holes:
    """280 segments: intact, and each kind of hole in its own container."""
    root = tmp_path_factory.mktemp("holes")
    key_file, raw = corpus.write_key(root / "archive.key")
    keyring = Keyring.from_raw_keys(raw)
    s3 = seaweedfs.boto3_client()
    bucket = seaweedfs.make_bucket()
    streams: dict[str, chain.Stream] = {}
    for n, name in enumerate(["intact", "marked", "gone", "tail", "tailmarked", "replaced"]):
        start = START + timedelta(seconds=n)
        streams[name] = chain.build(s3, bucket, keyring, _container(name), start, SEGMENTS)
    streams["lossy"] = chain.build(
        s3, bucket, keyring, _container("lossy"), START, SEGMENTS, losses={MIDDLE: LOSS}
    )
    recovered: dict[str, list[tuple[str, str]]] = {}
    for name, picks in (("marked", [MIDDLE]), ("tailmarked", [SEGMENTS - 2, SEGMENTS - 1])):
        s = streams[name]
        for n in picks:
            s3.delete_object(Bucket=bucket, Key=s.keys[n])
        recovered[name] = [(s.keys[n], s.version_ids[n]) for n in picks]
    chain.delete_every_version(s3, bucket, streams["gone"].keys[MIDDLE])
    for n in (SEGMENTS - 2, SEGMENTS - 1):
        chain.delete_every_version(s3, bucket, streams["tail"].keys[n])
    forged = chain.replace_object(s3, bucket, keyring, streams["replaced"], MIDDLE)
    config = corpus.write_config(
        root / "archiverd.toml",
        url=f"s3://{bucket}/{corpus.PREFIX}",
        endpoint=seaweedfs.endpoint_url,
        key_file=key_file,
        credentials=(seaweedfs.access_key, seaweedfs.secret_key),
    )
    return Holes(seaweedfs, s3, bucket, config, streams, recovered, forged)


def gone_message(h: Holes) -> str:
    s = h.streams["gone"]
    return (
        f"{s.who}: seq {MIDDLE} missing from the bucket: no records between "
        f"{chain.iso(s.descriptions[MIDDLE - 1].last_ts)} and "
        f"{chain.iso(s.descriptions[MIDDLE + 1].first_ts)}"
    )


def replaced_message(h: Holes) -> str:
    s = h.streams["replaced"]
    return (
        f"{s.who}: seq {MIDDLE} is not the segment seq {MIDDLE + 1} follows (its SHA-256 "
        f"differs from the chain's): the object at {s.keys[MIDDLE]} was replaced by another one"
    )


def tail_message(h: Holes) -> str:
    s = h.streams["tail"]
    last = s.descriptions[SEGMENTS - 3]
    return (
        f"{s.who}: no end-of-stream mark after seq {SEGMENTS - 3} (last record "
        f"{chain.iso(last.last_ts)}): still running, or the segments after it are missing"
    )


def lossy_message(h: Holes) -> str:
    return (
        f"{h.streams['lossy'].who}: lost at source: 4096 bytes between "
        f"{chain.iso(LOSS_AFTER)} and {chain.iso(LOSS_BEFORE)} "
        "(rotated away before it was read)"
    )


def recovered_lines(h: Holes, name: str) -> list[str]:
    return [
        f"warning: {key} was deleted (its latest version is a delete marker): restoring its "
        f"newest live version {version}"
        for key, version in h.recovered_versions[name]
    ]


def verified_lines(h: Holes, name: str) -> list[str]:
    return [
        f"{key} was deleted (its latest version is a delete marker): verified its newest live "
        f"version {version}"
        for key, version in h.recovered_versions[name]
    ]


def cli(capsysbinary: pytest.CaptureFixture[bytes], h: Holes, *args: str) -> Result:
    command, *rest = args
    return run(capsysbinary, command, "--config", str(h.config), *rest)


def get_one(capsysbinary: pytest.CaptureFixture[bytes], h: Holes, name: str, *args: str) -> Result:
    # By id prefix: no HEAD of the other streams' objects to match a name.
    who = h.streams[name].container.id[:12]
    return cli(capsysbinary, h, "get", "--container", who, "--out", "-", *args)


def test_an_intact_stream_restores_exactly_and_silently(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """Baseline: the untouched chained stream restores byte for byte, nothing on stderr."""
    result = get_one(capsysbinary, holes, "intact")
    assert (result.code, result.err) == (0, "")
    assert result.out == holes.streams["intact"].plaintext()


def test_a_middle_segment_deleted_with_an_older_version_comes_back(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """A delete marker on a middle segment: restored from its live version, said on stderr."""
    result = get_one(capsysbinary, holes, "marked")
    assert result.code == 0, result.err
    assert result.out == holes.streams["marked"].plaintext()
    assert result.err.splitlines() == recovered_lines(holes, "marked")


def test_a_middle_segment_deleted_for_good_fails_and_releases_nothing(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes, tmp_path: Path
) -> None:
    """Every version gone: exit 65 naming container, seq and time range; no plaintext."""
    result = get_one(capsysbinary, holes, "gone")
    assert (result.code, result.out) == (65, b"")
    assert result.err.splitlines() == [
        "archiverd get: 1 stream(s) have holes; nothing was written: rerun with --allow-gaps "
        "to restore around the holes, and see `archiverd ls --versions` for deleted segments",
        f"  {gone_message(holes)}",
    ]
    out = tmp_path / "dir"
    who = holes.streams["gone"].container.id[:12]
    result = cli(capsysbinary, holes, "get", "--container", who, "--out", str(out))
    assert result.code == 65
    assert not out.exists() or list(out.iterdir()) == []


def test_allow_gaps_warns_per_gap_and_restores_the_rest(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """--allow-gaps: one warning per hole on stderr, every other byte of the stream out."""
    result = get_one(capsysbinary, holes, "gone", "--allow-gaps")
    assert result.code == 0, result.err
    assert result.out == holes.streams["gone"].plaintext(skip=[MIDDLE])
    assert result.err.splitlines() == [f"warning: {gone_message(holes)}; continuing (--allow-gaps)"]


def test_last_segments_deleted_for_good_show_as_an_open_stream(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """The end-of-stream segment gone: get says the stream has no end mark (exit 0)."""
    result = get_one(capsysbinary, holes, "tail")
    assert result.code == 0, result.err
    assert result.out == holes.streams["tail"].plaintext(skip=[SEGMENTS - 2, SEGMENTS - 1])
    assert result.err.splitlines() == [f"warning: {tail_message(holes)}"]


def test_last_segments_deleted_with_older_versions_come_back(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """Delete markers on the last two segments: both restored, each said, stream complete."""
    result = get_one(capsysbinary, holes, "tailmarked")
    assert result.code == 0, result.err
    assert result.out == holes.streams["tailmarked"].plaintext()
    assert result.err.splitlines() == recovered_lines(holes, "tailmarked")


def test_an_object_replaced_by_another_valid_one_breaks_the_chain(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """A forged object under a middle key (decrypts fine): exit 65, nothing released."""
    result = get_one(capsysbinary, holes, "replaced")
    assert (result.code, result.out) == (65, b"")
    assert result.err.splitlines()[1:] == [f"  {replaced_message(holes)}"]
    allowed = get_one(capsysbinary, holes, "replaced", "--allow-gaps")
    assert allowed.code == 0
    assert allowed.err.splitlines() == [
        f"warning: {replaced_message(holes)}; continuing (--allow-gaps)"
    ]
    s = holes.streams["replaced"]
    assert allowed.out == s.plaintext(skip=[MIDDLE]).replace(
        s.plaintexts[MIDDLE + 1], holes.forged + s.plaintexts[MIDDLE + 1]
    )


def test_an_ingest_loss_is_reported_as_lost_at_source(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """A loss recorded at ingest: restored (exit 0) with 'lost at source: N bytes ...'."""
    result = get_one(capsysbinary, holes, "lossy")
    assert result.code == 0, result.err
    assert result.out == holes.streams["lossy"].plaintext()
    assert result.err.splitlines() == [f"warning: {lossy_message(holes)}"]


def test_get_of_everything_refuses_while_any_stream_is_broken(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes, tmp_path: Path
) -> None:
    """--out -: nothing at all; --out DIR: the sound streams only, broken ones absent."""
    result = cli(capsysbinary, holes, "get", "--out", "-")
    assert (result.code, result.out) == (65, b"")
    assert f"  {gone_message(holes)}" in result.err.splitlines()
    assert f"  {replaced_message(holes)}" in result.err.splitlines()
    out = tmp_path / "dir"
    result = cli(capsysbinary, holes, "get", "--out", str(out))
    assert result.code == 65
    names = {p.name.split("_", 1)[0] for p in out.iterdir()}
    assert names == {"intact", "marked", "tail", "tailmarked", "lossy"}
    restored = b"".join(p.read_bytes() for p in sorted(out.iterdir()) if p.name[:6] == "intact")
    assert restored == holes.streams["intact"].plaintext()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("intact", 0),
        ("marked", 0),
        ("gone", 65),
        ("tail", 0),
        ("tailmarked", 0),
        ("replaced", 65),
        ("lossy", 66),
    ],
)
def test_verify_each_kind_of_hole(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes, name: str, code: int
) -> None:
    """verify per container: exit 0 sound, 65 hole/broken link, 66 only lost at source."""
    who = holes.streams[name].container.id[:12]
    result = cli(capsysbinary, holes, "verify", "--container", who, "--json")
    assert result.code == code, result.err
    report = json.loads(result.out)
    expected_problems = {"gone": [gone_message(holes)], "replaced": [replaced_message(holes)]}
    assert report["problems"] == expected_problems.get(name, [])
    assert report["losses_at_source"] == ([lossy_message(holes)] if name == "lossy" else [])
    notes = {
        "tail": [tail_message(holes)],
        "marked": verified_lines(holes, "marked"),
        "tailmarked": verified_lines(holes, "tailmarked"),
    }
    assert report["notes"] == notes.get(name, [])
    stderr = [f"problem: {m}" for m in report["problems"]]
    stderr += [f"warning: {m}" for m in report["losses_at_source"]]
    stderr += [f"note: {m}" for m in report["notes"]]
    assert result.err.splitlines() == stderr


def test_verify_summarises_the_bucket_per_host_and_day(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """The whole bucket: every current object verified, streams counted by verdict."""
    result = cli(capsysbinary, holes, "verify", "--json")
    assert result.code == 65
    report = json.loads(result.out)
    assert report["objects"] == 7 * SEGMENTS - 1 - 2
    assert report["days"] == [
        {
            "host": "h7",
            "day": "2026-10-05",
            "objects": 7 * SEGMENTS - 3,
            "bytes": report["bytes"],
            "failed": 0,
            "streams": {"broken": 1, "complete": 4, "gaps": 1, "open": 1},
            "losses_at_source": 1,
            "lost_bytes": 4096,
        }
    ]
    table = cli(capsysbinary, holes, "verify")
    assert table.code == 65
    head, row, total = table.out.decode().splitlines()
    assert head.split() == [
        "HOST", "DAY", "OBJECTS", "BYTES", "FAILED", "COMPLETE", "OPEN", "GAPS", "BROKEN",
        "UNCHAINED", "LOST", "AT", "SOURCE",
    ]  # fmt: skip
    assert row.split()[:3] + row.split()[4:] == [
        "h7", "2026-10-05", "277", "0", "4", "1", "1", "1", "0", "1", "(4.0K)",
    ]  # fmt: skip
    assert total.endswith("verified: PROBLEMS FOUND")


def test_verify_versions_checks_every_stored_version(
    capsysbinary: pytest.CaptureFixture[bytes], holes: Holes
) -> None:
    """--versions: the replaced object's original version is verified too."""
    who = holes.streams["replaced"].container.id[:12]
    result = cli(capsysbinary, holes, "verify", "--versions", "--json", "--container", who)
    assert result.code == 65
    assert json.loads(result.out)["objects"] == SEGMENTS + 1
