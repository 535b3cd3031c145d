"""Real S3 servers on loopback for the tests: SeaweedFS (`weed mini`) and moto.

Both are started once per test session and shared; each test makes its own bucket with
`S3Server.make_bucket`, so tests never see each other's objects.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "AKIDARCHIVERDTEST"
SECRET_KEY = "archiverd-test-secret-key-0000000000"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def venv_bin(name: str) -> str:
    """A tool installed in the same virtualenv as the running Python."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run scripts/setup")
    return found


@dataclass
class S3Server:
    """A running S3 endpoint with static credentials."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = "us-east-1"
    process: Any = field(default=None, repr=False)
    ports: dict[str, int] = field(default_factory=dict, repr=False)
    """SeaweedFS only: every port it listens on, so it can be restarted on the same ones."""

    def boto3_client(self, service: str = "s3") -> Any:
        """A synchronous botocore client for setting up and checking (not the code under test)."""
        import botocore.session

        session = botocore.session.get_session()
        return session.create_client(
            service,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def make_bucket(self, *, versioned: bool = True) -> str:
        """Create a fresh bucket (versioning on unless told otherwise); return its name."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        client = self.boto3_client()
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (aws CLI, archiverd) that talks to this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def start_seaweedfs(data_dir: Path, *, ports: dict[str, int] | None = None) -> S3Server:
    """Start `weed mini` on free loopback ports (or the given ones); wait until S3 answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "archiverd-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    if ports is None:
        ports = {
            "s3.port": free_port(),
            "s3.port.grpc": free_port(),
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "admin.port": free_port(),
            "admin.port.grpc": free_port(),
        }
    s3_port = ports["s3.port"]
    args = [
        venv_bin("weed"),
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        f"-dir={data_dir / 'data'}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Every bucket (a collection) takes several volumes. Left at 0 the count is free
        # disk / volume size (65 on a 63 GB disk), and a whole session ran out of them
        # ("No writable volumes", InternalError on PUT). Volumes grow as written, so slots
        # cost no disk.
        "-volume.max=1000",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    with (data_dir / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    endpoint = f"http://127.0.0.1:{s3_port}"
    _wait_http(endpoint, process, data_dir / "weed.log")
    return S3Server(endpoint_url=endpoint, process=process, ports=dict(ports))


def kill(server: S3Server) -> None:
    """SIGKILL a SeaweedFS started by this module (a crash: nothing is flushed)."""
    process = server.process
    assert isinstance(process, subprocess.Popen)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def restart_seaweedfs(server: S3Server, data_dir: Path) -> S3Server:
    """Start SeaweedFS again on `server`'s ports and `data_dir` (after `kill` or `stop`)."""
    return start_seaweedfs(data_dir, ports=server.ports)


def start_moto() -> S3Server:
    """Start moto's ThreadedMotoServer (S3, KMS, STS) on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _wait_http(endpoint, None, None)
    return S3Server(endpoint_url=endpoint, process=server)


def start_moto_iam(log_dir: Path) -> S3Server:
    """A `moto_server` process that enforces IAM (``INITIAL_NO_AUTH_ACTION_COUNT``).

    Its first three actions run unauthenticated and make an admin user (policy ``*``) and
    its access key; from then on every request must be signed by a known IAM user and is
    allowed only by that user's policies. The returned server holds the admin's keys.
    """
    import botocore.session

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    log = log_dir / "moto-iam.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # a TCP connect only: an HTTP request would use up an unauthenticated action
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text()[-4000:]
                raise RuntimeError(f"moto_server did not start:\n{text}") from exc
            time.sleep(0.2)
    iam = botocore.session.get_session().create_client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="AKIABOOTSTRAP0000000", aws_secret_access_key="bootstrap",
    )  # fmt: skip
    iam.create_user(UserName="admin")
    iam.put_user_policy(
        UserName="admin", PolicyName="all",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )  # fmt: skip
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    return S3Server(
        endpoint_url=endpoint,
        access_key=key["AccessKeyId"],
        secret_key=key["SecretAccessKey"],
        process=process,
    )


def iam_identity(server: S3Server, policy: dict[str, Any]) -> tuple[str, str]:
    """A fresh IAM user of `server` (a `start_moto_iam` one) with `policy`; its keys."""
    iam = server.boto3_client("iam")
    name = f"u-{uuid.uuid4().hex[:12]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def stop(server: S3Server) -> None:
    """Stop a server started by this module."""
    process = server.process
    if isinstance(process, subprocess.Popen):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    elif process is not None:
        process.stop()


def _wait_http(endpoint: str, process: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            text = log.read_text(errors="replace")[-4000:] if log else ""
            raise RuntimeError(f"S3 server exited with {process.returncode}:\n{text}")
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2)  # noqa: S310 (loopback only)
        except urllib.error.HTTPError:
            return  # any HTTP answer (403 for anonymous) means it is serving
        except OSError:
            time.sleep(0.2)
            continue
        return
    raise RuntimeError(f"S3 server at {endpoint} did not answer within 60 s")
