"""An independent, one-shot implementation of the V2/V3 formats for cross-checking the streams."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA512
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from archiverd.pack import Keyring, PackResult, pack_stream

AES_WRAP_AAD = b"AES/GCM/NoPadding"


def pack_bytes(data: bytes, keyring: Keyring, level: int = 1) -> tuple[bytes, PackResult]:
    """pack_stream on bytes."""
    out = io.BytesIO()
    result = pack_stream(io.BytesIO(data), out, keyring, level=level)
    return out.getvalue(), result


def hkdf_keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """Suite 115 key derivation written with cryptography's full HKDF (extract+expand)."""
    derive = HKDF(SHA512(), 32, salt=message_id, info=b"\x00\x73DERIVEKEY").derive(data_key)
    commit = HKDF(SHA512(), 28, salt=message_id, info=b"\x00\x73COMMITKEY").derive(data_key)
    return derive, commit


def unwrap_raw(master: bytes, envelope: dict[str, str]) -> bytes:
    """Open an AES/GCM-wrapped data key the way the docs' keyring snippet does."""
    blob = base64.b64decode(envelope.get("x-amz-3") or envelope["x-amz-key-v2"])
    return AESGCM(master).decrypt(blob[:12], blob[12:], AES_WRAP_AAD)


def open_v3(master: bytes, envelope: dict[str, str], body: bytes) -> bytes:
    """Decrypt a V3 raw-AES object one-shot (no archiverd code involved)."""
    data_key = unwrap_raw(master, envelope)
    content_key, commit = hkdf_keys(data_key, base64.b64decode(envelope["x-amz-i"]))
    assert commit == base64.b64decode(envelope["x-amz-d"])
    return AESGCM(content_key).decrypt(b"\x01" * 12, body, b"\x00\x73")


def seal_v3(master: bytes, kid: str, plaintext: bytes) -> tuple[dict[str, str], bytes]:
    """Write a V3 raw-AES object one-shot, as another S3EC implementation would."""
    data_key, message_id, wrap_iv = os.urandom(32), os.urandom(28), os.urandom(12)
    content_key, commit = hkdf_keys(data_key, message_id)
    wrapped = wrap_iv + AESGCM(master).encrypt(wrap_iv, data_key, AES_WRAP_AAD)
    envelope = {
        "x-amz-c": "115",
        "x-amz-3": base64.b64encode(wrapped).decode(),
        "x-amz-w": "02",
        "x-amz-m": json.dumps({"kid": kid}),
        "x-amz-i": base64.b64encode(message_id).decode(),
        "x-amz-d": base64.b64encode(commit).decode(),
    }
    return envelope, AESGCM(content_key).encrypt(b"\x01" * 12, plaintext, b"\x00\x73")


def seal_v2(master: bytes, kid: str, plaintext: bytes) -> tuple[dict[str, str], bytes]:
    """Write a V2 raw-AES object one-shot (data key used directly, no AAD)."""
    data_key, iv, wrap_iv = os.urandom(32), os.urandom(12), os.urandom(12)
    wrapped = wrap_iv + AESGCM(master).encrypt(wrap_iv, data_key, AES_WRAP_AAD)
    envelope = {
        "x-amz-key-v2": base64.b64encode(wrapped).decode(),
        "x-amz-iv": base64.b64encode(iv).decode(),
        "x-amz-cek-alg": "AES/GCM/NoPadding",
        "x-amz-wrap-alg": "AES/GCM",
        "x-amz-tag-len": "128",
        "x-amz-matdesc": json.dumps({"kid": kid}),
    }
    return envelope, AESGCM(data_key).encrypt(iv, plaintext, None)


def leftovers(directory: Path) -> list[str]:
    """Every entry in `directory` (to prove failures leave no output or temp file)."""
    return sorted(p.name for p in directory.iterdir())
