"""The bucket from an operator's seat: each misconfiguration fails `check` and `run --once` with
its own message and fix, on a server that really produces it, and nothing is lost.

"Nothing lost": the failed `run --once` leaves the logs where they were (and the spool and
journal as they were); after the fix, the next `run --once` archives every line and `get`
restores exactly the lines written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pack.test_keyring import write_key
from tests.restore.cli import run
from tests.servers import S3Server, iam_identity

pytestmark = [pytest.mark.s3, pytest.mark.slow]

LINES = [f"2026-11-23T09:00:0{i}Z line {i}" for i in range(5)]


@dataclass
class Case:
    """One archiving host: its logs, key, state and config file."""

    tmp: Path
    server: S3Server
    bucket: str

    def config(self, **destination: Any) -> Path:
        """Write the config with these destination settings (plus endpoint and bucket)."""
        logs = self.tmp / "logs"
        if not logs.exists():
            logs.mkdir()
            (logs / "app.log").write_text("".join(line + "\n" for line in LINES))
            write_key(self.tmp / "archive.key")
        values: dict[str, Any] = {
            "url": f"s3://{self.bucket}/prod/",
            "endpoint_url": self.server.endpoint_url,
            "addressing_style": "path",
            "access_key_id": self.server.access_key,
            "secret_access_key": self.server.secret_key,
            "max_attempts": 3,
            **destination,
        }
        encryption = values.pop("encryption", {"key_file": str(self.tmp / "archive.key")})
        path = self.tmp / "archiverd.toml"
        path.write_text(
            "host = 'node-1'\n"
            f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n'
            f"[state]\ndir = '{self.tmp / 'state'}'\n[http]\nlisten = ''\n"
            "[destination]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            + "[encryption]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in encryption.items())
        )
        return path


def _fails_then_recovers(
    capsysbinary: pytest.CaptureFixture[bytes],
    case: Case,
    broken: dict[str, Any],
    code: int,
    words: list[str],
    fixed: dict[str, Any] | None = None,
    repair: Callable[[], object] | None = None,
) -> None:
    """`check` and `run --once` fail with `code` and `words`; then, with the config `fixed`
    (and the bucket `repair`ed), one `run --once` archives every line: nothing was lost."""
    config = case.config(**broken)
    checked = run(capsysbinary, "check", "--config", str(config))
    assert checked.code == code, checked.out.decode() + checked.err
    text = checked.out.decode()
    for word in words:
        assert word in text, text
    once = run(capsysbinary, "run", "--config", str(config), "--once", "--seal-open")
    assert once.code == code, once.err
    for word in words:
        assert word in once.err, once.err
    assert (case.tmp / "logs" / "app.log").read_text().splitlines() == LINES
    assert _versions(case) == []
    assert not list((case.tmp / "state").rglob("*.seg*"))  # nothing half-done in the spool
    if repair is not None:
        repair()
    config = case.config(**(fixed or {}))
    assert run(capsysbinary, "run", "--config", str(config), "--once", "--seal-open").code == 0
    restored = run(capsysbinary, "get", "--config", str(config), "--out", "-")
    assert (restored.code, restored.out.decode().splitlines()) == (0, LINES)
    assert len(_versions(case)) == 1


def _versions(case: Case) -> list[dict[str, Any]]:
    admin = case.server.boto3_client()
    versions: list[dict[str, Any]] = admin.list_object_versions(Bucket=case.bucket).get(
        "Versions", []
    )
    return versions


def _bucket_policy(server: S3Server, bucket: str, sid: str, condition: dict[str, Any]) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": sid, "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition,
            }
        ],
    }  # fmt: skip
    server.boto3_client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def test_wrong_secret_is_named_invalid_credentials(
    seaweedfs: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A wrong secret key: 'invalid or expired credentials', which one, and the settings."""
    case = Case(tmp_path, seaweedfs, seaweedfs.make_bucket())
    words = ["invalid or expired credentials", "secret access key", "destination.access_key_id"]
    _fails_then_recovers(
        capsysbinary, case, {"secret_access_key": "x" * 36}, os.EX_UNAVAILABLE, words
    )


