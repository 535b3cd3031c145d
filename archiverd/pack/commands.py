"""`archiverd keygen`, `pack` and `unpack`: one file at a time, exactly as the daemon packs.

`pack` writes the single-file form (`archiverd.pack.container`): header, then body. The body
is packed into an anonymous temp file first because the header carries the body length;
the output appears by rename only when complete. `unpack` releases plaintext only after the
tag verifies. ``-`` means stdin/stdout. Keys come only from files, never from argv.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import structlog

from archiverd.errors import KeyMaterialError, OutputError, SourceError
from archiverd.fsutil import fsync_dir, publish, write_all
from archiverd.pack import container
from archiverd.pack.keyring import KEY_BYTES, Keyring, aes_key_id
from archiverd.pack.stream import (
    CHUNK_BYTES,
    PackResult,
    UnpackResult,
    pack_stream,
    unpack_stream,
    unpack_to_file,
)

log = structlog.get_logger("archiverd.pack")
STDIO = "-"


def keygen(out: Path) -> str:
    """Create a new random 256-bit key (base64) at `out`, mode 0600; return its key id.

    Refuses to overwrite: losing a key loses every archive sealed with it.
    """
    key = os.urandom(KEY_BYTES)
    out = out.absolute()
    temp = out.with_name(f".{out.name}.keygen-{os.getpid()}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, base64.b64encode(key) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, out)  # atomic create-if-absent
        fsync_dir(out.parent)
    except FileExistsError:
        raise KeyMaterialError(
            f"{str(out)!r} already exists: refusing to overwrite a master key (archives "
            "sealed with it would become unreadable); choose another --out"
        ) from None
    except OSError as exc:  # no such directory, no room, read-only, ...
        raise OutputError(
            f"cannot write a key to {str(out)!r}: {exc.strerror}: nothing was written; "
            "choose another --out"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    key_id = aes_key_id(key)
    log.debug("master key written", path=str(out), key_id=key_id, mode="600")
    return key_id


def pack_file(source: str, target: str, keyring: Keyring, *, level: int) -> PackResult:
    """Pack `source` (a path or ``-``) into the single-file form at `target` (or ``-``)."""
    if target == STDIO and sys.stdout.isatty():
        raise SourceError("refusing to write a packed (binary) file to a terminal: redirect it")
    temp_dir = None if target == STDIO else Path(target).absolute().parent
    with _open_in(source) as src, tempfile.TemporaryFile(dir=temp_dir) as body:
        result = pack_stream(src, body, keyring, level=level)
        metadata = {
            **result.envelope,
            "archiverd-key-id": result.key_id,
            "archiverd-plaintext-sha256": result.plaintext_sha256,
        }
        body.seek(0)
        if target == STDIO:
            out = sys.stdout.buffer
            container.write_header(out, metadata)
            shutil.copyfileobj(body, out, CHUNK_BYTES)
            out.flush()
        else:
            _write_published(Path(target), metadata, body)
    log.info(
        "packed",
        source=source,
        target=target,
        key_id=result.key_id,
        plaintext_bytes=result.plaintext_bytes,
        packed_bytes=result.packed_bytes,
    )
    return result


def unpack_file(source: str, target: str, keyring: Keyring) -> UnpackResult:
    """Verify, decrypt and gunzip a single-file archive; nothing is written on failure."""
    with _open_in(source) as src:
        metadata = container.read_header(src)
        if target == STDIO:
            result = unpack_stream(src, metadata, sys.stdout.buffer, keyring, hash_plaintext=False)
        elif _is_special(target):
            with _open_special(target) as out:
                result = unpack_stream(src, metadata, out, keyring, hash_plaintext=False)
        else:
            result = unpack_to_file(
                src, metadata, Path(target).absolute(), keyring, hash_plaintext=False
            )
    log.info("unpacked", source=source, target=target, plaintext_bytes=result.plaintext_bytes)
    return result


@contextlib.contextmanager
def _open_in(source: str) -> Iterator[BinaryIO]:
    if source == STDIO:
        yield sys.stdin.buffer
        return
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed below, after the yield
    except OSError as exc:
        raise SourceError(f"cannot open {source!r}: {exc.strerror}") from None
    with handle:
        yield handle


def _is_special(target: str) -> bool:
    """Whether `target` exists and is not a regular file (``/dev/null``, a FIFO, a tty):
    such a target is written in place, never replaced by a rename."""
    try:
        return not stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"cannot write to {target!r}: {exc.strerror}") from None


@contextlib.contextmanager
def _open_special(target: str) -> Iterator[BinaryIO]:
    if stat.S_ISDIR(os.stat(target).st_mode):
        raise OutputError(f"{target!r} is a directory; give a file name or '-' for stdout")
    try:
        handle = open(target, "wb")  # noqa: SIM115 - closed below, after the yield
    except OSError as exc:
        raise OutputError(f"cannot write to {target!r}: {exc.strerror}") from None
    with handle:
        yield handle


def _write_published(target: Path, metadata: dict[str, str], body: BinaryIO) -> None:
    if _is_special(str(target)):
        with _open_special(str(target)) as out:
            container.write_header(out, metadata)
            shutil.copyfileobj(body, out, CHUNK_BYTES)
        return
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".pack")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            container.write_header(out, metadata)
            shutil.copyfileobj(body, out, CHUNK_BYTES)
        publish(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
