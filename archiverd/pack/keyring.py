"""The keyring: one active master key seals new objects, older keys open old ones by key id.

A `Keyring` holds at most one *active* wrapper and any number of *unwrappers* (decrypt-only:
the active key itself, old keys after a rotation, an RSA private key on a restore host).
Keys come from files (base64 raw keys from `archiverd keygen`, PEM RSA keys), systemd
credentials or KMS settings; a key file readable by group/others loads with a warning
(`archiverd check` fails on it). Key material is never logged or put in errors.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from archiverd import fsutil
from archiverd.errors import FileRefusedError, KeyMaterialError, TamperedError, WrongKeyError
from archiverd.fsutil import credentials_directory
from archiverd.pack.wrapping import (
    KEY_BYTES,
    WRAP_KMS,
    WRAP_NAMES,
    KmsClientFactory,
    KmsKey,
    RawAesKey,
    RsaPrivateKey,
    RsaPublicKey,
    Unwrapper,
    WrappedKey,
    Wrapper,
    aes_key_id,
)

if TYPE_CHECKING:  # annotations only: a packing process imports no settings (collect.workers)
    from archiverd.config import EncryptionSettings
    from archiverd.credentials import AwsCredentials

__all__ = [
    "KEY_BYTES",
    "Keyring",
    "aes_key_id",
    "check_master_key",
    "load_key_files",
    "load_keyring",
    "read_key_file",
]

log = structlog.get_logger("archiverd.pack")


class Keyring:
    """One active wrapping key (may be absent: read-only) and decrypt-only keys by id."""

    def __init__(self, active: Wrapper | None, unwrappers: Sequence[Unwrapper] = ()) -> None:
        self._active = active
        self._unwrappers: dict[str, Unwrapper] = {}
        for unwrapper in unwrappers:
            self._unwrappers.setdefault(unwrapper.key_id, unwrapper)

    @classmethod
    def from_raw_keys(cls, active: bytes, old: Sequence[bytes] = ()) -> Keyring:
        """A raw-AES keyring: `active` seals and opens, `old` keys only open."""
        keys = [RawAesKey(active), *(RawAesKey(key) for key in old)]
        return cls(keys[0], keys)

    def __repr__(self) -> str:
        return f"Keyring(active={self.key_id or None}, decrypt={sorted(self._unwrappers)})"

    @property
    def key_id(self) -> str:
        """Id of the active wrapping key ('' for a read-only keyring)."""
        return self._active.key_id if self._active is not None else ""

    @property
    def key_ids(self) -> list[str]:
        """Ids of every key that can unwrap."""
        return sorted(self._unwrappers)

    @property
    def can_read(self) -> bool:
        """True if at least one key can unwrap (write-only hosts: False)."""
        return bool(self._unwrappers)

    def wrap(self, data_key: bytes) -> WrappedKey:
        """Seal `data_key` with the active key."""
        if self._active is None:
            raise KeyMaterialError(
                "this keyring has no active key to seal with: configure encryption.key_file, "
                "encryption.kms_key_id or encryption.public_key_file"
            )
        return self._active.wrap(data_key)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """Open a data key, choosing the master key by the stored key id.

        `WrongKeyError` when no configured key sealed it; `TamperedError` when the envelope
        names a key we hold but its fields do not authenticate.
        """
        name = WRAP_NAMES.get(wrapped.wrap_code)
        if name is None:
            raise TamperedError(
                f"unknown wrap algorithm x-amz-w={wrapped.wrap_code!r}: the envelope was changed "
                "(or written by a newer client)"
            )
        if wrapped.wrap_code == WRAP_KMS:
            kms = [u for u in self._unwrappers.values() if u.wrap_code == WRAP_KMS]
            if not kms:
                raise WrongKeyError(
                    "this object's data key is wrapped by AWS KMS: run with encryption.wrap = "
                    "'kms' and a kms_key_id this host may kms:Decrypt"
                )
            return kms[0].unwrap(wrapped)
        kid = wrapped.description.get("kid", "")
        named = self._unwrappers.get(kid)
        if named is not None:
            if named.wrap_code != wrapped.wrap_code:
                raise TamperedError(
                    f"x-amz-w says {name} but key id {kid} is a {WRAP_NAMES[named.wrap_code]} "
                    "key: the envelope was changed"
                )
            return named.unwrap(wrapped)
        # The id may itself have been altered: a key that still opens the blob proves it.
        for candidate in self._unwrappers.values():
            if candidate.wrap_code != wrapped.wrap_code:
                continue
            try:
                candidate.unwrap(wrapped)
            except TamperedError:
                continue
            raise TamperedError(
                f"the key id in x-amz-m ({kid!r}) was changed: the data key opens with key "
                f"{candidate.key_id}"
            )
        held = ", ".join(self.key_ids) or "none"
        raise WrongKeyError(
            f"this object was sealed with {name} key {kid or '(no key id)'}, which is not in "
            f"the keyring (have: {held}): pass that key's file (old keys go in "
            "encryption.decrypt_key_files or a repeated --key-file)"
        )


def read_key_file(path: Path) -> bytes:
    """Read a base64 raw master key (`archiverd keygen` output); warn if group/other can read."""
    text = _read_secret(path)
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(
            f"key file {str(path)!r} is not a base64 256-bit key: create one with "
            "`archiverd keygen --out FILE`"
        ) from None
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(
            f"key file {str(path)!r} holds {len(key)} bytes, not {KEY_BYTES}: "
            "create one with `archiverd keygen --out FILE`"
        )
    return key


MAX_KEY_FILE_BYTES = 16 * 1024
"""Key files are small (a raw key is 45 bytes, a 4096-bit PEM key about 3.3 KiB)."""


def read_small_file(path: Path, what: str) -> tuple[bytes, int]:
    """Read a key file: a regular file of at most `MAX_KEY_FILE_BYTES`; (bytes, mode).

    A FIFO, a device such as /dev/zero or a directory fails at once with `KeyMaterialError`
    instead of hanging or filling memory (`fsutil.read_small_file`).
    """
    try:
        data, st = fsutil.read_small_file(path, MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        raise KeyMaterialError(
            f"{what} {str(path)!r} does not exist: create it with `archiverd keygen --out "
            f"{path}` or point encryption.key_file / --key-file at the right file"
        ) from None
    except OSError as exc:
        raise KeyMaterialError(
            f"cannot read {what} {str(path)!r} ({exc.strerror}): give the archiverd user "
            "read access (mode 0600, owned by it) or use systemd LoadCredential="
        ) from None
    except FileRefusedError as exc:
        if exc.reason == "too_large":
            raise KeyMaterialError(
                f"{what} {str(path)!r} is larger than {MAX_KEY_FILE_BYTES // 1024} KiB, so it "
                "is not a key: point it at the file `archiverd keygen` wrote"
            ) from None
        raise KeyMaterialError(
            f"{what} {str(path)!r} is not a regular file (a FIFO, device or directory): "
            "point it at the file `archiverd keygen` wrote"
        ) from None
    return data, stat.S_IMODE(st.st_mode)


def _read_secret(path: Path) -> bytes:
    data, mode = read_small_file(path, "key file")
    if mode & 0o077:
        log.warning(
            "key file readable by others",
            path=str(path),
            mode=f"{mode:o}",
            fix=f"chmod 600 {path}",
        )
    return data


def _load_key_or_private(path: Path) -> Unwrapper:
    """A decrypt-only key file: a raw base64 key or a PEM RSA private key."""
    data = _read_secret(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives import serialization  # RSA keys only (10-15 ms)

        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise KeyMaterialError(
                f"{str(path)!r} is not an unencrypted PEM private key: export it with "
                "`openssl pkey -in KEY -out FILE` (no passphrase) and mode 0600"
            ) from None
        if not isinstance(private, rsa.RSAPrivateKey):
            raise KeyMaterialError(f"{str(path)!r} is not an RSA private key")
        return RsaPrivateKey(private)
    return RawAesKey(read_key_file(path))


def load_public_key(path: Path) -> RsaPublicKey:
    """An RSA public key (PEM) for write-only hosts."""
    from cryptography.hazmat.primitives import serialization  # RSA keys only (10-15 ms)

    data, _mode = read_small_file(path, "encryption.public_key_file")
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyMaterialError(
            f"encryption.public_key_file {str(path)!r} is not a PEM public key: make one with "
            "`openssl pkey -in private.pem -pubout -out public.pem`"
        ) from None
    if not isinstance(public, rsa.RSAPublicKey) or public.key_size < 2048:
        raise KeyMaterialError(f"{str(path)!r} must be an RSA public key of at least 2048 bits")
    return RsaPublicKey(public)


def resolve_key_file(path: Path) -> Path:
    """`path`, or the systemd credential of the same name when $CREDENTIALS_DIRECTORY has it."""
    creds = credentials_directory()
    if creds is None:
        return path
    credential = creds / path.name
    try:
        found = credential.is_file()
    except OSError as exc:  # is_file() only swallows ENOENT-like errors, not EACCES
        raise KeyMaterialError(
            f"cannot read key file {str(credential)!r} ({exc.strerror}): the credentials "
            "directory must be readable by the service (systemd LoadCredential= makes it so)"
        ) from None
    return credential if found else path


def load_key_files(paths: Sequence[Path]) -> Keyring:
    """A keyring from key files (`--key-file`): the first seals (if raw AES), all open."""
    if not paths:
        raise KeyMaterialError("no key file given: pass --key-file FILE or --config")
    first_path = resolve_key_file(paths[0])
    if _is_public_pem(first_path):
        # A public key seals only: this host cannot read back what it packs.
        rest = [_load_key_or_private(resolve_key_file(path)) for path in paths[1:]]
        return Keyring(load_public_key(first_path), rest)
    unwrappers = [_load_key_or_private(resolve_key_file(path)) for path in paths]
    first = unwrappers[0]
    return Keyring(first if isinstance(first, RawAesKey) else None, unwrappers)


def _is_public_pem(path: Path) -> bool:
    try:
        data, _mode = read_small_file(path, "key file")
    except KeyMaterialError:
        return False  # loading it as a private key reports the problem
    return data.lstrip().startswith(b"-----BEGIN PUBLIC KEY")


def load_keyring(
    encryption: EncryptionSettings,
    *,
    extra_key_files: Sequence[Path] = (),
    kms_client_factory: KmsClientFactory | None = None,
    credentials: AwsCredentials | None = None,
) -> Keyring:
    """The keyring the settings describe.

    aes-gcm: the raw key from encryption.key_file (or $CREDENTIALS_DIRECTORY/<its name>).
    kms: KMS key encryption.kms_key_id via `kms_client_factory` (default: botocore, signed
    with `credentials`, the destination's: see `archiverd.credentials`).
    rsa-oaep: public key only (write-only); add private keys through decrypt/extra files.
    Old keys from encryption.decrypt_key_files + `extra_key_files` are decrypt-only.
    """
    unwrappers: list[Unwrapper] = []
    active: Wrapper
    if encryption.wrap == "aes-gcm":
        raw = RawAesKey(read_key_file(resolve_key_file(encryption.key_file)))
        active = raw
        unwrappers.append(raw)
    elif encryption.wrap == "kms":
        factory = kms_client_factory or _default_kms_factory(encryption, credentials)
        kms = KmsKey(encryption.kms_key_id, factory)
        active = kms
        unwrappers.append(kms)
    else:
        assert encryption.public_key_file is not None  # enforced by EncryptionSettings
        active = load_public_key(encryption.public_key_file)
    for path in (*encryption.decrypt_key_files, *extra_key_files):
        unwrappers.append(_load_key_or_private(resolve_key_file(path)))
    return Keyring(active, unwrappers)


def _default_kms_factory(
    encryption: EncryptionSettings, credentials: AwsCredentials | None
) -> KmsClientFactory:
    region = encryption.kms_region or None
    endpoint = encryption.kms_endpoint_url or None
    explicit = credentials.client_arguments() if credentials is not None else {}

    def factory() -> Any:
        import botocore.session

        session = botocore.session.get_session()
        return session.create_client("kms", region_name=region, endpoint_url=endpoint, **explicit)

    return factory


def check_master_key(
    encryption: EncryptionSettings, credentials: AwsCredentials | None = None
) -> str:
    """For `archiverd check`: the active key loads and can seal; a raw key file is 0600.

    KMS is exercised with one real Encrypt call (proves kms:Encrypt, the write-only minimum).
    """
    keyring = load_keyring(encryption, credentials=credentials)
    keyring.wrap(os.urandom(KEY_BYTES))
    if encryption.wrap == "aes-gcm":
        path = resolve_key_file(encryption.key_file)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyMaterialError(
                f"key file {str(path)!r} has mode {mode:o}: run `chmod 600 {path}` "
                "(only the archiverd user may read the master key)"
            )
        return f"raw AES key {keyring.key_id} from {path} (mode {mode:o})"
    if encryption.wrap == "kms":
        return f"KMS key {keyring.key_id}: Encrypt works"
    return f"RSA public key {keyring.key_id} (write-only host: cannot read archives back)"
