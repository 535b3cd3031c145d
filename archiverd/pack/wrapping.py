"""Master keys that wrap a fresh data key per object, in the S3 Encryption Client's V3 codes:

- ``02`` AES/GCM: a raw 256-bit key. Wrapped = wrap-IV(12) || AES-GCM(key, data key) || tag(16),
  AAD ``AES/GCM/NoPadding`` (as the Java client's AesKeyring). Key id: ``aes256:<16 hex>``,
  an HMAC of the key, stored as ``{"kid": ...}`` in the material description.
- ``22`` RSA-OAEP-SHA1: wraps with a public key only, so a host can archive but not read back.
  Wrapped = RSA-OAEP(SHA-1, MGF1-SHA-1) of ``len(32) || data key || "AES/GCM/NoPadding"``
  (the Java client's pseudo data key). Key id: ``rsa:<16 hex>`` of the public key's DER.
- ``12`` kms+context: AWS KMS ``Encrypt`` (a host needs only kms:Encrypt to archive) with the
  encryption context ``{"aws:x-amz-cek-alg": "115"}``; reading needs kms:Decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from archiverd.errors import (
    ArchiverError,
    KeyMaterialError,
    TamperedError,
    WrongKeyError,
    translated,
)

log = structlog.get_logger("archiverd.pack")

WRAP_AES_GCM = "02"
WRAP_KMS = "12"
WRAP_RSA_OAEP = "22"
WRAP_NAMES = {WRAP_AES_GCM: "AES/GCM", WRAP_KMS: "kms+context", WRAP_RSA_OAEP: "RSA-OAEP-SHA1"}
KEY_BYTES = 32
_AES_WRAP_AAD = b"AES/GCM/NoPadding"
_KMS_CONTEXT_KEY = "aws:x-amz-cek-alg"
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 - the S3EC format fixes SHA-1 here; OAEP-SHA1 is not broken


@dataclass(frozen=True)
class WrappedKey:
    """A data key sealed by a master key, plus what the envelope stores beside it."""

    wrap_code: str
    blob: bytes
    description: dict[str, str] = field(default_factory=dict)
    """Material description (02, 22) or KMS encryption context (12)."""


class Wrapper(Protocol):
    """Seals data keys (the active master key)."""

    key_id: str
    wrap_code: str

    def wrap(self, data_key: bytes) -> WrappedKey: ...


class Unwrapper(Protocol):
    """Opens data keys sealed by one master key; raises `TamperedError` if a blob fails."""

    key_id: str
    wrap_code: str

    def unwrap(self, wrapped: WrappedKey) -> bytes: ...


def aes_key_id(key: bytes) -> str:
    """The public id of a raw key: reveals nothing about it, stable across hosts."""
    return "aes256:" + hmac.new(key, b"archiverd key id v1", hashlib.sha256).hexdigest()[:16]


class RawAesKey:
    """A raw 256-bit master key: wraps and unwraps (mode 02)."""

    wrap_code = WRAP_AES_GCM

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyMaterialError(
                f"a master key must be {KEY_BYTES} bytes, got {len(key)}: "
                "create one with `archiverd keygen --out FILE`"
            )
        self._aead = AESGCM(key)
        self.key_id = aes_key_id(key)

    def __repr__(self) -> str:  # never the key itself
        return f"RawAesKey({self.key_id})"

    def wrap(self, data_key: bytes) -> WrappedKey:
        iv = os.urandom(12)
        blob = iv + self._aead.encrypt(iv, data_key, _AES_WRAP_AAD)
        return WrappedKey(self.wrap_code, blob, {"kid": self.key_id})

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        blob = wrapped.blob
        try:
            if len(blob) != 12 + KEY_BYTES + 16:
                raise InvalidTag
            return self._aead.decrypt(blob[:12], blob[12:], _AES_WRAP_AAD)
        except InvalidTag:
            raise TamperedError(
                f"the wrapped data key (x-amz-3) does not authenticate under key {self.key_id}: "
                "the envelope was changed; restore the object's original metadata"
            ) from None


def rsa_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The public id of an RSA key pair (hash of the public key's DER)."""
    # Imported where RSA keys are used: 10-15 ms of every start-up otherwise (`get`, workers).
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "rsa:" + hashlib.sha256(der).hexdigest()[:16]


def _pseudo_key(data_key: bytes) -> bytes:
    return bytes([len(data_key)]) + data_key + _AES_WRAP_AAD


