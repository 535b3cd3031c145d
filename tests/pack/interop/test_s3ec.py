"""Interop with the official AWS S3 Encryption Client 4.0 (own virtualenv, run as a child).

archiverd -> official client: objects archiverd packed, PUT with their envelope as metadata
on real SeaweedFS, are fetched and decrypted by the official client (AES, RSA, KMS on moto).
official client -> archiverd: objects the official client PUT with KMS on moto unpack here.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from archiverd.config import EncryptionSettings
from archiverd.errors import TamperedError
from archiverd.pack import Keyring, load_key_files, load_keyring, unpack_stream
from tests.pack.dockerlogs import bulk_log
from tests.pack.helpers import pack_bytes
from tests.servers import S3Server

REPO = Path(__file__).resolve().parents[3]
S3EC_PYTHON = REPO / ".venv-s3ec" / "bin" / "python"
CHILD = Path(__file__).with_name("s3ec_child.py")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.s3,
    pytest.mark.skipif(
        not S3EC_PYTHON.exists(),
        reason=f"{S3EC_PYTHON} is absent: run `scripts/setup --test` to create the "
        "official S3 Encryption Client's virtualenv",
    ),
]


def conf(server: S3Server) -> dict[str, str]:
    return {
        "endpoint_url": server.endpoint_url,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
    }


def official(tmp_path: Path, request: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run the official client in its own virtualenv with a JSON request file."""
    path = tmp_path / f"request-{os.urandom(4).hex()}.json"
    path.write_text(json.dumps(request))
    return subprocess.run(
        [str(S3EC_PYTHON), str(CHILD), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": os.environ["PATH"], "AWS_EC2_METADATA_DISABLED": "true"},
    )


def put_packed(server: S3Server, data: bytes, keyring: Keyring) -> tuple[str, str, bytes]:
    """Pack with archiverd and PUT body + envelope (the way the uploader stores segments)."""
    body, result = pack_bytes(data, keyring)
    bucket = server.make_bucket()
    metadata = {**result.envelope, "archiverd-key-id": result.key_id}
    server.boto3_client().put_object(
        Bucket=bucket,
        Key="host/2026/11/23/c1/seg.log.gz.enc",
        Body=body,
        Metadata=metadata,
        ChecksumSHA256=result.packed_sha256_b64,
    )
    return bucket, "host/2026/11/23/c1/seg.log.gz.enc", body


def official_get(tmp_path: Path, server: S3Server, bucket: str, key: str, **extra: Any) -> bytes:
    out = tmp_path / "official.out"
    request = {
        "op": "get",
        "s3": conf(server),
        "bucket": bucket,
        "key": key,
        "out": str(out),
        "docs": str(REPO / "docs" / "FORMAT.md"),
    }
    done = official(tmp_path, {**request, **extra})
    assert done.returncode == 0, done.stderr
    return gzip.decompress(out.read_bytes())


def test_official_client_reads_raw_aes(tmp_path: Path, seaweedfs: S3Server) -> None:
    """The official client with the AES keyring from docs/FORMAT.md decrypts a V3 object."""
    master = os.urandom(32)
    key_file = tmp_path / "archive.key"
    key_file.write_bytes(base64.b64encode(master))
    data = bulk_log(2_500_000)
    bucket, key, _ = put_packed(seaweedfs, data, Keyring.from_raw_keys(master))
    assert official_get(tmp_path, seaweedfs, bucket, key, mode="aes", key_file=str(key_file)) == (
        data
    )


def test_official_client_rejects_tampered_object(tmp_path: Path, seaweedfs: S3Server) -> None:
    """The official client also refuses an archiverd object with one flipped body bit."""
    master = os.urandom(32)
    key_file = tmp_path / "archive.key"
    key_file.write_bytes(base64.b64encode(master))
    body, result = pack_bytes(bulk_log(100_000), Keyring.from_raw_keys(master))
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 1
    bucket = seaweedfs.make_bucket()
    seaweedfs.boto3_client().put_object(
        Bucket=bucket, Key="k", Body=bytes(flipped), Metadata=result.envelope
    )
    request = {"op": "get", "s3": conf(seaweedfs), "bucket": bucket, "key": "k"}
    extra = {"out": str(tmp_path / "o"), "mode": "aes", "key_file": str(key_file)}
    done = official(tmp_path, {**request, **extra, "docs": str(REPO / "docs" / "FORMAT.md")})
    assert done.returncode == 3
    assert "Failed to decrypt" in done.stderr


def test_official_client_reads_rsa_oaep(tmp_path: Path, seaweedfs: S3Server) -> None:
    """A write-only host's RSA-OAEP object opens in the official client with the private key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = tmp_path / "private.pem"
    private_pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = tmp_path / "public.pem"
    public_pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    writer = load_key_files([public_pem])
    assert not writer.can_read
    data = bulk_log(300_000, seed=11)
    bucket, key, _ = put_packed(seaweedfs, data, writer)
    got = official_get(tmp_path, seaweedfs, bucket, key, mode="rsa", key_file=str(private_pem))
    assert got == data


@pytest.fixture
def kms_key(moto_server: S3Server) -> str:
    """A KMS key on moto."""
    response: dict[str, Any] = moto_server.boto3_client("kms").create_key()
    return str(response["KeyMetadata"]["Arn"])


def kms_keyring(moto_server: S3Server, kms_key: str) -> Keyring:
    return load_keyring(
        EncryptionSettings(wrap="kms", kms_key_id=kms_key),
        kms_client_factory=lambda: moto_server.boto3_client("kms"),
    )


def test_official_client_reads_kms(
    tmp_path: Path, seaweedfs: S3Server, moto_server: S3Server, kms_key: str
) -> None:
    """The official client's stock KmsKeyring decrypts archiverd's kms+context object."""
    data = bulk_log(1_000_000, seed=12)
    bucket, key, _ = put_packed(seaweedfs, data, kms_keyring(moto_server, kms_key))
    got = official_get(
        tmp_path, seaweedfs, bucket, key, mode="kms", kms=conf(moto_server), kms_key_id=kms_key
    )
    assert got == data


def test_archiverd_reads_official_kms_object(
    tmp_path: Path, moto_server: S3Server, kms_key: str
) -> None:
    """An object the official client PUT with KMS (on moto) unpacks with archiverd."""
    data = bulk_log(700_000, seed=13)
    source = tmp_path / "segment.gz"
    source.write_bytes(gzip.compress(data, 6))
    bucket = moto_server.make_bucket()
    done = official(
        tmp_path,
        {
            "op": "put",
            "mode": "kms",
            "s3": conf(moto_server),
            "kms": conf(moto_server),
            "kms_key_id": kms_key,
            "bucket": bucket,
            "key": "from-official",
            "in": str(source),
        },
    )
    assert done.returncode == 0, done.stderr
    response = moto_server.boto3_client().get_object(Bucket=bucket, Key="from-official")
    metadata = response["Metadata"]
    assert metadata["x-amz-c"] == "115"
    assert metadata["x-amz-w"] == "12"
    body = response["Body"].read()
    keyring = kms_keyring(moto_server, kms_key)
    out = io.BytesIO()
    result = unpack_stream(io.BytesIO(body), metadata, out, keyring)
    assert out.getvalue() == data
    assert result.plaintext_bytes == len(data)
    changed = dict(metadata, **{"x-amz-t": json.dumps({"aws:x-amz-cek-alg": "114"})})
    with pytest.raises(TamperedError):
        unpack_stream(io.BytesIO(body), changed, io.BytesIO(), keyring)


def test_key_derivation_matches_official(tmp_path: Path) -> None:
    """archiverd's HKDF (content key, commitment) equals the official client's derive_keys."""
    from archiverd.pack.envelope import derive_keys

    data_key, message_id = os.urandom(32), os.urandom(28)
    script = (
        "import sys, base64;"
        "from s3_encryption.key_derivation import derive_keys;"
        "from s3_encryption.materials import AlgorithmSuite;"
        "k, m = (base64.b64decode(a) for a in sys.argv[1:3]);"
        "d, c = derive_keys(k, m, AlgorithmSuite.ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY);"
        "print(base64.b64encode(d).decode(), base64.b64encode(c).decode())"
    )
    done = subprocess.run(
        [
            str(S3EC_PYTHON),
            "-c",
            script,
            base64.b64encode(data_key).decode(),
            base64.b64encode(message_id).decode(),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    derived, commitment = derive_keys(data_key, message_id)
    assert done.stdout.split() == [
        base64.b64encode(derived).decode(),
        base64.b64encode(commitment).decode(),
    ]
