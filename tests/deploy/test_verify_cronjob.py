"""deploy/kubernetes/verify-cronjob.yaml: a monthly `archiverd verify` with read-only rights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from archiverd.cli import build_parser
from archiverd.config import load_settings
from tests.deploy.tools import ROOT

MANIFEST = ROOT / "deploy" / "kubernetes" / "verify-cronjob.yaml"


def _documents() -> dict[str, dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    return {doc["kind"]: doc for doc in docs}


def test_monthly_verify_with_json_output_that_fails_the_job_on_findings(tmp_path: Path) -> None:
    """Once a month, `verify --since 35d --json` (a valid command line), never retried."""
    cron = _documents()["CronJob"]["spec"]
    assert cron["schedule"].split()[2:] == ["2", "*", "*"]
    assert cron["concurrencyPolicy"] == "Forbid"
    job = cron["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    [container] = job["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.json, args.since) == ("verify", True, "35d")
    config = tmp_path / "archiverd.toml"
    config.write_text(_documents()["ConfigMap"]["data"]["archiverd.toml"])
    settings = load_settings(config)
    assert settings.destination.url.startswith("s3://")
    assert str(args.config) == container["volumeMounts"][0]["mountPath"]


def test_runs_locked_down_with_a_read_only_key_and_no_write_role() -> None:
    """Non-root, read-only root fs, no capabilities; the key is a read-only Secret mount; its
    ServiceAccount is its own (never the daemon's write role)."""
    docs = _documents()
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] != "archiverd"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["key"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["key"]["secret"]["defaultMode"] & 0o007 == 0
    assert not any("KEY" in e["name"].upper() for e in container.get("env", []))
