"""Reading old buckets: the destination plus ``restore.archives`` merged (a segment in two
buckets shown once), and ``--url`` reading one bucket without a config file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiverd.pack import Keyring
from tests.restore import chain, corpus
from tests.restore.cli import run
from tests.servers import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.s3]

C = corpus.Container("h5", "migrated", {"app": "migrated"})


@dataclass
class TwoBuckets:
    """One stream whose seqs 0-9 are in the old bucket and 9-19 in the new one."""

    server: S3Server
    old: str
    new: str
    config: Path
    key_file: Path
    stream: chain.Stream


@pytest.fixture(scope="module")
def two(seaweedfs: S3Server, tmp_path_factory: pytest.TempPathFactory) -> TwoBuckets:
    """A bucket switch in the middle of a stream, seq 9 copied to both buckets."""
    root = tmp_path_factory.mktemp("archives")
    key_file, raw = corpus.write_key(root / "archive.key")
    s3 = seaweedfs.boto3_client()
    old, new = seaweedfs.make_bucket(), seaweedfs.make_bucket()
    start = datetime(2026, 9, 1, 6, tzinfo=UTC)
    stream = chain.build(s3, old, Keyring.from_raw_keys(raw), C, start, 20)
    for n in range(9, 20):
        s3.copy_object(
            Bucket=new, Key=stream.keys[n], CopySource={"Bucket": old, "Key": stream.keys[n]}
        )
        if n > 9:
            chain.delete_every_version(s3, old, stream.keys[n])
    config = corpus.write_config(
        root / "archiverd.toml",
        url=f"s3://{new}/{corpus.PREFIX}",
        endpoint=seaweedfs.endpoint_url,
        key_file=key_file,
        credentials=(seaweedfs.access_key, seaweedfs.secret_key),
    )
    with config.open("a") as out:
        out.write(
            f'\n[restore]\narchives = [{{ url = "s3://{old}/{corpus.PREFIX}", '
            f'endpoint_url = "{seaweedfs.endpoint_url}", addressing_style = "path" }}]\n'
        )
    return TwoBuckets(seaweedfs, old, new, config, key_file, stream)


def test_ls_merges_the_buckets_and_shows_a_segment_once(
    capsysbinary: pytest.CaptureFixture[bytes], two: TwoBuckets
) -> None:
    """ls lists seqs 0-19 from both buckets, seq 9 (in both) once."""
    result = run(capsysbinary, "ls", "--config", str(two.config), "--json")
    assert result.code == 0, result.err
    assert [r["seq"] for r in result.json_lines()] == list(range(20))


def test_get_and_verify_follow_the_chain_across_buckets(
    capsysbinary: pytest.CaptureFixture[bytes], two: TwoBuckets
) -> None:
    """get restores the whole stream from both buckets; verify finds it complete."""
    result = run(capsysbinary, "get", "--config", str(two.config), "--out", "-")
    assert (result.code, result.err) == (0, "")
    assert result.out == two.stream.plaintext()
    result = run(capsysbinary, "verify", "--config", str(two.config), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert (report["objects"], report["days"][0]["streams"]) == (20, {"complete": 1})


def test_url_reads_one_bucket_without_a_config_file(
    capsysbinary: pytest.CaptureFixture[bytes], two: TwoBuckets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--url: the old bucket alone, credentials from the environment, key from --key-file."""
    for name, value in two.server.env().items():
        monkeypatch.setenv(name, value)
    url = ["--url", f"s3://{two.old}/{corpus.PREFIX}", "--endpoint-url", two.server.endpoint_url]
    listed = run(capsysbinary, "ls", *url, "--json")
    assert listed.code == 0, listed.err
    assert [r["seq"] for r in listed.json_lines()] == list(range(10))
    got = run(capsysbinary, "get", *url, "--key-file", str(two.key_file), "--out", "-")
    assert got.code == 0, got.err
    assert got.out == two.stream.plaintext(skip=range(10, 20))
    last = two.stream.descriptions[9]
    assert got.err.splitlines() == [
        f"warning: {two.stream.who}: no end-of-stream mark after seq 9 (last record "
        f"{chain.iso(last.last_ts)}): still running, or the segments after it are missing"
    ]
