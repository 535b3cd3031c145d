"""Keyrings: key files, systemd credentials, rotation, write-only RSA and KMS hosts."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from archiverd.config import EncryptionSettings, Settings
from archiverd.errors import KeyMaterialError, TamperedError, WrongKeyError
from archiverd.logs import configure_logging
from archiverd.pack import Keyring, load_key_files, load_keyring, unpack_stream
from archiverd.pack.keyring import aes_key_id, check_master_key
from archiverd.service.check import default_checks, run_checks
from tests.pack.helpers import pack_bytes
from tests.servers import S3Server


def write_key(path: Path, key: bytes | None = None, mode: int = 0o600) -> bytes:
    """A base64 key file like `archiverd keygen` writes."""
    key = key if key is not None else os.urandom(32)
    path.write_bytes(base64.b64encode(key) + b"\n")
    path.chmod(mode)
    return key


def unpacks(body: bytes, envelope: dict[str, str], keyring: Keyring) -> bytes:
    out = io.BytesIO()
    unpack_stream(io.BytesIO(body), envelope, out, keyring)
    return out.getvalue()


def test_raw_key_file_loads_and_seals(tmp_path: Path) -> None:
    """encryption.key_file gives a keyring whose id is the key's and which round-trips."""
    key = write_key(tmp_path / "archive.key")
    keyring = load_keyring(EncryptionSettings(key_file=tmp_path / "archive.key"))
    assert keyring.key_id == aes_key_id(key)
    assert key.hex() not in repr(keyring)
    body, result = pack_bytes(b"hello\n", keyring)
    assert unpacks(body, result.envelope, keyring) == b"hello\n"


