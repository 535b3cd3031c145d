"""The mapping from botocore/aiohttp errors to retryable vs permanent destination failures."""

from __future__ import annotations

import aiohttp
import botocore.exceptions
import pytest

from archiverd.destinations.failures import translate
from archiverd.errors import (
    ArchiverError,
    ObjectExistsError,
    PermanentDestinationError,
    RetryableDestinationError,
    TamperedError,
    reason_of,
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
        # botocore's own check of a GET body against the object's whole-body checksum
        (
            botocore.exceptions.FlexibleChecksumError(
                error_msg="Expected checksum x did not match"
            ),
            "truncated",
        ),
        (ConnectionResetError(104, "reset"), "network"),
        (TimeoutError(), "timeout"),
    ],
)
def test_transport_errors_are_retryable(exc: Exception, reason: str) -> None:
    """Timeouts, resets and truncated or corrupted bodies are retryable, each with its
    reason."""
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


def _denied(operation: str, code: str, message: str) -> str:
    error = botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        operation,
    )
    failure = translate(error, where=f"{operation} s3://b/k")
    assert isinstance(failure, PermanentDestinationError)
    return str(failure)


@pytest.mark.parametrize(
    ("operation", "code", "message", "words"),
    [
        ("PutObject", "InvalidAccessKeyId", "", ["invalid or expired", "access key id"]),
        ("PutObject", "SignatureDoesNotMatch", "", ["invalid or expired", "secret access key"]),
        ("HeadObject", "ExpiredToken", "", ["invalid or expired", "session token has expired"]),
        ("CreateMultipartUpload", "AccessDenied",
         "User: arn:aws:iam::1:user/a is not authorized to perform: s3:PutObject on resource: "
         '"arn:aws:s3:::b/k" because no identity-based policy allows the s3:PutObject action',
         ["missing IAM permission", "s3:PutObject"]),
        ("ListParts", "AccessDenied",
         "User: arn:aws:iam::1:user/a is not authorized to perform: s3:ListMultipartUploadParts "
         "because no identity-based policy allows the s3:ListMultipartUploadParts action",
         ["missing IAM permission", "s3:ListMultipartUploadParts"]),
        ("PutObject", "AccessDenied",
         "User: arn:aws:iam::1:user/a is not authorized to perform: s3:PutObject on resource: "
         '"arn:aws:s3:::b/k" with an explicit deny in a resource-based policy',
         ["bucket policy", "destination.sse_kms_key_id", "destination.acl"]),
        ("AbortMultipartUpload", "AccessDenied", "Access Denied",
         ["grant the archiver's identity s3:AbortMultipartUpload"]),
    ],
)  # fmt: skip
def test_denials_say_which_credential_action_or_policy(
    operation: str, code: str, message: str, words: list[str]
) -> None:
    """Bad credentials, a missing IAM action and a bucket policy each get their own fix."""
    text = _denied(operation, code, message)
    for word in words:
        assert word in text


def test_not_implemented_is_permanent() -> None:
    """A 501 (a header the server does not support) is not retried."""
    failure = translate(_client_error("NotImplemented", 501), where="PUT s3://b/k")
    assert isinstance(failure, PermanentDestinationError)
    assert "does not implement" in str(failure)


@pytest.mark.parametrize(
    ("condition", "args", "words"),
    [
        ({"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}, {},
         "destination.sse_kms_key_id"),
        ({"Null": {"s3:x-amz-server-side-encryption": "true"}}, {}, "destination.sse_kms_key_id"),
        ({"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
         {"ACL": "private"}, "destination.acl"),
        ({"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
         {"ServerSideEncryption": "aws:kms"}, ""),
    ],
)  # fmt: skip
def test_unmet_bucket_policy_condition_is_named(
    condition: dict[str, object], args: dict[str, str], words: str
) -> None:
    """A Deny statement's header condition our write headers trip names the setting to fix."""
    from archiverd.destinations.s3 import unmet_condition

    policy = {"Statement": [{"Sid": "S", "Effect": "Deny", "Action": "s3:PutObject",
                             "Resource": "*", "Condition": condition}]}  # fmt: skip
    found = unmet_condition(policy, args)
    assert found.endswith(words)
    assert bool(found) == bool(words)
