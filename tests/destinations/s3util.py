"""Helpers for S3 destination tests: a destination on a test server, and the aws CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from archiverd.config import DestinationSettings
from archiverd.destinations.s3 import S3Destination
from tests.servers import S3Server

MIB = 1024 * 1024
AWS = "/usr/bin/aws"


def s3_destination(
    server: S3Server, bucket: str, prefix: str = "arch/", *, endpoint_url: str | None = None,
    session: Any = None, **settings: Any,
) -> S3Destination:  # fmt: skip
    """An S3Destination with the server's static credentials (8 MiB parts unless told)."""
    values: dict[str, Any] = {
        "url": f"s3://{bucket}/{prefix}",
        "endpoint_url": endpoint_url or server.endpoint_url,
        "region": server.region,
        "addressing_style": "path",
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "multipart_threshold_bytes": 8 * MIB,
        "part_size_bytes": 8 * MIB,
        "read_timeout_seconds": 20.0,
    }
    values.update(settings)
    config = DestinationSettings(**values)
    return S3Destination(config.url, config, session=session)


def aws(server: S3Server, *args: str) -> Any:
    """Run the independent aws CLI against `server`; parsed JSON output (None when empty)."""
    if not os.path.exists(AWS) and shutil.which("aws") is None:
        pytest.skip("the aws CLI (Debian awscli) is not installed and could not be")
    env = {**os.environ, **server.env()}
    done = subprocess.run(
        [AWS if os.path.exists(AWS) else "aws", "--endpoint-url", server.endpoint_url,
         "--output", "json", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def versions_of(server: S3Server, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """Every object version under `prefix`, as the aws CLI lists them."""
    answer = aws(server, "s3api", "list-object-versions", "--bucket", bucket, "--prefix", prefix)
    return list((answer or {}).get("Versions", []))


def incomplete_uploads(server: S3Server, bucket: str) -> list[dict[str, Any]]:
    """Multipart uploads not completed nor aborted, as the aws CLI lists them."""
    answer = aws(server, "s3api", "list-multipart-uploads", "--bucket", bucket)
    return list((answer or {}).get("Uploads", []) or [])