def test_credentials_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$CREDENTIALS_DIRECTORY/<key_file name> (systemd LoadCredential=) is used when present."""
    creds = tmp_path / "creds"
    creds.mkdir()
    key = write_key(creds / "archive.key", mode=0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    keyring = load_keyring(EncryptionSettings(key_file=tmp_path / "etc" / "archive.key"))
    assert keyring.key_id == aes_key_id(key)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"not base64 at all!!\n", "not a base64 256-bit key"),
        (base64.b64encode(b"short"), "holds 5 bytes, not 32"),
    ],
)
def test_bad_key_file(tmp_path: Path, content: bytes | None, match: str) -> None:
    """A missing or malformed key file is a KeyMaterialError naming the file and the fix."""
    path = tmp_path / "archive.key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyMaterialError, match=match) as caught:
        load_keyring(EncryptionSettings(key_file=path))
    assert str(path) in str(caught.value)


def test_loose_key_file_warns_and_check_fails(tmp_path: Path) -> None:
    """A group/other-readable key still loads with a warning; `archiverd check` fails on it."""
    path = tmp_path / "archive.key"
    key = write_key(path, mode=0o644)
    logs = io.StringIO()
    configure_logging("info", "json", logs)
    try:
        load_keyring(EncryptionSettings(key_file=path))
    finally:
        configure_logging()
    record = json.loads(logs.getvalue().splitlines()[0])
    assert record["event"] == "key file readable by others"
    assert record["mode"] == "644"
    assert base64.b64encode(key).decode() not in logs.getvalue()
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        check_master_key(EncryptionSettings(key_file=path))
    path.chmod(0o600)
    assert aes_key_id(key) in check_master_key(EncryptionSettings(key_file=path))


def test_rotation_old_keys_decrypt_only(tmp_path: Path) -> None:
    """After rotation new objects carry the new key id; old ones open via decrypt_key_files."""
    old = write_key(tmp_path / "old.key")
    new = write_key(tmp_path / "new.key")
    old_body, old_result = pack_bytes(b"sealed before rotation\n", Keyring.from_raw_keys(old))
    rotated = load_keyring(
        EncryptionSettings(key_file=tmp_path / "new.key", decrypt_key_files=(tmp_path / "old.key",))
    )
    assert rotated.key_id == aes_key_id(new)
    assert rotated.key_ids == sorted([aes_key_id(new), aes_key_id(old)])
    new_body, new_result = pack_bytes(b"sealed after\n", rotated)
    assert json.loads(new_result.envelope["x-amz-m"]) == {"kid": aes_key_id(new)}
    assert unpacks(old_body, old_result.envelope, rotated) == b"sealed before rotation\n"
    assert unpacks(new_body, new_result.envelope, rotated) == b"sealed after\n"
    with pytest.raises(WrongKeyError, match=aes_key_id(old)):
        unpacks(old_body, old_result.envelope, Keyring.from_raw_keys(new))


def rsa_pair(tmp_path: Path) -> tuple[Path, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = tmp_path / "private.pem"
    private_pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_pem.chmod(0o600)
    public_pem = tmp_path / "public.pem"
    public_pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_pem, private_pem


def test_rsa_public_key_host_is_write_only(tmp_path: Path) -> None:
    """With only the public key a host packs but cannot unpack; the private key reads it."""
    public_pem, private_pem = rsa_pair(tmp_path)
    writer = load_keyring(EncryptionSettings(wrap="rsa-oaep", public_key_file=public_pem))
    assert not writer.can_read
    body, result = pack_bytes(b"write-only host log\n", writer)
    assert result.envelope["x-amz-w"] == "22"
    assert json.loads(result.envelope["x-amz-m"]) == {"kid": writer.key_id}
    with pytest.raises(WrongKeyError, match=writer.key_id):
        unpacks(body, result.envelope, writer)
    reader = load_key_files([private_pem])
    assert reader.key_ids == [writer.key_id]
    assert unpacks(body, result.envelope, reader) == b"write-only host log\n"
    assert load_key_files([public_pem]).key_id == writer.key_id
    tampered = dict(result.envelope)
    blob = bytearray(base64.b64decode(tampered["x-amz-3"]))
    blob[100] ^= 1
    tampered["x-amz-3"] = base64.b64encode(bytes(blob)).decode()
    with pytest.raises(TamperedError, match="does not decrypt under RSA key"):
        unpacks(body, tampered, reader)


def test_wrap_code_changed_to_other_key_type_is_tampering(tmp_path: Path) -> None:
    """x-amz-w changed from AES/GCM to RSA for a known AES key id is tampering, not wrong key."""
    keyring = Keyring.from_raw_keys(os.urandom(32))
    body, result = pack_bytes(b"x\n", keyring)
    envelope = dict(result.envelope, **{"x-amz-w": "22"})
    with pytest.raises(TamperedError, match="x-amz-w says RSA-OAEP-SHA1"):
        unpacks(body, envelope, keyring)


@pytest.fixture
def kms_key(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh KMS key on moto; credentials in the environment as on a real host."""
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    response: dict[str, Any] = moto_server.boto3_client("kms").create_key()
    return str(response["KeyMetadata"]["Arn"])


@pytest.mark.s3
@pytest.mark.slow
def test_kms_roundtrip_and_context(moto_server: S3Server, kms_key: str) -> None:
    """kms mode wraps through KMS Encrypt with the S3EC context and unwraps via Decrypt."""
    encryption = EncryptionSettings(
        wrap="kms",
        kms_key_id=kms_key,
        kms_endpoint_url=moto_server.endpoint_url,
        kms_region=moto_server.region,
    )
    keyring = load_keyring(encryption)
    assert keyring.key_id == kms_key
    body, result = pack_bytes(b"kms sealed\n" * 1000, keyring)
    assert result.envelope["x-amz-w"] == "12"
    assert json.loads(result.envelope["x-amz-t"]) == {"aws:x-amz-cek-alg": "115"}
    assert "x-amz-m" not in result.envelope
    assert unpacks(body, result.envelope, keyring) == b"kms sealed\n" * 1000
    assert "Encrypt works" in check_master_key(encryption)
    with pytest.raises(WrongKeyError, match="wrapped by AWS KMS"):
        unpacks(body, result.envelope, Keyring.from_raw_keys(os.urandom(32)))