class RsaPublicKey:
    """Wraps with an RSA public key (mode 22): this host cannot read what it archives."""

    wrap_code = WRAP_RSA_OAEP

    def __init__(self, public_key: rsa.RSAPublicKey) -> None:
        self._public = public_key
        self.key_id = rsa_key_id(public_key)

    def wrap(self, data_key: bytes) -> WrappedKey:
        blob = self._public.encrypt(_pseudo_key(data_key), _OAEP)
        return WrappedKey(self.wrap_code, blob, {"kid": self.key_id})


class RsaPrivateKey:
    """Unwraps mode-22 data keys with the private half (on the restore host only)."""

    wrap_code = WRAP_RSA_OAEP

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private = private_key
        self.key_id = rsa_key_id(private_key.public_key())

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        try:
            pseudo = self._private.decrypt(wrapped.blob, _OAEP)
        except ValueError:
            pseudo = b""
        if len(pseudo) != 1 + KEY_BYTES + len(_AES_WRAP_AAD) or pseudo[0] != KEY_BYTES:
            raise TamperedError(
                f"the wrapped data key (x-amz-3) does not decrypt under RSA key {self.key_id}: "
                "the envelope was changed; restore the object's original metadata"
            )
        if not hmac.compare_digest(pseudo[1 + KEY_BYTES :], _AES_WRAP_AAD):
            raise TamperedError("the RSA-wrapped data key names another cipher: envelope changed")
        return pseudo[1 : 1 + KEY_BYTES]


KmsClientFactory = Callable[[], Any]


class KmsKey:
    """AWS KMS (mode 12). Wrapping needs kms:Encrypt; unwrapping needs kms:Decrypt.

    The client comes from `client_factory` (a synchronous botocore KMS client: packing runs
    on worker threads) and is created on first use.
    """

    wrap_code = WRAP_KMS

    def __init__(self, kms_key_id: str, client_factory: KmsClientFactory) -> None:
        self.key_id = kms_key_id
        self._factory = client_factory
        self._client: Any = None

    def _kms(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def wrap(self, data_key: bytes) -> WrappedKey:
        context = {_KMS_CONTEXT_KEY: "115"}
        with translated(_encrypt_failure, self.key_id, chain=False):
            response = self._kms().encrypt(
                KeyId=self.key_id, Plaintext=data_key, EncryptionContext=context
            )
        return WrappedKey(self.wrap_code, bytes(response["CiphertextBlob"]), context)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        with translated(_decrypt_failure, self.key_id, chain=False):
            response = self._kms().decrypt(
                KeyId=self.key_id,
                CiphertextBlob=wrapped.blob,
                EncryptionContext=dict(wrapped.description),
            )
        return bytes(response["Plaintext"])


_KMS_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "NoCredentialsError",
    "PartialCredentialsError",
}


def _encrypt_failure(exc: Exception, *, where: str) -> ArchiverError:
    """A failure of KMS Encrypt (botocore raises many unrelated types), with its fix."""
    reason = _kms_reason(exc)
    if reason in _KMS_CREDENTIALS:
        fix = (
            "invalid, expired or missing credentials: KMS is signed with the destination's "
            "(destination.access_key_id / secret_access_key / session_token or their *_file, "
            "else the AWS default chain): fix those"
        )
    elif reason in ("AccessDeniedException", "AccessDenied", "403"):
        fix = (
            "KMS access denied: allow kms:Encrypt on this key in the archiver's IAM policy "
            "and in the key policy"
        )
    elif reason in ("NotFoundException", "DisabledException", "KMSInvalidStateException"):
        fix = (
            "the key does not exist here or is disabled: check encryption.kms_key_id, its "
            "region, and that this host may kms:Encrypt with it"
        )
    else:
        fix = "check encryption.kms_key_id, the region/endpoint and that this host may kms:Encrypt"
    return KeyMaterialError(f"KMS Encrypt with key {where!r} failed ({reason}): {fix}")


def _decrypt_failure(exc: Exception, *, where: str) -> ArchiverError:
    """A KMS Decrypt failure: a changed envelope, or a key this host cannot use."""
    reason = _kms_reason(exc)
    if "InvalidCiphertext" in reason:
        return TamperedError(
            "KMS rejects the wrapped data key or its encryption context (x-amz-3 / "
            "x-amz-t): the envelope was changed"
        )
    return WrongKeyError(
        f"KMS cannot unwrap this object's data key with {where!r} ({reason}): "
        "it was sealed under another KMS key, or this host may not kms:Decrypt "
        "(write-only hosts cannot read archives back)"
    )


def _kms_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__
