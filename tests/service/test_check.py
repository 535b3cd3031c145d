"""`archiverd check` runs every check, prints one line each, and fails on any failure."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from archiverd.config import Settings, load_settings
from archiverd.errors import ConfigError, RetryableFailure, StateError
from archiverd.service.check import check_state_dir, run_checks


def settings_for(tmp_path: Path, state: Path) -> Settings:
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\ndir = "{state}"\n')
    return load_settings(config)


def test_state_dir_is_created_private(tmp_path: Path) -> None:
    """A missing state dir is created with mode 0700."""
    state = tmp_path / "new" / "state"
    detail = check_state_dir(settings_for(tmp_path, state))
    assert detail == f"{state} writable, mode 700, owned by uid {os.geteuid()}"
    assert state.stat().st_mode & 0o777 == 0o700


def test_readable_state_dir_is_tightened_writable_one_refused(tmp_path: Path) -> None:
    """Same rule as `run`: a 0755 dir of ours is tightened to 0700; a 0775 one is refused
    with the fix, and left as it was."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    check_state_dir(settings_for(tmp_path, state))
    assert state.stat().st_mode & 0o777 == 0o700
    state.chmod(0o775)
    with pytest.raises(StateError) as caught:
        check_state_dir(settings_for(tmp_path, state))
    assert str(caught.value) == (
        f"state.dir {str(state)!r} has mode 775: it is writable by group or others, who could "
        "plant symlinks in it; archiverd refuses it rather than fix it: inspect its contents, "
        f"then run `chmod 700 {state}`"
    )
    assert state.stat().st_mode & 0o777 == 0o775


def test_every_check_runs_and_first_failure_sets_exit_code(tmp_path: Path) -> None:
    """A failing check does not stop later ones; the exit code is the first failure's."""

    def bad(_: Settings) -> str:
        raise ConfigError("destination.url is wrong")

    out = io.StringIO()
    code = run_checks(
        settings_for(tmp_path, tmp_path / "s"),
        [("first", lambda _: "fine"), ("second", bad), ("third", lambda _: "also fine")],
        out,
    )
    assert code == 78
    assert out.getvalue().splitlines() == [
        "ok   first: fine",
        "FAIL second: destination.url is wrong",
        "ok   third: also fine",
        "2 of 3 checks passed",
    ]


def test_all_passing_exits_zero(tmp_path: Path) -> None:
    """Exit code 0 only when every check passed."""
    out = io.StringIO()
    assert run_checks(settings_for(tmp_path, tmp_path / "s"), [("a", lambda _: "ok")], out) == 0
    assert out.getvalue().endswith("1 of 1 checks passed\n")


def test_an_unreachable_destination_is_not_promised_a_retry(tmp_path: Path) -> None:
    """`check` runs once: a destination's transient failure says to try again later, with
    the exit code of a transient failure (75), not "will retry", which only the daemon does."""

    def unreachable(_: Settings) -> str:
        raise RetryableFailure("GetBucketVersioning s3://b/: network error (refused); will retry")

    out = io.StringIO()
    code = run_checks(settings_for(tmp_path, tmp_path / "s"), [("destination", unreachable)], out)
    assert (code, out.getvalue().splitlines()) == (
        75,
        [
            "FAIL destination: GetBucketVersioning s3://b/: network error (refused); try again "
            "later",
            "0 of 1 checks passed",
        ],
    )