@pytest.mark.s3
@pytest.mark.slow
def test_kms_without_access_is_a_key_error(moto_server: S3Server) -> None:
    """An unknown KMS key fails packing with KeyMaterialError naming the key and the fix."""
    keyring = load_keyring(
        EncryptionSettings(wrap="kms", kms_key_id="arn:aws:kms:us-east-1:123456789012:key/nope"),
        kms_client_factory=lambda: moto_server.boto3_client("kms"),
    )
    with pytest.raises(KeyMaterialError, match="kms:Encrypt"):
        pack_bytes(b"x", keyring)


def test_archiverd_check_runs_master_key_check(tmp_path: Path) -> None:
    """`archiverd check` includes the master key: a missing key fails with exit 77."""
    checks = [check for check in default_checks() if check[0] == "master key"]
    assert len(checks) == 1
    settings = Settings(encryption=EncryptionSettings(key_file=tmp_path / "missing.key"))
    out = io.StringIO()
    assert run_checks(settings, checks, out) == 77
    assert "FAIL master key" in out.getvalue()
    assert "missing.key" in out.getvalue()
    write_key(tmp_path / "missing.key")
    out = io.StringIO()
    assert run_checks(settings, checks, out) == 0
    assert "ok   master key: raw AES key aes256:" in out.getvalue()


def test_read_only_keyring_cannot_seal(tmp_path: Path) -> None:
    """A keyring of only an RSA private key opens archives but refuses to seal new ones."""
    public_pem, private_pem = rsa_pair(tmp_path)
    writer = load_keyring(
        EncryptionSettings(
            wrap="rsa-oaep", public_key_file=public_pem, decrypt_key_files=(private_pem,)
        )
    )
    body, result = pack_bytes(b"restore host\n", writer)
    assert unpacks(body, result.envelope, writer) == b"restore host\n"
    reader = load_key_files([private_pem])
    assert reader.key_id == ""
    with pytest.raises(KeyMaterialError, match="no active key to seal with"):
        pack_bytes(b"x", reader)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "is not a regular file"),
        ("dev_zero", "is not a regular file"),
        ("directory", "is not a regular file"),
        ("huge", "larger than 16 KiB"),
        ("unreadable", "Permission denied"),
    ],
)
def test_hostile_key_file_is_refused_at_once(tmp_path: Path, kind: str, message: str) -> None:
    """A FIFO, /dev/zero, a directory, a huge or an unreadable key file: `run` and `unpack`
    exit 77 within seconds (no hang, no MemoryError, no traceback), naming the file; no state
    is created."""
    import subprocess
    import sys

    from tests.service.test_daemon_process import archiverd_env

    if kind == "fifo":
        key = tmp_path / "archive.key"
        os.mkfifo(key, 0o600)
    elif kind == "dev_zero":
        key = Path("/dev/zero")
    elif kind == "directory":
        key = tmp_path / "keydir"
        key.mkdir(mode=0o700)
    elif kind == "huge":
        key = tmp_path / "huge.key"
        key.write_bytes(b"A" * (1 << 20))
        key.chmod(0o600)
    else:
        key = Path("/proc/sys/vm/drop_caches")  # write-only, even for root
    (tmp_path / "run").mkdir()
    env = archiverd_env(tmp_path / "run")
    env["ARCHIVERD_ENCRYPTION__KEY_FILE"] = str(key)
    for args in (["run", "--once"], ["unpack", "--key-file", str(key), "-", "-"]):
        result = subprocess.run(
            [sys.executable, "-m", "archiverd", *args],
            env=env,
            input=b"",
            capture_output=True,
            timeout=30,
            check=False,
        )
        err = result.stderr.decode()
        assert result.returncode == 77, err
        assert message in err
        assert str(key) in err
        assert "Traceback" not in err
    assert not (tmp_path / "run" / "state").exists()
