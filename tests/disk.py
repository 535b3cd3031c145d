"""A write that fails as on a full disk, in a child process, with no file system to fill."""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable


def file_size_limit(limit: int) -> Callable[[], None]:
    """A `preexec_fn`: in the child, writing a file past `limit` bytes fails (EFBIG) as
    writing to a full disk does (ENOSPC), with no small file system to mount."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limited
