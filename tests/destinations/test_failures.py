"""The mapping from botocore/aiohttp errors to retryable vs permanent destination failures."""

from __future__ import annotations

import aiohttp
import botocore.exceptions
import pytest

from archiverd.destinations.failures import reason_of, translate
from archiverd.errors import (
    ArchiverError,
    ObjectExistsError,
    PermanentDestinationError,
    RetryableDestinationError,
    TamperedError,
)


def _client_error(code: str, status: int, message: str = "") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message or code},
         "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("code", "status", "message", "kind", "reason"),
    [
        ("SlowDown", 503, "", RetryableDestinationError, "throttled"),
        ("ServiceUnavailable", 503, "", RetryableDestinationError, "throttled"),
        ("InternalError", 500, "", RetryableDestinationError, "server_error"),
        ("BadGateway", 502, "", RetryableDestinationError, "server_error"),
        ("RequestTimeout", 400, "", RetryableDestinationError, "timeout"),
        ("BadDigest", 400, "", RetryableDestinationError, "truncated"),
        ("AccessDenied", 403, "", PermanentDestinationError, "access_denied"),
        ("InvalidAccessKeyId", 403, "", PermanentDestinationError, "access_denied"),
        ("NoSuchBucket", 404, "", PermanentDestinationError, "no_bucket"),
        ("KMS.DisabledException", 400, "", PermanentDestinationError, "kms"),
        ("AccessDenied", 403, "not authorized to perform kms:GenerateDataKey on KMS key",
         PermanentDestinationError, "kms"),
        ("InvalidArgument", 400, "", PermanentDestinationError, "other"),
    ],
)  # fmt: skip
def test_client_errors(
    code: str, status: int, message: str, kind: type[ArchiverError], reason: str
) -> None:
    """Each S3 error code maps to the documented class and metrics reason."""
    error = translate(_client_error(code, status, message), where="PUT s3://b/k")
    assert isinstance(error, kind)
    assert reason_of(error) == reason
    assert str(error).startswith("PUT s3://b/k: ")


def test_precondition_failed_is_object_exists() -> None:
    """HTTP 412 from a conditional write means the key already holds an object."""
    error = translate(_client_error("PreconditionFailed", 412), where="PUT s3://b/k")
    assert isinstance(error, ObjectExistsError)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), "timeout"),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), "timeout"),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"), "network"),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), "network"),
        (botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2), "truncated"),
        (aiohttp.ClientPayloadError("cut"), "truncated"),
        (ConnectionResetError(104, "reset"), "network"),
        (TimeoutError(), "timeout"),
    ],
)
def test_transport_errors_are_retryable(exc: Exception, reason: str) -> None:
    """Timeouts, resets and truncated bodies are retryable, each with its reason."""
    error = translate(exc, where="GET s3://b/k")
    assert isinstance(error, RetryableDestinationError)
    assert reason_of(error) == reason


def test_missing_credentials_are_permanent() -> None:
    """No credentials anywhere is an operator problem, said so."""
    error = translate(botocore.exceptions.NoCredentialsError(), where="PUT s3://b/k")
    assert isinstance(error, PermanentDestinationError)
    assert "access_key_id" in str(error)


def test_archiver_errors_pass_through() -> None:
    """Our own errors are not re-wrapped; integrity errors get their own reason."""
    original = TamperedError("flipped")
    assert translate(original, where="x") is original
    assert reason_of(original) == "integrity"