def test_unknown_access_key_is_named_invalid_credentials(
    seaweedfs: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """An access key the server does not know is not reported as a missing permission."""
    case = Case(tmp_path, seaweedfs, seaweedfs.make_bucket())
    words = ["invalid or expired credentials", "access key id is not known"]
    _fails_then_recovers(
        capsysbinary, case, {"access_key_id": "AKIDNOSUCHKEY"}, os.EX_UNAVAILABLE, words
    )


def test_bad_session_token_is_named(
    moto_iam: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A session token that does not belong to the keys: 'session token', not 'denied'."""
    case = Case(tmp_path, moto_iam, moto_iam.make_bucket())
    words = ["invalid or expired credentials", "session token"]
    _fails_then_recovers(
        capsysbinary, case, {"session_token": "not-a-token"}, os.EX_UNAVAILABLE, words
    )


def test_read_only_identity_fails_check_naming_the_action(
    moto_iam: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Read-only credentials fail `check` (not the first upload), naming s3:PutObject."""
    bucket = moto_iam.make_bucket()
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketVersioning"],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    }  # fmt: skip
    key, secret = iam_identity(moto_iam, read_only)
    case = Case(tmp_path, moto_iam, bucket)
    words = ["CreateMultipartUpload", "grant the archiver's identity s3:PutObject"]
    broken = {"access_key_id": key, "secret_access_key": secret}
    _fails_then_recovers(capsysbinary, case, broken, os.EX_UNAVAILABLE, words)


def test_bucket_policy_requiring_sse_kms_is_named(
    seaweedfs: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A bucket policy denying PUTs without SSE-KMS: the statement, header and setting."""
    bucket = seaweedfs.make_bucket()
    _bucket_policy(
        seaweedfs, bucket, "DenyUnencrypted",
        {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
    )  # fmt: skip
    case = Case(tmp_path, seaweedfs, bucket)
    words = ["'DenyUnencrypted'", "s3:x-amz-server-side-encryption", "destination.sse_kms_key_id"]
    # SeaweedFS has no KMS, so the repair here is on the bucket side (the policy goes).
    repair = lambda: seaweedfs.boto3_client().delete_bucket_policy(Bucket=bucket)  # noqa: E731
    _fails_then_recovers(capsysbinary, case, {}, os.EX_UNAVAILABLE, words, repair=repair)


def test_bucket_policy_requiring_an_acl_is_named(
    seaweedfs: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A bucket policy requiring bucket-owner-full-control names destination.acl."""
    bucket = seaweedfs.make_bucket()
    _bucket_policy(
        seaweedfs, bucket, "OwnerMustOwn",
        {"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
    )  # fmt: skip
    case = Case(tmp_path, seaweedfs, bucket)
    words = ["'OwnerMustOwn'", "s3:x-amz-acl", "destination.acl"]
    # SeaweedFS also applies the condition to UploadPart (which carries no ACL header), so
    # its multipart uploads cannot meet it: the repair is on the bucket side.
    repair = lambda: seaweedfs.boto3_client().delete_bucket_policy(Bucket=bucket)  # noqa: E731
    _fails_then_recovers(capsysbinary, case, {}, os.EX_UNAVAILABLE, words, repair=repair)


def test_sse_kms_on_a_server_without_kms_fails_check_and_is_not_retried(
    seaweedfs: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """SSE-KMS where the server cannot encrypt: a permanent 'kms' failure, named at check."""
    case = Case(tmp_path, seaweedfs, seaweedfs.make_bucket())
    words = ["SSE-KMS key 'alias/archive'", "destination.sse_kms_key_id"]
    _fails_then_recovers(
        capsysbinary, case, {"sse_kms_key_id": "alias/archive"}, os.EX_UNAVAILABLE, words
    )


def test_kms_access_denied_for_client_side_wrap(
    moto_iam: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """encryption.wrap = 'kms' with S3 rights but no kms:Encrypt: exit 77, 'kms:Encrypt'."""
    bucket = moto_iam.make_bucket()
    kms_key = moto_iam.boto3_client("kms").create_key()["KeyMetadata"]["Arn"]
    s3_only: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    with_kms = {
        **s3_only,
        "Statement": [
            *s3_only["Statement"],
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"},
        ],
    }  # fmt: skip (Decrypt: for `get`)
    denied, allowed = iam_identity(moto_iam, s3_only), iam_identity(moto_iam, with_kms)
    encryption = {"wrap": "kms", "kms_key_id": kms_key,
                  "kms_endpoint_url": moto_iam.endpoint_url, "kms_region": "us-east-1"}  # fmt: skip
    case = Case(tmp_path, moto_iam, bucket)
    _fails_then_recovers(
        capsysbinary, case,
        {"access_key_id": denied[0], "secret_access_key": denied[1], "encryption": encryption},
        os.EX_NOPERM, ["KMS access denied", "kms:Encrypt"],
        fixed={"access_key_id": allowed[0], "secret_access_key": allowed[1],
               "encryption": encryption},
    )  # fmt: skip


def test_missing_bucket_is_named(
    seaweedfs: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A bucket that does not exist: 'create the bucket'."""
    case = Case(tmp_path, seaweedfs, seaweedfs.make_bucket())
    missing = {"url": "s3://no-such-bucket-archiverd/prod/"}
    _fails_then_recovers(
        capsysbinary, case, missing, os.EX_UNAVAILABLE, ["NoSuchBucket", "create the bucket"]
    )


def test_versioning_off_is_named(
    seaweedfs: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """An unversioned bucket: the put-bucket-versioning command to run."""
    unversioned = seaweedfs.make_bucket(versioned=False)
    case = Case(tmp_path, seaweedfs, seaweedfs.make_bucket())
    _fails_then_recovers(
        capsysbinary, case, {"url": f"s3://{unversioned}/prod/"}, os.EX_UNAVAILABLE,
        ["versioning never enabled", "put-bucket-versioning"],
    )  # fmt: skip
