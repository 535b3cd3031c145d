"""deploy/kubernetes: manifests parse, mount logs read-only (the sidecar's writable only to
delete archived files), probe the real endpoints, load."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from archiverd import __version__
from archiverd.config import Settings, load_settings
from tests.deploy.tools import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
# Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29.
KUBERNETES_VERSION = "1.30.0"


def _documents(name: str) -> dict[str, dict[str, Any]]:
    """The manifest's objects by kind (each kind appears once in our examples)."""
    docs = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]
    kinds = [doc["kind"] for doc in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {doc["kind"]: doc for doc in docs}


def _archiver(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    found: list[dict[str, Any]] = [c for c in containers if c["name"] == "archiverd"]
    assert len(found) == 1
    return found[0]


CASES = [
    ("daemonset.yaml", "DaemonSet"),
    ("sidecar.yaml", "Deployment"),
]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_probes_hit_healthz_and_readyz(name: str, kind: str, tmp_path: Path) -> None:
    """Liveness probes /healthz and readiness /readyz on the port archiverd listens on."""
    docs = _documents(name)
    container = _archiver(docs[kind]["spec"]["template"]["spec"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == 9464
    assert container["image"] == f"archiverd:{__version__}"
    settings = _config(docs, tmp_path)
    assert settings.http.listen == "0.0.0.0:9464"


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_security_context_is_locked_down(name: str, kind: str) -> None:
    """No privilege escalation, read-only root, all capabilities dropped but DAC_READ_SEARCH."""
    pod = _documents(name)[kind]["spec"]["template"]["spec"]
    context = _archiver(pod)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context.get("privileged", False) is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"].get("add", [])) <= {"DAC_READ_SEARCH"}
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False


def test_daemonset_mounts_node_logs_read_only() -> None:
    """The DaemonSet mounts /var/log/pods and /var/lib/docker/containers read-only from the host."""
    pod = _documents("daemonset.yaml")["DaemonSet"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _archiver(pod)["volumeMounts"]}
    for path in ("/var/log/pods", "/var/lib/docker/containers"):
        mount = mounts[path]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["hostPath"]["path"] == path
    state = mounts["/var/lib/archiverd"]
    assert volumes[state["name"]]["hostPath"]["path"] == "/var/lib/archiverd"
    assert pod["terminationGracePeriodSeconds"] >= 60


def test_sidecar_mounts_shared_volume_writable_only_to_delete() -> None:
    """The sidecar is a native sidecar, non-root; it may write the app's volume only because
    its config deletes archived rotated files there (and only there)."""
    docs = _documents("sidecar.yaml")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    archiver = _archiver(pod)
    assert archiver["restartPolicy"] == "Always"  # a native sidecar outlives the app
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    mounts = {m["name"]: m for m in archiver["volumeMounts"]}
    config = tomllib.loads(docs["ConfigMap"]["data"]["archiverd.toml"])
    [source] = config["sources"]
    assert source["delete_after_upload"] is True
    assert mounts["app-logs"]["readOnly"] is False
    assert mounts["config"]["readOnly"] is True
    assert mounts["key"]["readOnly"] is True
    app = next(c for c in pod["containers"] if c["name"] == "app")
    assert any(m["name"] == "app-logs" for m in app["volumeMounts"])


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_key_comes_from_a_secret_mount(name: str, kind: str, tmp_path: Path) -> None:
    """The master key is a Secret mounted read-only where the config's key_file points."""
    docs = _documents(name)
    pod = docs[kind]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in _archiver(pod)["volumeMounts"]}
    secret = volumes["key"]["secret"]
    assert secret["secretName"] == "archiverd-key"
    assert secret["defaultMode"] & 0o007 == 0
    assert mounts["key"]["readOnly"] is True
    settings = _config(docs, tmp_path)
    assert settings.encryption.key_file == Path(mounts["key"]["mountPath"]) / "archive.key"
    env_names = {e["name"] for e in _archiver(pod).get("env", [])}
    assert not any("KEY" in e.upper() for e in env_names)


def _config(docs: dict[str, dict[str, Any]], tmp_path: Path) -> Settings:
    """Load the ConfigMap's archiverd.toml with archiverd's own settings loader."""
    path = tmp_path / "archiverd.toml"
    path.write_text(docs["ConfigMap"]["data"]["archiverd.toml"])
    return load_settings(path)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_configmap_is_a_valid_archiverd_config(name: str, kind: str, tmp_path: Path) -> None:
    """The embedded archiverd.toml passes archiverd's own validation and names an s3 bucket."""
    docs = _documents(name)
    settings = _config(docs, tmp_path)
    assert settings.destination.url.startswith("s3://")
    assert settings.destination.require_versioning is True
    pod = docs[kind]["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in _archiver(pod)["volumeMounts"]}
    for source in settings.sources:
        assert str(source.path) in mounts
    # The state dir is a mount, or a directory archiverd creates in one (an emptyDir is
    # world-writable, which archiverd refuses as a state dir itself).
    assert str(settings.state.dir) in mounts or str(settings.state.dir.parent) in mounts


@pytest.mark.parametrize("name", [name for name, _ in CASES])
def test_manifests_validate_against_the_kubernetes_api_schemas(name: str) -> None:
    """Every object validates, strictly (unknown fields rejected), against the API's schemas."""
    docs = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "template", "spec", "containers", 0, "securityContxt"], {}),
        (["spec", "template", "spec", "terminationGracePeriodSeconds"], "ninety"),
    ],
)
def test_schema_validation_rejects_a_broken_manifest(path: list[str | int], value: Any) -> None:
    """A misspelt field or a wrongly typed value fails validation: the check can catch drift."""
    daemonset = copy.deepcopy(_documents("daemonset.yaml")["DaemonSet"])
    target: Any = daemonset
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)
