"""The error tree: one home for every exception, and the one way foreign errors enter it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import botocore.exceptions
import pytest

import archiverd
from archiverd import errors
from archiverd.destinations.failures import translate
from archiverd.errors import (
    ArchiverError,
    KeyMaterialError,
    ObjectExistsError,
    RetryableDestinationError,
    translated,
)


def _archiverd_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined anywhere in the package, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(archiverd.__path__, "archiverd."):
        if module_info.name.endswith("__main__"):
            continue  # running it is `archiverd`
        module = importlib.import_module(module_info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("archiverd"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_lives_in_errors_and_the_tree() -> None:
    """No module outside errors.py defines an exception; each one derives from ArchiverError."""
    found = _archiverd_exceptions()
    assert [name for name in found if not name.startswith("archiverd.errors.")] == []
    assert [n for n, cls in found.items() if not issubclass(cls, ArchiverError)] == []


def test_the_docstring_draws_every_exception() -> None:
    """Each class of errors.py appears in the tree drawn in its module docstring."""
    doc = errors.__doc__ or ""
    names = {cls.__name__ for cls in _archiverd_exceptions().values()}
    assert sorted(name for name in names if name not in doc) == []


def test_translated_maps_a_foreign_error_and_keeps_it_as_the_cause() -> None:
    """A botocore 503 inside the block leaves as a retryable failure naming what was tried."""
    foreign = botocore.exceptions.ClientError(
        {"Error": {"Code": "SlowDown", "Message": "slow down"},
         "ResponseMetadata": {"HTTPStatusCode": 503}},
        "PutObject",
    )  # fmt: skip
    expected = pytest.raises(RetryableDestinationError, match=r"^PUT s3://b/k: SlowDown")
    with expected as caught, translated(translate, "PUT s3://b/k"):
        raise foreign
    assert caught.value.reason == "throttled"  # type: ignore[attr-defined]
    assert caught.value.__cause__ is foreign


def test_translated_lets_errors_of_the_tree_through_unchanged() -> None:
    """An ArchiverError raised inside the block is the very error that comes out."""
    mine = ObjectExistsError("k")
    with pytest.raises(ObjectExistsError) as caught, translated(translate, "PUT s3://b/k"):
        raise mine
    assert caught.value is mine


def test_translated_without_chain_hides_the_foreign_error() -> None:
    """chain=False (KMS: messages may echo request parameters) drops the foreign exception."""

    def as_key_error(exc: Exception, *, where: str) -> ArchiverError:
        return KeyMaterialError(f"{where}: {type(exc).__name__}")

    expected = pytest.raises(KeyMaterialError, match=r"^kms-key: ValueError$")
    with expected as caught, translated(as_key_error, "kms-key", chain=False):
        raise ValueError("plaintext=secret")
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
