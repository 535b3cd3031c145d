"""docs/DEPLOY.md's state-dir and full-disk statements match what the code does."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from archiverd.errors import StateError, StateLockedError
from archiverd.spool import space
from archiverd.spool.statedir import StateLock, prepare_state_dir

DOC = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md").read_text()
STATE = DOC.split("## The state directory", 1)[1].split("\n## ", 1)[0]
DISK = DOC.split("**Disk full**", 1)[1].split("## The state directory", 1)[0]


def test_refusals_and_exit_codes_are_the_documented_ones(tmp_path: Path) -> None:
    """A dir writable by others fails with the doc's words and exit 73; a held lock with 79."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(StateError) as caught:
        prepare_state_dir(state)
    assert caught.value.exit_code == 73
    assert "refuses (exit 73)" in STATE
    assert "writable by group or others" in str(caught.value)
    assert '"writable by group or others"' in STATE
    state.chmod(0o755)
    prepare_state_dir(state)
    assert state.stat().st_mode & 0o777 == 0o700
    assert "tightened to 0700" in STATE
    held = StateLock(state)
    try:
        with pytest.raises(StateLockedError) as locked:
            StateLock(state)
    finally:
        held.release()
    assert locked.value.exit_code == 79
    assert "exits **79**" in STATE
    assert "in use by another archiverd (pid" in str(locked.value)


def test_reserve_sizes_are_the_documented_ones() -> None:
    """The reserve's fraction and bounds quoted in the doc are the constants in use."""
    match = re.search(r"1/(\d+) of the file system \((\d+) KiB to (\d+) MiB\)", DISK)
    assert match is not None
    fraction, low, high = (int(g) for g in match.groups())
    assert (low * 1024, high * 1024 * 1024) == (space.MIN_RESERVE, space.MAX_RESERVE)
    assert space.reserve_size(Path("/")) == max(
        space.MIN_RESERVE, min(space.MAX_RESERVE, _fs_bytes(Path("/")) // fraction)
    )
    assert "`state.dir/reserve`" in DISK
    assert space.RESERVE_NAME == "reserve"


def _fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


@pytest.mark.parametrize("what", ["a file", "a symlink to no directory"])
def test_a_state_dir_that_is_no_directory_says_what_it_is(tmp_path: Path, what: str) -> None:
    """state.dir naming a file, or a symlink to none: exit 73 saying what it is (it said
    "cannot be created (File exists)", which reads as a permissions problem); nothing there
    is touched."""
    state, target = tmp_path / "state", tmp_path / "target"
    if what == "a file":
        state.write_text("a file")
    else:
        state.symlink_to(target)
    with pytest.raises(StateError) as caught:
        prepare_state_dir(state)
    assert (caught.value.exit_code, str(caught.value)) == (
        73,
        f"state.dir {str(state)!r} is {what}, not a directory: point state.dir at a directory "
        "(archiverd creates it, mode 0700, where it is missing)",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
