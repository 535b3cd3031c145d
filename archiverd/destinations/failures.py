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
    IntegrityError,
    ObjectExistsError,
    PermanentFailure,
    RetryableFailure,
)


def reason_of(exc: BaseException) -> str:
    """The metrics reason of any error (``other`` when it has none)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    return "integrity" if isinstance(exc, IntegrityError) else "other"


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
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "InvalidToken",
    "ExpiredToken",
    "403",
}


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
    if code in _THROTTLED or status in (429, 503):
        return RetryableFailure(f"{text}: throttled, backing off", "throttled")
    if status >= 500 or code in ("InternalError", "ServiceUnavailable"):
        return RetryableFailure(f"{text}: server error, will retry", "server_error")
    if code == "RequestTimeout" or status == 408:
        return RetryableFailure(f"{text}: will retry", "timeout")
    if code in _TRUNCATED:
        return RetryableFailure(f"{text}: the body was damaged in transit, will retry", "truncated")
    if code.startswith("KMS.") or ("KMS" in message and status in (400, 403)):
        return PermanentFailure(
            f"{text}: the SSE-KMS key cannot be used: check destination.sse_kms_key_id and "
            "that the archiver's role may kms:GenerateDataKey/kms:Decrypt with it",
            "kms",
        )
    if code in _DENIED or status == 403:
        return PermanentFailure(
            f"{text}: access denied: grant the archiver's credentials s3:PutObject, "
            "s3:GetObject*, s3:ListBucket*, s3:GetBucketVersioning and multipart permissions",
            "access_denied",
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
