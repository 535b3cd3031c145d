"""Configuration mistakes that used to be silent are refused with exit 78 naming the key, and
`check` tries what `run` will do: open the journal, bind the HTTP port (issue 11, item 6)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.service.test_daemon_process import REPO, archiverd_env


def archiverd(
    *args: str, env: dict[str, str], cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """`archiverd ARGS` as a process in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "archiverd", "--log-format", "json", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_empty_state_dir_is_refused_and_the_working_dir_untouched(tmp_path: Path) -> None:
    """ARCHIVERD_STATE__DIR='' exits 78 naming state.dir; nothing is written to the cwd and
    its mode is kept."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(mode=0o755)
    cwd.chmod(0o755)
    env = archiverd_env(tmp_path, ARCHIVERD_STATE__DIR="")
    for command in (("run", "--once"), ("check",)):
        result = archiverd(*command, env=env, cwd=cwd)
        assert result.returncode == 78, result.stderr
        assert "state.dir = ''" in result.stderr
        assert "ARCHIVERD_STATE__DIR" in result.stderr
        assert "absolute path" in result.stderr
    assert list(cwd.iterdir()) == []
    assert cwd.stat().st_mode & 0o777 == 0o755


@pytest.mark.slow
def test_file_url_with_a_host_is_refused_and_nothing_created(tmp_path: Path) -> None:
    """file://relative/dir (two slashes) exits 78 naming destination.url and the fix; the
    directory it would have meant at the root is never created, not even by `check`."""
    name = f"archiverd-test-{uuid.uuid4().hex}"
    env = archiverd_env(tmp_path, ARCHIVERD_DESTINATION__URL=f"file://relative/{name}")
    for command in (("check",), ("run", "--once")):
        result = archiverd(*command, env=env)
        assert result.returncode == 78, result.stderr
        assert "destination.url" in result.stderr
        assert f"file:///srv/relative/{name}" in result.stderr
    assert not Path("/", name).exists()
    assert not (tmp_path / "state").exists()


@pytest.mark.slow
def test_misspelled_environment_section_is_refused(tmp_path: Path) -> None:
    """ARCHIVERD_DESTINATON__URL (and an unknown key in a real section) exit 78, naming the
    variable and the likely spelling; the default destination is not silently used."""
    env = archiverd_env(
        tmp_path,
        ARCHIVERD_DESTINATON__URL="s3://bucket/prefix/",
        ARCHIVERD_SCHEDULE__UPLOAD_ATT="*:05",
    )
    for command in (("run", "--once"), ("check",)):
        result = archiverd(*command, env=env)
        assert result.returncode == 78, result.stderr
        assert "ARCHIVERD_DESTINATON__URL: there is no section 'destinaton'" in result.stderr
        assert "did you mean 'destination'?" in result.stderr
        assert "ARCHIVERD_SCHEDULE__UPLOAD_ATT: schedule has no key 'upload_att'" in result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.slow
def test_check_opens_the_journal(tmp_path: Path) -> None:
    """`check` on a corrupt journal fails with 73 naming the journal (as `run` would), and
    leaves its bytes for inspection."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    garbage = os.urandom(8192)
    (state / "journal.sqlite3").write_bytes(garbage)
    (state / "journal.sqlite3").chmod(0o600)
    env = archiverd_env(tmp_path)
    result = archiverd("check", env=env)
    assert result.returncode == 73, result.stdout
    assert "FAIL journal: cannot open the journal" in result.stdout
    assert "file is not a database" in result.stdout
    assert archiverd("run", "--once", env=env).returncode == 73
    assert (state / "journal.sqlite3").read_bytes() == garbage


def test_check_binds_the_http_port(tmp_path: Path) -> None:
    """`check` fails (78, naming http.listen) when the port is taken, as `run` would."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = archiverd_env(tmp_path, ARCHIVERD_HTTP__LISTEN=f"127.0.0.1:{port}")
        result = archiverd("check", env=env)
    assert result.returncode == 78, result.stdout
    assert f"FAIL http: http.listen = '127.0.0.1:{port}' cannot be bound" in result.stdout
    assert "ok   journal" in result.stdout
