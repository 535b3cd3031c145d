"""CRI (kubelet) and directory sources against files written the way their writers do."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from archiverd.config import SourceSettings
from archiverd.journal.db import Journal
from tests.sources.helpers import (
    archived,
    archived_whole,
    collector,
    cri_line,
    cri_lines,
    settings,
)


async def test_cri_rotation_gzip_restart_and_removal(tmp_path: Path, state_dir: Path) -> None:
    """kubelet rotation (N.log.<ts>, gzip of older ones), a restart, then pod removal."""
    root = tmp_path / "pods"
    cdir = root / "default_web-7d9f_0c1d-uid" / "nginx"
    cdir.mkdir(parents=True)
    live = cdir / "0.log"
    live.write_bytes(cri_lines(0, 40))
    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="cri", path=root), max_segment_bytes=2000), journal
    )
    await coll.seal_all(include_open=False)
    # kubelet: rename the live file away, the runtime reopens 0.log; later gzip the old one.
    os.replace(live, cdir / "0.log.20261123-080000")
    live.write_bytes(cri_lines(40, 10))
    os.replace(live, cdir / "0.log.20261123-080100")
    live.write_bytes(cri_lines(50, 10))
    rotated = cdir / "0.log.20261123-080000"
    (cdir / "0.log.20261123-080000.gz").write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()
    await coll.seal_all(include_open=False)
    (cdir / "1.log").write_bytes(cri_lines(100, 5))  # the container restarted: 0 is finished
    await coll.seal_all(include_open=False)
    shutil.rmtree(root / "default_web-7d9f_0c1d-uid")
    await coll.seal_all(include_open=False)
    arcs = archived(journal, tmp_path)
    assert len(arcs) == 2
    zero = arcs["0c1d-uid-nginx-0"]
    zero.assert_contiguous()
    zero.assert_data(cri_lines(0, 60))
    one = arcs["0c1d-uid-nginx-1"]
    one.assert_data(cri_lines(100, 5))
    desc = zero.segments[0][0]
    assert desc.container_name == "default/web-7d9f/nginx"
    assert desc.labels["io.kubernetes.pod.uid"] == "0c1d-uid"
    await coll.aclose()
    journal.close()


async def test_cri_idle_finishes_only_with_once(tmp_path: Path, state_dir: Path) -> None:
    """A running CRI stream idle past idle_seconds is sealed by seal_all (run --once)."""
    root = tmp_path / "pods"
    cdir = root / "ns_pod_uid" / "c"
    cdir.mkdir(parents=True)
    (cdir / "0.log").write_bytes(cri_lines(0, 3) + cri_line("half", tag="P"))
    os.utime(cdir / "0.log", (1, 1))
    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="cri", path=root, idle_seconds=60)), journal
    )
    assert await coll.seal_all(include_open=False) == 1
    [arc] = archived(journal, tmp_path).values()
    arc.assert_data(cri_lines(0, 3) + cri_line("half", tag="P"))
    await coll.aclose()
    journal.close()


async def test_directory_rename_rotation_and_deletion(tmp_path: Path, state_dir: Path) -> None:
    """A glob'd file renamed away continues into its replacement; a deleted one is finished."""
    root = tmp_path / "shared"
    root.mkdir()
    app = root / "app.log"
    app.write_bytes(b"a1\na2\n")
    (root / "ignored.txt").write_bytes(b"not matched\n")
    journal = Journal.open(state_dir)
    coll = collector(
        settings(state_dir, SourceSettings(kind="directory", path=root, glob="*.log")), journal
    )
    await coll.seal_all(include_open=False)
    with app.open("ab") as out:
        out.write(b"a3\n")
    os.replace(app, root / "app.log.1")  # renamed away, outside the glob
    app.write_bytes(b"b1\n")
    await coll.seal_all(include_open=False)
    (root / "app.log.1").unlink()
    with app.open("ab") as out:
        out.write(b"b2 no newline")
    app.unlink()
    await coll.seal_all(include_open=False)
    arcs = archived(journal, tmp_path)
    [arc] = arcs.values()
    arc.assert_contiguous()
    arc.assert_data(b"a1\na2\na3\nb1\nb2 no newline")
    await coll.aclose()
    journal.close()


async def test_cri_file_held_empty_then_rotated_and_gzipped_while_down(
    tmp_path: Path, state_dir: Path
) -> None:
    """kubelet's layout, as the docker test of the same name: while archiverd is down the
    live file it held empty is filled, renamed away and gzipped (a new inode), and a new one
    written. After the restart every line is archived once and nothing is recorded lost."""
    root = tmp_path / "pods"
    cdir = root / "default_web-7d9f_0c1d-uid" / "nginx"
    cdir.mkdir(parents=True)
    live = cdir / "0.log"
    live.write_bytes(cri_lines(0, 40))
    cfg = settings(state_dir, SourceSettings(kind="cri", path=root), max_segment_bytes=2000)
    journal = Journal.open(state_dir)
    coll = collector(cfg, journal)
    await coll.seal_all(include_open=False)
    os.replace(live, cdir / "0.log.20261123-080000")
    live.touch()
    for _ in range(3):  # the new live file is held, empty; the old one's bytes are packed
        await coll.seal_all(include_open=False)
    await coll.aclose()
    live.write_bytes(cri_lines(40, 10))  # archiverd is down from here
    rotated = cdir / "0.log.20261123-080100"
    os.replace(live, rotated)
    (cdir / "0.log.20261123-080100.gz").write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()
    live.write_bytes(cri_lines(50, 10))
    coll = collector(cfg, journal)
    await coll.seal_all(include_open=False)
    shutil.rmtree(root / "default_web-7d9f_0c1d-uid")  # the pod is gone: its stream ends
    await coll.seal_all(include_open=False)
    archived_whole(journal, tmp_path, cri_lines(0, 60))
    await coll.aclose()
    journal.close()
