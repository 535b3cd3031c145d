"""What the real daemon archives is provably complete: `verify` passes, and a hole made in the
bucket afterwards is found by both `verify` and `get`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.servers import S3Server
from tests.service.test_daemon_process import archiverd, archiverd_env

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def test_daemon_written_chain_verifies_and_a_deleted_version_is_a_hole(
    tmp_path: Path, seaweedfs: S3Server
) -> None:
    """Three `run --once` passes (two appends, then the file removed): three chained objects,
    the last an end mark; verify exit 0; every version of the middle one deleted: exit 65."""
    bucket = seaweedfs.make_bucket()
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    env = archiverd_env(
        tmp_path,
        ARCHIVERD_DESTINATION__URL=f"s3://{bucket}/logs/",
        ARCHIVERD_DESTINATION__ENDPOINT_URL=seaweedfs.endpoint_url,
        **seaweedfs.env(),
    )
    lines = [f"2026-11-23T09:00:{i:02d}Z line {i}" for i in range(10)]
    log = logs / "app.log"
    for batch in (lines[:5], lines[5:]):
        with log.open("a") as out:
            out.write("".join(line + "\n" for line in batch))
        once = archiverd("run", "--config", str(config), "--once", "--seal-open", env=env)
        assert once.returncode == 0, once.stderr
    log.unlink()
    once = archiverd("run", "--config", str(config), "--once", env=env)
    assert once.returncode == 0, once.stderr
    s3 = seaweedfs.boto3_client()
    versions = sorted(
        s3.list_object_versions(Bucket=bucket).get("Versions", []), key=lambda v: v["Key"]
    )
    metas = [
        s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Metadata"]
        for v in versions
    ]
    metas.sort(key=lambda m: int(m["archiverd-seq"]))
    assert [(m["archiverd-seq"], m["archiverd-prev-seq"], m["archiverd-end"]) for m in metas] == [
        ("0", "none", "false"),
        ("1", "0", "false"),
        ("2", "1", "true"),
    ]
    verified = archiverd("verify", "--config", str(config), "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert (report["objects"], report["problems"], report["notes"]) == (3, [], [])
    assert report["days"][0]["streams"] == {"complete": 1}
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert (restored.returncode, restored.stdout.splitlines()) == (0, lines)

    middle = next(v for v in versions if v["Key"].endswith("_00000001.log.gz.enc"))
    s3.delete_object(Bucket=bucket, Key=middle["Key"], VersionId=middle["VersionId"])
    verified = archiverd("verify", "--config", str(config), "--json", env=env)
    assert verified.returncode == 65
    [problem] = json.loads(verified.stdout)["problems"]
    who, what = problem.split(": ", 1)
    assert who.startswith("container app.log (")
    assert what.startswith("seq 1 missing from the bucket: no records between ")
    refused = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert (refused.returncode, refused.stdout) == (65, "")
    assert problem in refused.stderr
