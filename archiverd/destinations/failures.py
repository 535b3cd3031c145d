"""The one mapping from botocore/aiohttp errors to destination failures, and their reasons.

Every failure raised by a destination is a `RetryableFailure` or a `PermanentFailure`
(archiverd.errors) that carries `reason`, one of the labels of ``archiverd_upload_failures``:
throttled, server_error, network, timeout, truncated, access_denied, no_bucket, versioning,
kms, conflict, integrity, other. S3 calls run inside ``translated(translate, where)``
(`archiverd.errors.translated`), so `translate` is the only place foreign errors are read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import botocore.exceptions
import botocore.parsers

from archiverd.errors import (
    ArchiverError,
    ObjectExistsError,
    PermanentFailure,
    RetryableFailure,
)

_THROTTLED = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestThrottled",
}
_TRUNCATED = {"BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody", "InvalidDigest"}
_CREDENTIALS = {
    "InvalidAccessKeyId": "the access key id is not known to the server",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidToken": "the session token is malformed or does not belong to the access key",
    "ExpiredToken": "the session token has expired",
    "TokenRefreshRequired": "the session token has expired",
    "InvalidClientTokenId": "the access key id or session token is not valid",
}
_DENIED = {"AccessDenied", "AllAccessDisabled", "403"}
_NOT_IMPLEMENTED = {"NotImplemented", "501"}

IAM_ACTIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "DeleteObject": "s3:DeleteObject",
}
"""The IAM action S3 authorises each API operation archiverd calls with (a versioned GET or
HEAD needs s3:GetObjectVersion too)."""


def translate(exc: BaseException, *, where: str) -> ArchiverError:
    """Map an exception from aiobotocore/aiohttp to a destination failure.

    `where` says what was attempted (``PUT s3://bucket/key``); it starts every message.
    Errors that are already `ArchiverError` pass through unchanged.
    """
    if isinstance(exc, ArchiverError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        return _client_error(exc, where)
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return PermanentFailure(
            f"{where}: no usable AWS credentials: set destination.access_key_id and "
            "secret_access_key (or their *_file), AWS_* variables, a profile, or an "
            "instance/IRSA role",
            "access_denied",
        )
    if isinstance(
        exc,
        botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectTimeoutError
        | asyncio.TimeoutError,
    ):
        return RetryableFailure(f"{where}: timed out ({exc}); will retry", "timeout")
    if isinstance(
        exc,
        botocore.exceptions.IncompleteReadError
        | botocore.exceptions.ResponseStreamingError
        | botocore.exceptions.FlexibleChecksumError  # a body not matching its checksum
        | botocore.parsers.ResponseParserError
        | aiohttp.ClientPayloadError,
    ):
        return RetryableFailure(
            f"{where}: the response body was truncated or garbled ({exc}); will retry",
            "truncated",
        )
    if isinstance(
        exc,
        botocore.exceptions.HTTPClientError
        | botocore.exceptions.EndpointConnectionError
        | aiohttp.ClientError
        | ConnectionError
        | OSError,
    ):
        return RetryableFailure(f"{where}: network error ({exc}); will retry", "network")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return PermanentFailure(f"{where}: {exc}", "other")
    return PermanentFailure(f"{where}: unexpected {type(exc).__name__}: {exc}", "other")


def rejects_conditional(exc: BaseException) -> bool:
    """True when the server refused the If-None-Match header itself (it does not support it)."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return (
        code == "NotImplemented"
        or status == 501
        or (status == 400 and "if-none-match" in message.lower())
    )


def _client_error(exc: botocore.exceptions.ClientError, where: str) -> ArchiverError:
    response: dict[str, Any] = exc.response
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or code
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    text = f"{where}: {code or status} {message}"
    if code == "PreconditionFailed" or status == 412:
        return ObjectExistsError(where)
    if code in _NOT_IMPLEMENTED or status == 501:
        return PermanentFailure(
            f"{text}: the server does not implement this request (a header such as SSE-KMS, "
            "ACL or storage class it does not support?): unset that destination setting",
            "other",
        )
    retryable = _retryable(code, status, text)
    if retryable is not None:
        return retryable
    if code.startswith("KMS.") or ("KMS" in message and status in (400, 403)):
        return PermanentFailure(
            f"{text}: KMS access denied or the SSE-KMS key unusable: check "
            "destination.sse_kms_key_id, and that the key policy and the archiver's identity "
            "allow kms:GenerateDataKey and kms:Decrypt on it",
            "kms",
        )
    if code in _CREDENTIALS:
        return PermanentFailure(
            f"{text}: invalid or expired credentials ({_CREDENTIALS[code]}): fix "
            "destination.access_key_id / secret_access_key / session_token (or their *_file), "
            "or the AWS_* variables / profile / role they come from",
            "access_denied",
        )
    if code in _DENIED or status == 403:
        return PermanentFailure(
            f"{text}: {denied_hint(exc.operation_name, message)}", "access_denied"
        )
    if code == "NoSuchBucket":
        return PermanentFailure(
            f"{text}: create the bucket (with versioning) or fix destination.url", "no_bucket"
        )
    if code == "ConditionalRequestConflict" or status == 409:
        return RetryableFailure(f"{text}: a concurrent write to the key, will retry", "other")
    if code in ("NoSuchUpload",):
        return RetryableFailure(f"{text}: the multipart upload vanished; will start over", "other")
    return PermanentFailure(text, "other")


def _retryable(code: str, status: int, text: str) -> RetryableFailure | None:
    if code in _THROTTLED or status in (429, 503):
        return RetryableFailure(f"{text}: throttled, backing off", "throttled")
    if status >= 500 or code in ("InternalError", "ServiceUnavailable"):
        return RetryableFailure(f"{text}: server error, will retry", "server_error")
    if code == "RequestTimeout" or status == 408:
        return RetryableFailure(f"{text}: will retry", "timeout")
    if code in _TRUNCATED:
        return RetryableFailure(f"{text}: the body was damaged in transit, will retry", "truncated")
    return None


def denied_hint(operation: str, message: str) -> str:
    """What an AccessDenied for `operation` means, from AWS's message where it says."""
    action = IAM_ACTIONS.get(operation, f"s3:{operation}")
    lowered = message.lower()
    if "resource-based policy" in lowered or "bucket policy" in lowered:
        return (
            f"access denied by a bucket policy ({action}): it may require SSE-KMS (set "
            "destination.sse_kms_key_id) or a canned ACL (set destination.acl, e.g. "
            "bucket-owner-full-control); `archiverd check` names the condition when it may "
            "read the policy"
        )
    if "identity-based policy" in lowered or "permissions boundary" in lowered:
        return (
            f"missing IAM permission: grant the archiver's identity {action} "
            "(docs/DEPLOY.md lists the policy for each mode)"
        )
    return (
        f"access denied: grant the archiver's identity {action} (docs/DEPLOY.md lists the "
        "policy for each mode), or, if a bucket policy denies it, meet its conditions "
        "(SSE-KMS: destination.sse_kms_key_id; ACL: destination.acl)"
    )


def is_precondition_failed(exc: BaseException) -> bool:
    """True for HTTP 412 (If-None-Match: * found an existing object)."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code == "PreconditionFailed" or status == 412


def is_not_found(exc: BaseException) -> bool:
    """True for a HEAD/GET of a key or version that does not exist (or is a delete marker)."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound") or status == 404
