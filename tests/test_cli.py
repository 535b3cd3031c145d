"""The command line: exit codes and messages for the cases every command shares."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from archiverd import __version__
from archiverd.cli import main
from tests.restore.corpus import write_config, write_key


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """`archiverd --version` prints the package version and exits 0."""
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"archiverd {__version__}\n"


def test_bad_config_exits_78_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config error exits with EX_CONFIG and a message naming the key, no traceback."""
    config = tmp_path / "c.toml"
    config.write_text('[destination]\nurl = "http://x"\n')
    assert main(["check", "--config", str(config)]) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"archiverd check: invalid configuration in {config}:\n")
    assert "destination.url = 'http://x'" in err
    assert "Traceback" not in err


def test_check_reports_state_dir_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`archiverd check` prints a FAIL line for an unusable state dir and exits non-zero."""
    state = tmp_path / "state"
    state.mkdir(mode=0o775)
    state.chmod(0o775)
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\ndir = "{state}"\n')
    assert main(["check", "--config", str(config)]) != 0
    assert f"FAIL state dir: state.dir {str(state)!r} has mode 775" in capsys.readouterr().out


def test_logs_are_json_lines_when_not_a_terminal(tmp_path: Path) -> None:
    """Run as a subprocess (stderr a pipe), structlog writes one JSON object per line."""
    code = (
        "from archiverd.logs import configure_logging; import structlog;"
        "configure_logging('info', 'auto');"
        "structlog.get_logger().info('hello', container_id='abc')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    (line,) = result.stderr.splitlines()
    event = json.loads(line)
    assert (event["event"], event["container_id"], event["level"]) == ("hello", "abc", "info")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse rejects an unknown command with exit code 2."""
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_quick_exit_waits_for_threads_still_running() -> None:
    """`_exit_now` returns (Python exits as usual) while another thread is alive."""
    import threading

    from archiverd.cli import _exit_now

    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        _exit_now(0)  # would end pytest here if it exited
    finally:
        release.set()
        other.join()


def test_quick_exit_leaves_a_failed_flush_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_exit_now` returns when stdout cannot be flushed (a reader gone, a full disk), so the
    interpreter's own exit reports it."""
    import io

    from archiverd import cli
    from archiverd.cli import _exit_now

    class Full(io.StringIO):
        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_alone", lambda: True)  # so the flush is what stops it
    monkeypatch.setattr(sys, "stdout", Full())
    _exit_now(0)  # would end pytest here if it exited


def test_a_restore_process_runs_atexit_hooks_before_its_quick_exit(tmp_path: Path) -> None:
    """`ls` as the executable: atexit hooks run before the quick exit, the exit code is
    the command's, and nothing runs after it."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[destination]\nurl = "file://{bucket}"\n')
    script = (
        "import atexit, sys\n"
        "from archiverd.cli import main\n"
        "atexit.register(lambda: print('atexit hook ran'))\n"
        "main(['ls', '--config', sys.argv[1]], quick_exit=True)\n"
        "print('after main')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "FIRST (UTC)  LAST (UTC)  HOST  CONTAINER  SEQ  SIZE",
        "atexit hook ran",
    ]


def test_in_process_callers_keep_the_interpreter(tmp_path: Path) -> None:
    """`main` without quick_exit (tests, embedding) returns the exit code of `ls`."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[destination]\nurl = "file://{bucket}"\n')
    assert main(["ls", "--config", str(config)]) == 0


def test_a_profiled_restore_command_still_writes_its_profile(tmp_path: Path) -> None:
    """`python -m cProfile -o F -m archiverd ls`: no quick exit under a profiler, so the
    profile is written when the command returns."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[destination]\nurl = "file://{bucket}"\n')
    profile = tmp_path / "ls.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "archiverd", "ls",
         "--config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0


@pytest.mark.parametrize("command", ["ls", "verify"])
def test_a_listing_to_a_full_disk_is_one_line_not_a_traceback(tmp_path: Path, command: str) -> None:
    """`ls` or `verify` with stdout on a full disk (/dev/full): exit 74 (EX_IOERR) and one
    line saying why; no traceback, and no second failure when the process exits. (A
    traceback and exit 1 before.)"""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    key, _ = write_key(tmp_path / "archive.key")
    config = write_config(tmp_path / "c.toml", url=bucket.as_uri(), key_file=key)
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "archiverd", command, "--config", str(config)],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert (done.returncode, done.stderr.decode()) == (
        74,
        f"archiverd {command}: I/O failed: No space left on device\n",
    )


@pytest.mark.parametrize("closed", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_the_executable_started_with_a_standard_descriptor_closed(
    tmp_path: Path, closed: int
) -> None:
    """Started with fd 0, 1 or 2 closed (a careless cron job or supervisor), `ls` exits 0,
    says nothing, and writes its table where stdout goes. (With stdout closed it died with
    a traceback: sys.stdout was None.)"""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[destination]\nurl = "file://{bucket}"\n')
    out, err = tmp_path / "out", tmp_path / "err"
    redirect = {0: f">{out} 2>{err}", 1: f"2>{err}", 2: f">{out}"}[closed]
    command = f"exec {closed}>&-; {sys.executable} -m archiverd ls --config {config} {redirect}"
    done = subprocess.run(["bash", "-c", command], timeout=60, check=False)
    assert done.returncode == 0
    if closed != 2:
        assert err.read_text() == ""
    if closed != 1:
        assert out.read_text().startswith("FIRST (UTC)")


def test_no_file_opened_lands_on_a_closed_standard_descriptor(tmp_path: Path) -> None:
    """With fds 1 and 2 closed, the first thing the executable does puts /dev/null on them:
    a file it opens then (a journal, a key) can never become fd 1 or 2, where a stray print
    or a C library's message would write into it."""
    script = (
        "import os, sys\n"
        "os.close(1); os.close(2)\n"
        "from archiverd.cli import reopen_standard_descriptors\n"
        "reopen_standard_descriptors()\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "links = [os.readlink(f'/proc/self/fd/{n}') for n in (1, 2)]\n"
        "os.write(os.open(sys.argv[2], os.O_WRONLY), repr((fd > 2, links)).encode())\n"
    )
    report = tmp_path / "report"
    report.touch()
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "report"), str(report)],
        timeout=60,
        check=True,
    )
    assert report.read_text() == repr((True, ["/dev/null", "/dev/null"]))


@pytest.mark.parametrize("command", [["ls"], ["get", "--out", "-"], ["verify"]])
def test_an_unreachable_bucket_is_not_promised_a_retry(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """`ls`, `get` and `verify` against an endpoint nobody listens on: exit 75 (EX_TEMPFAIL)
    saying to try again later. The destination's message ended in "will retry", words for
    the daemon, which does; the command had already given up."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key, _ = write_key(tmp_path / "archive.key")
    config = write_config(
        tmp_path / "c.toml",
        url="s3://bucket/prefix/",
        endpoint=f"http://127.0.0.1:{port}",
        key_file=key,
        credentials=("x", "y"),
    )
    code = main([command[0], "--config", str(config), *command[1:]])
    said = capsys.readouterr().err
    assert code == 75
    assert said.startswith(
        f"archiverd {command[0]}: ListObjectsV2 s3://bucket/prefix/: network error (Could not "
        f'connect to the endpoint URL: "http://127.0.0.1:{port}/bucket?'
    )
    assert said.endswith('"); try again later\n')
