"""The README's promises: two commands, CI runs the test one, both walk-throughs work."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    """The text of one ``## title`` section."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without ARCHIVERD_* settings leaking in, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVERD_")}
    return {**env, **extra}


def test_readme_names_exactly_two_commands() -> None:
    """The two-commands block is scripts/demo and scripts/check, and no other script is named."""
    (block,) = code_blocks(section("Two commands"))
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["scripts/demo", "scripts/check"]
    assert set(re.findall(r"scripts/[\w-]+", README)) == {"scripts/demo", "scripts/check"}
    for command in commands:
        assert os.access(REPO / command, os.X_OK), command


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run executes scripts/check and nothing else."""
    lines = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-1] == "exec scripts/check"
    assert not [line for line in lines[:-1] if "scripts/" in line or "pytest" in line]


def test_readme_links_point_at_files() -> None:
    """Every relative link in the README names a file or directory of this repository
    (docs/ pages are written by other parts of the project and may land later)."""
    targets = re.findall(r"\]\(([^)#:]+)\)", README)
    assert targets
    missing = [t for t in targets if not (REPO / t).exists() and not t.startswith("docs/")]
    assert missing == []


@pytest.mark.slow
def test_demo_archives_and_restores(tmp_path: Path) -> None:
    """scripts/demo, as written, ends with a real archive listed and restored."""
    demo = tmp_path / "demo"
    result = subprocess.run(
        ["scripts/demo"],
        cwd=REPO,
        env=clean_env(ARCHIVERD_DEMO_DIR=str(demo), ARCHIVERD_DEMO_SECONDS="3"),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    restored = (demo / "restored.log").read_text().splitlines()
    sources = sorted(
        line
        for path in (demo / "state" / "demo").glob("*/*-json.log")
        for line in path.read_text().splitlines()
    )
    assert restored
    assert sorted(restored) == sources  # every line written, each once
    assert "shutdown complete" in result.stderr
    assert len(result.stdout.splitlines()) >= 2  # `ls`: a header and at least one object


@pytest.mark.slow
def test_quick_start_works_as_written(tmp_path: Path) -> None:
    """The 'your own log files' walk-through runs as printed and gets the three lines back."""
    quick = section("Quick start")
    blocks = [b for b in code_blocks(quick) if "archiverd keygen" in b]
    assert len(blocks) == 1
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks[0]],
        cwd=REPO,
        env=clean_env(HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    restored = [line for line in result.stdout.splitlines() if " hello " in line]
    assert [line.split(" ", 1)[1] for line in restored] == ["hello 1", "hello 2", "hello 3"]
    assert list((home / "archiverd-try" / "bucket").rglob("*"))


@pytest.mark.parametrize("doc", ["config/archiverd.toml", "docs/DEPLOY.md", "docs/FORMAT.md"])
def test_readme_links_the_references(doc: str) -> None:
    """Configuration, deployment and key management point at their full references."""
    assert f"]({doc})" in README


def test_readme_lists_every_metric() -> None:
    """The Operations section names each metric the daemon exports, and no others."""
    from archiverd.metrics import Metrics

    paragraph = section("Operations").split("**Metrics**", 1)[1].split("\n\n", 1)[0]
    documented = {
        "archiverd_" + name for name in re.findall(r"`([a-z_]*[a-z])(?:\{[a-z_]+\})?`", paragraph)
    }
    suffix = {"counter": "_total", "info": "_info"}
    exported = {
        family.name + suffix.get(family.type, "") for family in Metrics().registry.collect()
    }
    assert documented == exported
