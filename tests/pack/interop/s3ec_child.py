"""Runs INSIDE .venv-s3ec (the official AWS S3 Encryption Client), never imports archiverd.

Usage: python s3ec_child.py REQUEST.json  where the request names the operation:
  {"op": "get", "mode": "aes"|"rsa"|"kms", "s3": {...}, "kms": {...}, "key_file": ...,
   "bucket": ..., "key": ..., "out": PATH}
  {"op": "put", "mode": "kms", ..., "in": PATH}
Exit 0 on success; otherwise the official client's error on stderr and exit 3.
The AES keyring is executed from docs/FORMAT.md; the RSA one mirrors its snippet.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import boto3
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
from s3_encryption.materials import AbstractKeyring, KmsKeyring


def documented_aes_keyring(docs: str) -> Any:
    """The RawAesKeyring class exactly as docs/FORMAT.md prints it (executed, not copied)."""
    with open(docs) as handle:
        text = handle.read()
    start = text.index("```python\nimport base64, boto3")
    snippet = text[start + len("```python\n") : text.index("\nkey = base64", start)]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 - the point is to run the documented code
    return namespace["RawAesKeyring"]


class RsaOaepKeyring(AbstractKeyring):
    """Decrypt-only keyring for archiverd's RSA-OAEP-SHA1 wrapping (wrap code 22)."""

    def __init__(self, private_key: Any) -> None:
        self.private_key = private_key

    def on_encrypt(self, enc_materials: Any) -> Any:
        raise NotImplementedError("decrypt only")

    def on_decrypt(self, dec_materials: Any, encrypted_data_keys: Any = None) -> Any:
        blob = (encrypted_data_keys or dec_materials.encrypted_data_keys)[0].encrypted_data_key
        oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)  # noqa: S303
        pseudo = self.private_key.decrypt(blob, oaep)  # len(32) || data key || cipher name
        dec_materials.plaintext_data_key = pseudo[1 : 1 + pseudo[0]]
        return dec_materials


def client(service: str, conf: dict[str, str]) -> Any:
    return boto3.client(
        service,
        endpoint_url=conf["endpoint_url"],
        aws_access_key_id=conf["access_key"],
        aws_secret_access_key=conf["secret_key"],
        region_name=conf["region"],
    )


def keyring(request: dict[str, Any]) -> Any:
    mode = request["mode"]
    if mode == "aes":
        with open(request["key_file"], "rb") as handle:
            return documented_aes_keyring(request["docs"])(base64.b64decode(handle.read()))
    if mode == "rsa":
        with open(request["key_file"], "rb") as handle:
            return RsaOaepKeyring(serialization.load_pem_private_key(handle.read(), None))
    return KmsKeyring(kms_client=client("kms", request["kms"]), kms_key_id=request["kms_key_id"])


def main() -> int:
    with open(sys.argv[1]) as handle:
        request = json.load(handle)
    s3ec = S3EncryptionClient(
        wrapped_s3_client=client("s3", request["s3"]),
        config=S3EncryptionClientConfig(keyring=keyring(request)),
    )
    try:
        if request["op"] == "put":
            with open(request["in"], "rb") as handle:
                s3ec.put_object(Bucket=request["bucket"], Key=request["key"], Body=handle.read())
            return 0
        response = s3ec.get_object(Bucket=request["bucket"], Key=request["key"])
        with open(request["out"], "wb") as out:
            out.write(response["Body"].read())
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
