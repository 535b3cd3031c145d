"""Run inside a unit with archiverd.service's sandbox: print what the sandbox allows, as JSON.

Copied into the systemd test machine and started as `archiverd-probe.service`, a copy of the
real unit with only ExecStart (and the notify/watchdog lines that need a daemon) replaced.
Uses only the standard library (the machine's python3).
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import socket

CLONE_NEWUTS = 0x04000000
CLOCK_REALTIME = 0


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def try_write(path: str) -> str:
    """'ok' if a file can be created at `path` (then removed), else the errno name."""
    try:
        with open(path, "w") as handle:
            handle.write("probe\n")
        mode = oct(os.stat(path).st_mode & 0o777)
        os.unlink(path)
        return f"ok {mode}"
    except OSError as exc:
        return _errno_name(exc)


def try_socket(family: int, kind: int) -> str:
    """'ok' if a socket of this family can be made, else the errno name."""
    try:
        socket.socket(family, kind).close()
        return "ok"
    except OSError as exc:
        return _errno_name(exc)


def try_libc(name: str, *args: object) -> str:
    """Call a libc function; 'ok' or the errno name it failed with."""
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) == 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")


def try_wx_mapping() -> str:
    """'ok' if memory can be mapped writable and executable at once."""
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
        return "ok"
    except OSError as exc:
        return _errno_name(exc)


def status() -> dict[str, str]:
    """This process's /proc/self/status fields."""
    with open("/proc/self/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def main() -> None:
    """Print one JSON object with every probe's outcome."""
    timespec = (ctypes.c_long * 2)(0, 0)
    own = status()
    print(
        json.dumps(
            {
                "uid": os.getuid(),
                "state_dir": try_write(os.path.join(os.environ["STATE_DIRECTORY"], "probe")),
                "etc": try_write("/etc/probe"),
                "usr": try_write("/usr/probe"),
                "var_log": try_write("/var/log/probe"),
                "tmp": try_write("/tmp/probe"),
                "root_home": try_write("/root/probe"),
                "netlink": try_socket(socket.AF_NETLINK, socket.SOCK_RAW),
                "packet": try_socket(socket.AF_PACKET, socket.SOCK_RAW),
                "inet": try_socket(socket.AF_INET, socket.SOCK_STREAM),
                "unshare": try_libc("unshare", CLONE_NEWUTS),
                "clock_settime": try_libc("clock_settime", CLOCK_REALTIME, timespec),
                "wx_mapping": try_wx_mapping(),
                "proc_pid1": os.path.exists("/proc/1"),
                "proc_sys": os.path.exists("/proc/sys"),
                "NoNewPrivs": own["NoNewPrivs"],
                "Seccomp": own["Seccomp"],
                "CapBnd": own["CapBnd"],
                "CapEff": own["CapEff"],
                "CapAmb": own["CapAmb"],
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
