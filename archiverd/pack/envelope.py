"""The object metadata ("envelope") in the AWS S3 Encryption Client's message format.

archiverd writes V3 (key-committing, algorithm suite 115) and reads V3 and V2:

V3: ``x-amz-c`` "115", ``x-amz-3`` b64(wrapped data key), ``x-amz-w`` wrap code,
``x-amz-m`` material description JSON (02/22) or ``x-amz-t`` encryption context (12),
``x-amz-i`` b64(28-byte message id), ``x-amz-d`` b64(28-byte key commitment). Content key and
commitment come from HKDF-SHA512(salt=message id, ikm=data key), info ``\\x00\\x73DERIVEKEY``
/ ``\\x00\\x73COMMITKEY``; the body is AES-256-GCM with IV 0x01*12 and AAD ``\\x00\\x73``.

V2: ``x-amz-key-v2``, ``x-amz-iv`` (12 bytes), ``x-amz-cek-alg`` "AES/GCM/NoPadding",
``x-amz-wrap-alg``, ``x-amz-matdesc``; body AES-256-GCM with the data key itself, no AAD.

archiverd adds ``archiverd-cipher-bytes`` (the body length) so truncation and extension are
told apart from tampering; the official clients ignore it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.hashes import SHA512
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from archiverd.errors import TamperedError
from archiverd.pack.wrapping import WRAP_AES_GCM, WRAP_KMS, WRAP_NAMES, WRAP_RSA_OAEP, WrappedKey

SUITE_ID = 115
SUITE_ID_BYTES = b"\x00\x73"
MESSAGE_ID_BYTES = 28
COMMITMENT_BYTES = 28
V3_IV = b"\x01" * 12
TAG_BYTES = 16
CIPHER_BYTES_FIELD = "archiverd-cipher-bytes"
_V2_WRAP_CODES = {name: code for code, name in WRAP_NAMES.items()}


@dataclass(frozen=True)
class Envelope:
    """What decryption needs, parsed and checked for shape (not yet authenticated)."""

    version: int
    wrapped: WrappedKey
    message_id: bytes = b""
    commitment: bytes = b""
    iv: bytes = b""
    cipher_bytes: int | None = None


def derive_keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """Suite 115: (content key, key commitment) from the data key and message id."""
    prk = hmac.new(message_id, data_key, hashlib.sha512).digest()
    content_key = HKDFExpand(SHA512(), 32, SUITE_ID_BYTES + b"DERIVEKEY").derive(prk)
    commitment = HKDFExpand(SHA512(), COMMITMENT_BYTES, SUITE_ID_BYTES + b"COMMITKEY").derive(prk)
    return content_key, commitment


def build_v3(
    wrapped: WrappedKey, message_id: bytes, commitment: bytes, cipher_bytes: int
) -> dict[str, str]:
    """The V3 envelope (user-metadata names without ``x-amz-meta-``)."""
    description = json.dumps(wrapped.description, sort_keys=True, separators=(",", ":"))
    return {
        "x-amz-c": str(SUITE_ID),
        "x-amz-3": _b64(wrapped.blob),
        "x-amz-w": wrapped.wrap_code,
        "x-amz-t" if wrapped.wrap_code == WRAP_KMS else "x-amz-m": description,
        "x-amz-i": _b64(message_id),
        "x-amz-d": _b64(commitment),
        CIPHER_BYTES_FIELD: str(cipher_bytes),
    }


def parse(metadata: Mapping[str, str]) -> Envelope:
    """Parse a V3 or V2 envelope; `TamperedError` naming the field when one is malformed."""
    meta = {name.lower().removeprefix("x-amz-meta-"): value for name, value in metadata.items()}
    cipher_bytes = _cipher_bytes(meta)
    has_v3, has_v2 = "x-amz-3" in meta, "x-amz-key-v2" in meta
    if (has_v3 and has_v2) or "x-amz-key" in meta:
        raise TamperedError(
            "the envelope mixes S3 Encryption Client format versions (V1/V2/V3 key fields): "
            "it was changed; restore the object's original metadata"
        )
    if has_v3:
        return _parse_v3(meta, cipher_bytes)
    if has_v2:
        return _parse_v2(meta, cipher_bytes)
    raise TamperedError(
        "no encryption envelope (x-amz-3 or x-amz-key-v2) in the metadata: this is not an "
        "archive object, or its metadata was lost (a copy without metadata?)"
    )


def _parse_v3(meta: Mapping[str, str], cipher_bytes: int | None) -> Envelope:
    if _field(meta, "x-amz-c") != str(SUITE_ID):
        raise TamperedError(
            f"unsupported content algorithm x-amz-c={meta.get('x-amz-c')!r} (expected "
            f"'{SUITE_ID}'): the envelope was changed or written by a newer client"
        )
    code = _field(meta, "x-amz-w")
    if code not in WRAP_NAMES:
        raise TamperedError(
            f"unknown wrap algorithm x-amz-w={code!r}: the envelope was changed "
            "(or written by a newer client)"
        )
    description_field = "x-amz-t" if code == WRAP_KMS else "x-amz-m"
    description = _json(meta, description_field, required=code != WRAP_KMS)
    if code in (WRAP_AES_GCM, WRAP_RSA_OAEP) and "x-amz-t" in meta:
        raise TamperedError("x-amz-t (a KMS context) beside a non-KMS wrap: envelope changed")
    message_id = _b64_field(meta, "x-amz-i", MESSAGE_ID_BYTES)
    commitment = _b64_field(meta, "x-amz-d", COMMITMENT_BYTES)
    blob = _b64_field(meta, "x-amz-3", None)
    return Envelope(
        version=3,
        wrapped=WrappedKey(code, blob, description),
        message_id=message_id,
        commitment=commitment,
        cipher_bytes=cipher_bytes,
    )


def _parse_v2(meta: Mapping[str, str], cipher_bytes: int | None) -> Envelope:
    if _field(meta, "x-amz-cek-alg") != "AES/GCM/NoPadding":
        raise TamperedError(
            f"unsupported content algorithm x-amz-cek-alg={meta.get('x-amz-cek-alg')!r}: only "
            "AES/GCM/NoPadding is read (legacy CBC objects need the official client)"
        )
    if meta.get("x-amz-tag-len", "128") != "128":
        raise TamperedError(f"unsupported x-amz-tag-len={meta['x-amz-tag-len']!r}: expected 128")
    code = _V2_WRAP_CODES.get(_field(meta, "x-amz-wrap-alg"))
    if code is None:
        raise TamperedError(f"unknown wrap algorithm x-amz-wrap-alg={meta['x-amz-wrap-alg']!r}")
    description = _json(meta, "x-amz-matdesc", required=False)
    return Envelope(
        version=2,
        wrapped=WrappedKey(code, _b64_field(meta, "x-amz-key-v2", None), description),
        iv=_b64_field(meta, "x-amz-iv", 12),
        cipher_bytes=cipher_bytes,
    )


def _field(meta: Mapping[str, str], name: str) -> str:
    value = meta.get(name)
    if value is None:
        raise TamperedError(
            f"envelope field {name} is missing: the metadata was changed or lost; "
            "restore the object's original metadata"
        )
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_field(meta: Mapping[str, str], name: str, size: int | None) -> bytes:
    text = _field(meta, name)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        data = None
    # Non-canonical base64 (changed padding bits) would decode to the same bytes: reject it.
    if data is None or _b64(data) != text or (size is not None and len(data) != size):
        raise TamperedError(f"envelope field {name} is malformed: the metadata was changed")
    return data


def _json(meta: Mapping[str, str], name: str, *, required: bool) -> dict[str, str]:
    text = meta.get(name)
    if text is None:
        if required:
            _field(meta, name)
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TamperedError(f"envelope field {name} is not a JSON string map: it was changed")
    return value


def _cipher_bytes(meta: Mapping[str, str]) -> int | None:
    text = meta.get(CIPHER_BYTES_FIELD)
    if text is None:
        return None
    if not text.isdigit() or text != str(int(text)):
        raise TamperedError(f"envelope field {CIPHER_BYTES_FIELD}={text!r} is malformed")
    return int(text)
