"""systemd/archiverd.service: verified by systemd-analyze, hardened to exposure "OK" or better."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.tools import ROOT, tool

UNIT = ROOT / "systemd" / "archiverd.service"
EXEC_START = "ExecStart=/usr/bin/archiverd run --config /etc/archiverd/archiverd.toml"
# systemd's exposure levels, best first (src/analyze/analyze-security.c).
LEVELS = ["PERFECT", "SAFE", "OK", "MEDIUM", "EXPOSED", "UNSAFE"]
OVERALL = re.compile(r"Overall exposure level for archiverd\.service: ([\d.]+) (\w+)")


def _settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def _local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with only ExecStart's binary pointed at this venv's archiverd.

    systemd-analyze verify requires the ExecStart binary to exist; /usr/bin/archiverd exists
    only on an installed host, so the test copy names the same program from the test venv.
    """
    archiverd = Path(sys.executable).parent / "archiverd"
    assert archiverd.exists(), "the test venv has no archiverd entry point: run scripts/setup"
    source = UNIT.read_text() if text is None else text
    assert source.count(EXEC_START) == 1
    copy = tmp_path / "archiverd.service"
    copy.write_text(source.replace("ExecStart=/usr/bin/archiverd", f"ExecStart={archiverd}"))
    return copy


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    return subprocess.run(
        [analyze, "verify", "--recursive-errors=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _exposure(unit: Path) -> tuple[float, str, str]:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = OVERALL.search(done.stdout)
    assert match, f"no overall exposure line in:\n{done.stdout}\n{done.stderr}"
    return float(match.group(1)), match.group(2), done.stdout


def test_unit_verifies_clean(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit with no error or warning about it."""
    done = _verify(_local_copy(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "archiverd.service" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("line", "replacement", "complaint"),
    [
        ("ProtectSystem=strict", "ProtectSystem=strictly", "Failed to parse protect system"),
        ("ProtectSystem=strict", "ProtektSystem=strict", "Unknown key 'ProtektSystem'"),
    ],
)
def test_verify_catches_a_broken_unit(
    tmp_path: Path, line: str, replacement: str, complaint: str
) -> None:
    """A misspelt key or value in the unit makes the verify step fail, so it can catch drift."""
    text = UNIT.read_text()
    assert f"\n{line}\n" in text
    done = _verify(_local_copy(tmp_path, text.replace(f"\n{line}\n", f"\n{replacement}\n")))
    assert done.returncode != 0
    assert complaint in done.stderr


def test_security_exposure_is_ok_or_better(tmp_path: Path) -> None:
    """systemd-analyze security --offline rates the unit's exposure OK or better."""
    score, level, report = _exposure(_local_copy(tmp_path))
    assert level in LEVELS, report
    assert LEVELS.index(level) <= LEVELS.index("OK"), report
    assert score < 5.0, report


def test_security_rating_separates_hardened_from_bare(tmp_path: Path) -> None:
    """The same service without its hardening rates far worse: the score measures the unit."""
    bare = "\n".join(
        line
        for line in UNIT.read_text().splitlines()
        if line.startswith(("[", "Description=", "Type=", "ExecStart=", "WantedBy="))
    )
    score, level, _ = _exposure(_local_copy(tmp_path, bare + "\n"))
    hardened, _, _ = _exposure(_local_copy(tmp_path))
    assert LEVELS.index(level) > LEVELS.index("OK")
    assert score > hardened + 3


def test_unit_contract() -> None:
    """The unit runs `archiverd run` as Type=notify with the key only via LoadCredential."""
    settings = _settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"] == [EXEC_START.removeprefix("ExecStart=")]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["LoadCredential"] == ["archive.key:/etc/archiverd/archive.key"]
    assert int(settings["WatchdogSec"][0].removesuffix("s")) > 0
    assert settings["StateDirectory"] == ["archiverd"]
    assert settings["StateDirectoryMode"] == ["0700"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH"]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in settings["SystemCallFilter"]
    assert int(settings["LimitNOFILE"][0]) >= 65536
    read_only = settings["ReadOnlyPaths"][0].split()
    assert "-/var/lib/docker/containers" in read_only
    assert "-/var/log/pods" in read_only
    # Key material never rides in the environment or on the command line.
    assert "Environment" not in settings
    assert not any("key" in value.lower() for value in settings["ExecStart"])
