"""docs/DEPLOY.md's IAM policies, live: `check` passes with exactly each, fails without any action.

The server is moto with IAM enforced (`tests.servers.start_moto_iam`): every request is
authorised against the calling user's policies. The doc's placeholders are replaced with the
test's bucket; key ARNs become ``*`` because moto authorises KMS calls against resource ``*``.
"""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from archiverd.config import Settings
from archiverd.service.check import run_checks
from tests.deploy.test_deploy_doc import iam_policies
from tests.pack.test_keyring import write_key
from tests.restore.cli import run
from tests.servers import S3Server, iam_identity

pytestmark = [pytest.mark.s3, pytest.mark.slow]

# S3 calls KMS itself for SSE-KMS (kms:ViaService); moto does not model those calls, so only
# the S3 actions of that block can be shown to be needed here.
_NOT_MODELLED = {
    "sse-kms": {"kms:GenerateDataKey", "kms:Decrypt"},
    # moto authorises a PUT or multipart create carrying Object Lock headers as s3:PutObject
    # alone and does not authorise GetObjectLockConfiguration; AWS asks for both actions,
    # so the doc keeps them.
    "object-lock": {"s3:PutObjectRetention", "s3:GetBucketObjectLockConfiguration"},
}


def _placed(policy: dict[str, Any], bucket: str) -> dict[str, Any]:
    text = json.dumps(policy).replace("my-log-archive", bucket)
    placed: dict[str, Any] = json.loads(text)
    for statement in placed["Statement"]:
        resources = statement["Resource"]
        if "arn:aws:kms" in json.dumps(resources):
            statement["Resource"] = "*"
    return placed


def _without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    reduced = copy.deepcopy(policy)
    statements = []
    for statement in reduced["Statement"]:
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        statement["Action"] = [a for a in actions if a != action]
        if statement["Action"]:
            statements.append(statement)
    reduced["Statement"] = statements
    return reduced


def _actions(policy: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for statement in policy["Statement"]:
        actions = statement["Action"]
        found += [actions] if isinstance(actions, str) else actions
    return found


def _settings(
    server: S3Server, bucket: str, keys: tuple[str, str], mode: str, tmp_path: Path
) -> Settings:
    key_file = tmp_path / "archive.key"
    if not key_file.exists():
        write_key(key_file)
    encryption: dict[str, Any] = {"key_file": key_file}
    destination: dict[str, Any] = {
        "url": f"s3://{bucket}/prod/", "endpoint_url": server.endpoint_url,
        "addressing_style": "path", "access_key_id": keys[0], "secret_access_key": keys[1],
    }  # fmt: skip
    if mode == "kms-wrap":
        kms_key = server.boto3_client("kms").create_key()["KeyMetadata"]["Arn"]
        encryption.update(
            wrap="kms", kms_key_id=kms_key, kms_endpoint_url=server.endpoint_url,
            kms_region=server.region,
        )  # fmt: skip
    if mode == "object-lock":
        destination.update(object_lock_mode="GOVERNANCE", object_lock_days=1)
    if mode == "sse-kms":
        destination["sse_kms_key_id"] = server.boto3_client("kms").create_key()["KeyMetadata"][
            "Arn"
        ]
    return Settings(
        host="node-1",
        destination=destination,
        encryption=encryption,
        state={"dir": tmp_path / "state"},
    )


def _check(server: S3Server, bucket: str, policy: dict[str, Any], mode: str, tmp: Path) -> str:
    keys = iam_identity(server, policy)
    out = io.StringIO()
    code = run_checks(_settings(server, bucket, keys, mode, tmp), out=out)
    return f"{code}\n{out.getvalue()}"


@pytest.mark.parametrize("mode", ["raw-key", "kms-wrap", "sse-kms", "object-lock"])
def test_check_needs_exactly_the_documented_policy(
    moto_iam: S3Server, tmp_path: Path, mode: str
) -> None:
    """`check` passes with the doc's policy for the mode and fails with any action removed."""
    bucket = moto_iam.make_bucket()
    if mode == "object-lock":
        moto_iam.boto3_client().put_object_lock_configuration(
            Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
        )
    policy = _placed(iam_policies()[mode], bucket)
    passed = _check(moto_iam, bucket, policy, mode, tmp_path)
    assert passed.startswith("0\n"), passed
    assert re.search(r"^(\d+) of \1 checks passed$", passed, re.M), passed
    no_object_left = moto_iam.boto3_client().list_object_versions(Bucket=bucket)
    assert "Versions" not in no_object_left
    assert moto_iam.boto3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    removable = [a for a in _actions(policy) if a not in _NOT_MODELLED.get(mode, set())]
    assert len(removable) >= 7
    for action in removable:
        failed = _check(moto_iam, bucket, _without(policy, action), mode, tmp_path)
        assert not failed.startswith("0\n"), f"{action} removed, yet:\n{failed}"
        assert "FAIL" in failed


def _restore_config(
    tmp: Path, server: S3Server, bucket: str, keys: tuple[str, str], kms_key: str
) -> Path:
    logs = tmp / "logs"
    if not logs.exists():
        logs.mkdir()
        (logs / "app.log").write_text("".join(line + "\n" for line in LINES))
    config = tmp / f"{keys[0]}.toml"
    config.write_text(
        "host = 'node-1'\n"
        f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n'
        f"[state]\ndir = '{tmp / 'state'}'\n[http]\nlisten = ''\n"
        f"[destination]\nurl = 's3://{bucket}/prod/'\nendpoint_url = '{server.endpoint_url}'\n"
        f"addressing_style = 'path'\naccess_key_id = '{keys[0]}'\n"
        f"secret_access_key = '{keys[1]}'\nmax_attempts = 1\n"
        f"[encryption]\nwrap = 'kms'\nkms_key_id = '{kms_key}'\n"
        f"kms_endpoint_url = '{server.endpoint_url}'\nkms_region = 'us-east-1'\n"
    )
    return config


LINES = [f"2026-11-23T09:00:0{i}Z line {i}" for i in range(3)]


def test_restore_needs_exactly_the_documented_policy(
    moto_iam: S3Server, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """`ls` and `get` (KMS-wrapped archive) work with the restore-only policy, and fail with
    any one action removed."""
    bucket = moto_iam.make_bucket()
    kms_key = moto_iam.boto3_client("kms").create_key()["KeyMetadata"]["Arn"]
    keys = (moto_iam.access_key, moto_iam.secret_key)
    admin = _restore_config(tmp_path, moto_iam, bucket, keys, kms_key)
    assert run(capsysbinary, "run", "--config", str(admin), "--once", "--seal-open").code == 0
    policy = _placed(iam_policies()["restore-only"], bucket)

    def restores(reduced: dict[str, Any]) -> bool:
        identity = iam_identity(moto_iam, reduced)
        config = _restore_config(tmp_path, moto_iam, bucket, identity, kms_key)
        listed = run(capsysbinary, "ls", "--config", str(config), "--versions")
        got = run(capsysbinary, "get", "--config", str(config), "--out", "-")
        return (listed.code, got.code, got.out.decode().splitlines()) == (0, 0, LINES)

    assert restores(policy)  # archived with encryption.wrap = "kms": `get` needs kms:Decrypt
    for action in _actions(policy):
        assert not restores(_without(policy, action)), f"{action} removed, yet restore works"
