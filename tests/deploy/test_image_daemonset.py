"""The real image as deploy/kubernetes/daemonset.yaml runs it: uid 0 with only DAC_READ_SEARCH,
read-only root, the node's Docker containers directory mounted read-only, uploading to S3."""

from __future__ import annotations

import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.deploy import live
from tests.deploy.test_kubernetes import _archiver, _documents
from tests.dockerd import DockerDaemon

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.s3]

# The ConfigMap's commented-out block for Docker nodes, and the same block switched on.
DOCKER_SOURCE_OFF = '# [[sources]]\n# kind = "docker"\n# path = "/var/lib/docker/containers"'
DOCKER_SOURCE_ON = '[[sources]]\nkind = "docker"\npath = "/var/lib/docker/containers"'


def security_flags(container: dict[str, Any]) -> list[str]:
    """`docker run` flags for a Kubernetes container securityContext (the parts docker has)."""
    context = container["securityContext"]
    flags = ["--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
    flags += [f"--cap-drop={cap}" for cap in context["capabilities"]["drop"]]
    flags += [f"--cap-add={cap}" for cap in context["capabilities"].get("add", [])]
    if context["readOnlyRootFilesystem"]:
        flags += ["--read-only", "--tmpfs", "/tmp"]
    if context["allowPrivilegeEscalation"] is False:
        flags += ["--security-opt", "no-new-privileges"]
    assert context.get("privileged", False) is False
    return flags


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return int(answer.status) == 200
    except OSError:
        return False


def _bytes_read(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return live.metric_total(answer.read().decode(), "archiverd_source_bytes_read_total")


def test_daemonset_archives_the_nodes_docker_logs(
    dockerd: DockerDaemon,
    archiverd_image: str,
    seaweedfs: servers.S3Server,
    tmp_path: Path,
) -> None:
    """As the manifest runs it, the image archives a node's container log; it restores exactly."""
    docs = _documents("daemonset.yaml")
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    container = _archiver(pod)
    config_text = docs["ConfigMap"]["data"]["archiverd.toml"]
    assert DOCKER_SOURCE_OFF in config_text
    config = tmp_path / "archiverd.toml"
    config.write_text(config_text.replace(DOCKER_SOURCE_OFF, DOCKER_SOURCE_ON))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    keys = tmp_path / "keys"
    key = live.keygen(keys / "archive.key")
    key.chmod(0o400)  # the Secret's defaultMode
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    pods = tmp_path / "pods"
    pods.mkdir()
    bucket = seaweedfs.make_bucket()
    port = servers.free_port()

    app = dockerd.run_container(
        'i=0; while [ $i -lt 300 ]; do echo "node app line $i"; i=$((i+1)); done',
        detach=False,
    )
    expected = dockerd.log_path(app).read_bytes()
    assert expected.count(b"\n") == 300

    name = f"archiverd-node-{secrets.token_hex(4)}"
    env = {
        "ARCHIVERD_HOST": "node-a",  # the manifest sets it from spec.nodeName
        # Host networking on a shared machine: a free loopback port instead of 0.0.0.0:9464.
        "ARCHIVERD_HTTP__LISTEN": f"127.0.0.1:{port}",
        "ARCHIVERD_DESTINATION__URL": f"s3://{bucket}/k8s/",
        "ARCHIVERD_DESTINATION__ENDPOINT_URL": seaweedfs.endpoint_url,
        "ARCHIVERD_SCHEDULE__UPLOAD_AT": live.NEVER,
        "ARCHIVERD_SCHEDULE__SPLAY_SECONDS": "0",
        **seaweedfs.env(),  # stands in for IRSA / Pod Identity
    }
    try:
        dockerd.docker(
            "run", "--detach", "--name", name, "--network", "host",
            *security_flags(container),
            "--volume", f"{config}:{mounts['config']}:ro",
            "--volume", f"{keys}:{mounts['key']}:ro",
            "--volume", f"{pods}:/var/log/pods:ro",
            "--volume", f"{dockerd.containers_dir}:/var/lib/docker/containers:ro",
            "--volume", f"{state}:/var/lib/archiverd",
            "--stop-timeout", str(pod["terminationGracePeriodSeconds"]),
            *(arg for item in env.items() for arg in ("--env", "=".join(item))),
            archiverd_image, *container["args"],
        )  # fmt: skip
        live.wait_for("the daemon is ready", lambda: _ready(port))
        live.wait_for("the app's log is read", lambda: _bytes_read(port) >= len(expected))
        dockerd.docker("stop", "--time", str(pod["terminationGracePeriodSeconds"]), name)
        logs = live.logs(dockerd, name)
        assert live.container_state(dockerd, name)["ExitCode"] == 0, logs
        assert "shutdown complete" in logs
    finally:
        dockerd.docker("rm", "--force", name, check=False)

    restore_env = {**seaweedfs.env(), "ARCHIVERD_DESTINATION__ENDPOINT_URL": seaweedfs.endpoint_url}
    segments = live.restore(
        f"s3://{bucket}/k8s/", key, tmp_path / "restored", "--container", app[:12], **restore_env
    )
    assert b"".join(path.read_bytes() for path in segments) == expected
    assert {path.stat().st_uid for path in state.iterdir()} == {0}  # the journal, as uid 0
