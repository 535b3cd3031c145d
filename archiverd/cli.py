"""The `archiverd` command line: parse, load settings once, dispatch, map errors to exit codes.

Each subcommand is a thin handler; the work lives in the pipeline modules. Keys are only ever
named by file (``--key-file``), the config, or $CREDENTIALS_DIRECTORY: never a value in argv.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import structlog

from archiverd import __version__, startup
from archiverd.config import Settings, load_settings
from archiverd.errors import ArchiverError, given_up
from archiverd.fsutil import devnull_onto, discard_output
from archiverd.logs import configure_logging, printable

log = structlog.get_logger("archiverd.cli")

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None, *, quick_exit: bool = False) -> int:
    """Run one command; return its exit code.

    With `quick_exit` (the executable, `run`; never in-process callers such as tests), a
    restore command or the daemon (`QUICK_EXIT`) loads without the cycle collector
    (`archiverd.startup`) and ends the process itself once done (`_exit_now`). (Collecting
    cycles a hundred times less often saved 0.035 s of a 134 MB `get` but cost 10-20% of the
    CPU of 512 MiB restores, bench/restore.py: Python's thresholds stay.)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if quick_exit and args.command in QUICK_EXIT:
        startup.pause()  # the command resumes collecting once loaded (`archiverd.startup`)
    configure_logging(args.log_level or "info", args.log_format or "auto")
    _process_wide()
    code = _handle(args)
    if quick_exit and args.command in QUICK_EXIT:
        _exit_now(code)
    return code


def run() -> NoReturn:
    """The `archiverd` executable (console script and ``python -m archiverd``)."""
    reopen_standard_descriptors()
    raise SystemExit(main(quick_exit=True))


def reopen_standard_descriptors() -> None:
    """Put /dev/null on fd 0, 1 or 2 where the process started with it closed (a careless
    cron job or supervisor), and give Python a stream on it: otherwise the next file opened
    (a journal, a key) becomes that descriptor, where a stray print or a C library's
    message writes into it, and Python's `sys.stdout` is None."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        devnull_onto(fd)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


QUICK_EXIT = frozenset({"ls", "get", "verify", "run"})
"""Commands with nothing left to close once they return (`run` has closed its journal, spool
and destination): when one is done, the process exits at once."""


def _handle(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        return handler(args)
    except ArchiverError as exc:
        text = str(exc) if args.command == "run" else given_up(str(exc))
        # Messages may quote keys and names from a bucket: no control character gets out.
        print(f"archiverd {args.command}: {printable(text, keep_newlines=True)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"archiverd {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.command == "run":
            raise  # the daemon's own failure paths are tested; a traceback shows the rest
        # An I/O failure no command turned into an error of its own (its output on a full
        # disk, ...): one line, and what is still buffered for stdout goes nowhere, so the
        # exit does not fail on it again.
        discard_output(sys.stdout)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"archiverd {args.command}: I/O failed: {exc.strerror}{where}", file=sys.stderr)
        return os.EX_IOERR
    finally:
        startup.resume()


def _exit_now(code: int) -> None:
    """Exit with `code` without the interpreter's teardown, which frees every object of
    botocore's service models and pydantic's schemas one by one: about 0.15 s of CPU, a
    sixth of a 134 MB `get` on 2 cores (bench/restore.py). Only once nothing is left to do:
    no other thread, stdout and stderr flushed, the atexit hooks run (logging's flush);
    otherwise return, and Python exits as usual (reporting a failed flush its own way).
    Never under a profiler or tracer (``python -m cProfile``, a debugger): they write their
    results after the program returns."""
    if not _alone():
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def _alone() -> bool:
    """No other thread, no profiler, no tracer: nothing that still needs the interpreter."""
    return threading.active_count() == 1 and sys.getprofile() is None and not sys.gettrace()


def _process_wide() -> None:
    """Settings of the whole process, made here and nowhere else: malloc tuning for pack
    buffers, and stamina's retry hooks (its structlog line per scheduled retry, with the wait;
    retry counts go to each daemon's own registry, not stamina's global Prometheus counter)."""
    import stamina.instrumentation

    from archiverd.pack.stream import tune_allocator

    tune_allocator()
    stamina.instrumentation.set_on_retry_hooks([stamina.instrumentation.StructlogOnRetryHook])


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by the docs test)."""
    parser = argparse.ArgumentParser(
        prog="archiverd",
        description="Archive container logs to a versioned S3 bucket, encrypted.",
    )
    parser.add_argument("--version", action="version", version=f"archiverd {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["auto", "json", "console"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon (or one pass with --once)")
    _config_arg(run)
    run.add_argument("--once", action="store_true", help="one pass: seal, pack, upload, exit")
    run.add_argument(
        "--seal-open", action="store_true", help="with --once: also seal running containers"
    )
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate config, key, state dir and bucket")
    _config_arg(check)
    check.set_defaults(handler=_check)

    keygen = commands.add_parser("keygen", help="write a new 256-bit master key (mode 0600)")
    keygen.add_argument("--out", type=Path, required=True, help="key file to create")
    keygen.set_defaults(handler=_keygen)

    pack = commands.add_parser("pack", help="pack one file exactly as the daemon does")
    pack.add_argument("--key-file", type=Path, help="master key (default: from --config)")
    _config_arg(pack)
    pack.add_argument("--level", type=int, choices=range(4), help="compression level 0-3")
    pack.add_argument("input", help="file to pack, or - for stdin")
    pack.add_argument("output", help="packed file to write, or - for stdout")
    pack.set_defaults(handler=_pack)

    unpack = commands.add_parser("unpack", help="verify, decrypt and gunzip one object")
    unpack.add_argument(
        "--key-file", type=Path, action="append", help="master key; repeat for old keys"
    )
    _config_arg(unpack)
    unpack.add_argument("input", help="packed file, or - for stdin")
    unpack.add_argument("output", help="plaintext to write, or - for stdout")
    unpack.set_defaults(handler=_unpack)

    ls = commands.add_parser("ls", help="list archived segments")
    _config_arg(ls)
    _filter_args(ls)
    ls.add_argument("--versions", action="store_true", help="every version and delete marker")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    _restore_args(ls, "ls")
    ls.set_defaults(handler=_ls)

    get = commands.add_parser("get", help="download, verify, decrypt and decompress segments")
    _config_arg(get)
    _filter_args(get)
    get.add_argument("--key-file", type=Path, action="append", help="master key; repeatable")
    get.add_argument("--grep", metavar="RE", help="only lines matching this regex")
    get.add_argument("--version-id", help="one specific object version")
    get.add_argument("--text", action="store_true", help="print only the message text")
    get.add_argument("--out", required=True, help="directory, or - for stdout (time order)")
    _restore_args(get, "get")
    get.set_defaults(handler=_get)

    verify = commands.add_parser(
        "verify", help="audit: every object authenticates, every stream is continuous"
    )
    _config_arg(verify)
    _filter_args(verify)
    _restore_args(verify, "verify")
    verify.set_defaults(handler=_verify)
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file (default /etc/archiverd/...)")


def _filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--container", help="container id prefix or name")
    parser.add_argument("--host", help="host that archived the segments")
    parser.add_argument("--since", help="RFC 3339 time or relative (2h, 30m, 7d)")
    parser.add_argument("--until", help="RFC 3339 time or relative (2h, 30m, 7d)")
    parser.add_argument("--label", action="append", default=[], metavar="K=V")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if args.log_level is None and args.log_format is None:
        configure_logging(settings.log.level, settings.log.format)
    return settings


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from archiverd.service.daemon import Daemon

    settings = _settings(args)
    daemon = Daemon(settings, load_settings=lambda: load_settings(args.config))
    startup.resume()  # loaded: see `archiverd.startup`
    if args.once:
        return asyncio.run(daemon.run_once(seal_open=args.seal_open))
    if args.seal_open:
        print("archiverd run: --seal-open only applies with --once", file=sys.stderr)
        return 2
    return asyncio.run(daemon.serve())


def _check(args: argparse.Namespace) -> int:
    from archiverd.service.check import run_checks

    return run_checks(_settings(args))


def _keygen(args: argparse.Namespace) -> int:
    from archiverd.pack.commands import keygen

    key_id = keygen(args.out)
    print(f"wrote {args.out} (mode 600), key id {key_id}", file=sys.stderr)
    return 0


def _pack(args: argparse.Namespace) -> int:
    from archiverd.credentials import resolve_credentials
    from archiverd.pack import load_key_files, load_keyring
    from archiverd.pack.commands import pack_file

    if args.key_file is not None:
        keyring = load_key_files([args.key_file])
        level = args.level
    else:
        settings = _settings(args)
        encryption = settings.encryption
        keyring = load_keyring(encryption, credentials=resolve_credentials(settings.destination))
        level = args.level if args.level is not None else encryption.compression_level
    if level is None:
        from archiverd.config import DEFAULT_COMPRESSION_LEVEL

        level = DEFAULT_COMPRESSION_LEVEL
    pack_file(args.input, args.output, keyring, level=level)
    return 0


def _unpack(args: argparse.Namespace) -> int:
    from archiverd.credentials import resolve_credentials
    from archiverd.pack import load_key_files, load_keyring
    from archiverd.pack.commands import unpack_file

    if args.key_file:
        keyring = load_key_files(args.key_file)
    else:
        settings = _settings(args)
        keyring = load_keyring(
            settings.encryption, credentials=resolve_credentials(settings.destination)
        )
    unpack_file(args.input, args.output, keyring)
    return 0


def _restore_args(parser: argparse.ArgumentParser, command: str) -> None:
    from archiverd.restore import arguments

    arguments.add_url_arguments(parser)
    if command == "ls":
        arguments.add_ls_arguments(parser)
    elif command == "verify":
        arguments.add_verify_arguments(parser)
    else:
        arguments.add_get_arguments(parser)


def _ls(args: argparse.Namespace) -> int:
    from archiverd.restore.commands import run_ls

    return run_ls(args, _settings(args))


def _get(args: argparse.Namespace) -> int:
    from archiverd.restore.commands import run_get

    return run_get(args, _settings(args))


def _verify(args: argparse.Namespace) -> int:
    from archiverd.restore.verify import run_verify

    return run_verify(args, _settings(args))
