"""docs/DEPLOY.md: its IAM policies are valid JSON and least-privilege; its files exist."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy.tools import ROOT

DOC = ROOT / "docs" / "DEPLOY.md"


MODES = ["raw-key", "kms-wrap", "sse-kms", "object-lock", "restore-only"]


def iam_policies() -> dict[str, dict[str, Any]]:
    """Every IAM policy block of the doc, by the mode its ``<!-- iam-policy: MODE -->`` names."""
    text = DOC.read_text()
    blocks = re.findall(r"<!-- iam-policy: (\S+) -->\n```json\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == text.count("```json")  # no unlabelled policy
    return {mode: json.loads(block) for mode, block in blocks}


def _policies() -> list[dict[str, Any]]:
    policies = iam_policies()
    return [policies["kms-wrap"], policies["restore-only"]]


def _actions(policy: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def test_doc_has_one_policy_per_mode() -> None:
    """DEPLOY.md carries one IAM policy per mode, valid JSON with unique statement ids."""
    policies = iam_policies()
    assert list(policies) == MODES
    for policy in policies.values():
        assert policy["Version"] == "2012-10-17"
        sids = [statement["Sid"] for statement in policy["Statement"]]
        assert len(sids) == len(set(sids))


def test_daemon_policy_writes_but_never_deletes_or_decrypts_archives() -> None:
    """The daemon may put, HEAD and check versioning; never delete, reconfigure or read back."""
    daemon = _actions(_policies()[0])
    assert {
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:GetBucketVersioning",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
        "s3:ListBucketMultipartUploads",
    } <= daemon
    assert not {a for a in daemon if "Delete" in a or a.startswith("s3:PutBucket") or "*" in a}
    assert "s3:GetObjectVersion" not in daemon
    master_key = [
        s for s in _policies()[0]["Statement"] if s["Sid"] == "ArchiverdClientSideKmsWrapOnly"
    ]
    assert [s["Action"] for s in master_key] == [["kms:Encrypt"]]


def test_restore_policy_is_read_only() -> None:
    """The restore role lists and reads versions and decrypts; it cannot write or delete."""
    restore = _actions(_policies()[1])
    assert restore == {
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "kms:Decrypt",
    }


def test_files_the_doc_lists_exist() -> None:
    """Every deployment file named in the doc's table is in the repository."""
    table = re.findall(r"^\| `([^`]+)`(?:, `([^`]+)`)? \|", DOC.read_text(), flags=re.MULTILINE)
    named = [name for row in table for name in row if "/" in name or "docker" in name.lower()]
    assert len(named) == 8
    for name in named:
        assert (ROOT / name).is_file(), name
