"""Benchmark the daemon end to end against gzip and `archiverd pack`, on the same bytes.

    .venv/bin/python bench/daemon.py [--containers 8] [--container-mib 48] [--big-mib 256]
                                     [--only many|big] [--rounds 3] [--profile DIR]

Generates realistic docker json-file logs (templated messages, times rising within each
4 MB block, 10% stderr) in two layouts: MANY exited containers of --container-mib each,
and ONE BIG exited container of --big-mib. For each layout, in this one invocation and on
the same bytes:

- ``gzip -6`` and ``gzip -1`` over every log (one process after another, single-threaded);
- ``archiverd pack`` of every log (the packer alone: ISA-L gzip + AES-256-GCM);
- ``archiverd run --once`` (discover, seal at record boundaries, pack, spool, upload to a
  ``file://`` destination), the daemon end to end on all cores, as configured by default
  (scanning and packing on its threads); the same with one worker process per core
  (``worker_processes``, the default where the scanner is not compiled); and the same as
  installed where no C compiler is (``pure Python``: the scanner counts records with
  ``bytes.count`` passes instead of its compiled pass, `archiverd/formats/_scan.c`, and so
  runs worker processes);
- the daemon already running (``archiverd run``, ready before any log is there): the
  containers' directories are moved into its root at once, and it is timed from that move to
  its exit, SIGTERM sent once every segment is in its spool (so the upload on shutdown is in
  it). Its CPU from the move on: what a daemon that runs for days spends per byte, without
  the 0.3 CPU-seconds a process pays to start (imports, the journal), which ``run --once``
  pays in every run;
- ``run --once`` over a root with no container: the start-up and shutdown every ``run
  --once`` pays, subtracted from it for the daemon's per-byte rate ("daemon without it").

The daemon runs from this checkout, with its bytecode compiled first (as an install has it:
a shell with PYTHONDONTWRITEBYTECODE would otherwise compile every module in every run).

Every command runs --rounds times, interleaved, and the best run of each counts (least wall,
least CPU: on a shared machine that is what the code costs). Each prints MB per CPU-second
(user+sys of the child and every descendant: the daemon's forkserver and worker processes
are reaped by this script as their subreaper), MB/s wall, peak RSS (ru_maxrss of the child;
"+N MiB each helper" is the largest of those processes, whose pages are mostly shared with
their forkserver; for the daemon with worker processes, the peak PSS of all of them together,
sampled every 20 ms in one more, untimed run), and the daemon's ratios against ``gzip -6``,
``gzip -1``, the packer, the daemon with worker processes and the pure-Python daemon.
Targets (issue 14): >= 300 MB per CPU-second, >= 400 MB/s wall on 2 cores, peak RSS < 128 MiB.
The load average is printed beside the numbers.
--profile DIR also samples the daemon run with py-spy (`pip install py-spy`), one round:
DIR/<layout>.txt, collapsed stacks of every thread of every process.
"""

from __future__ import annotations

import argparse
import compileall
import ctypes
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from pack import _message  # noqa: E402  (the same message templates as bench/pack.py)

MB = 1_000_000
ARCHIVERD = [sys.executable, "-m", "archiverd"]
PROCESSES = "run --once, processes"
PURE = "run --once, pure Python"
RUNNING = "daemon already running"
STARTUP = "start-up alone"
_NO_COMPILED_SCAN = """\
import sys


class _NotBuilt:
    \"\"\"The compiled scanner as if no C compiler had built it.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "archiverd.formats._scan":
            raise ImportError(name)
        return None


sys.meta_path.insert(0, _NotBuilt())
"""


_BLOCKS: dict[int, bytes] = {}


def _block(index: int) -> bytes:
    """About 4 MB of json-file records (times rising within the block); four distinct
    blocks, generated once and reused, so generating hundreds of MB stays quick."""
    if index not in _BLOCKS:
        rng = random.Random(index)
        when = datetime(2026, 11, 23, 8, 0, tzinfo=UTC) + timedelta(minutes=10 * index)
        lines = []
        size = 0
        while size < 4 * MB:
            when += timedelta(microseconds=rng.randrange(20, 2_000))
            stamp = f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond:06d}{rng.randrange(1000):03d}Z"
            stream = "stderr" if rng.random() < 0.1 else "stdout"
            record = {"log": _message(rng, when) + "\n", "stream": stream, "time": stamp}
            line = json.dumps(record, separators=(",", ":")) + "\n"
            lines.append(line)
            size += len(line)
        _BLOCKS[index] = "".join(lines).encode()
    return _BLOCKS[index]


def make_container(root: Path, cid: str, size: int, seed: int) -> Path:
    """An exited docker container whose json-file log holds `size` bytes of whole records."""
    directory = root / cid
    directory.mkdir(parents=True)
    config = {
        "ID": cid,
        "Name": f"/bench-{cid[:6]}",
        "Config": {"Image": "bench", "Labels": {}},
        "State": {"Running": False, "Restarting": False},
    }
    (directory / "config.v2.json").write_text(json.dumps(config))
    log = directory / f"{cid}-json.log"
    written = 0
    blocks = seed
    with log.open("wb") as out:
        while written < size:
            # distinct blocks in turn: compressors see fresh data within their windows
            block = _block(blocks % 4)
            blocks += 1
            if written + len(block) > size:
                block = block[: block.rfind(b"\n", 0, size - written) + 1]
                if not block:
                    break
            out.write(block)
            written += len(block)
    return log


@dataclass
class Run:
    wall: float
    cpu: float
    rss_kib: int
    helpers_rss_kib: int = 0
    """Peak RSS of any other process the child started (the daemon's worker processes)."""
    pss_kib: int = 0
    """Peak proportional set size of the child and all its descendants together, sampled
    (shared pages counted once): the memory the whole tree really held."""


def _proc_stat(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()


def _tree_pss_kib(root: int) -> int:
    """Summed Pss (KiB) of `root` and its descendants now (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_proc_stat(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(found)
        tree |= found
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
                for line in rollup:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


class _PssSampler(threading.Thread):
    """Samples `_tree_pss_kib(pid)` every 20 ms until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, _tree_pss_kib(self.pid))


def _adopt_orphans() -> None:
    """Become the subreaper of every descendant (Linux), so processes the child starts and
    does not wait for itself (the daemon's forkserver and packing workers) are reaped here,
    and their CPU counted."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def measure(
    cmd: list[str] | str,
    *,
    env: dict[str, str] | None = None,
    quiet: bool = False,
    sample_pss: bool = False,
) -> Run:
    """Run one child (a shell pipeline if `cmd` is a string) and take its rusage, plus that
    of every descendant it left behind (reaped here as their subreaper)."""
    _adopt_orphans()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        shell=isinstance(cmd, str),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if quiet else None,
        env=env,
        cwd=REPO,  # `-m archiverd` imports this checkout's package
    )
    sampler = _PssSampler(proc.pid)
    if sample_pss:  # its own run: sampling takes CPU the timed runs must not lose
        sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    sampler.stopped.set()
    if sample_pss:
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd!r} failed with {proc.returncode}")
    cpu, helpers_rss = usage.ru_utime + usage.ru_stime, 0
    while True:  # orphans exit once the child is gone (a forkserver sees its pipe close)
        try:
            _, _, orphan = os.wait4(-1, 0)
        except ChildProcessError:
            break
        cpu += orphan.ru_utime + orphan.ru_stime
        helpers_rss = max(helpers_rss, orphan.ru_maxrss)
    return Run(wall, cpu, usage.ru_maxrss, helpers_rss, sampler.peak)


def write_config(
    base: Path, root: Path, key: Path, *, name: str = "archiverd", port: int = 0
) -> Path:
    """The daemon's config: `root` to archive into `base`/bucket, state in `base`/state,
    its HTTP endpoints on `port` (0: any free one)."""
    config = base / f"{name}.toml"
    config.write_text(
        f"""host = "bench"
[http]
listen = "127.0.0.1:{port or _free_port()}"
[[sources]]
kind = "docker"
path = "{root}"
[destination]
url = "file://{base / "bucket"}"
require_versioning = false
[encryption]
key_file = "{key}"
[state]
dir = "{base / "state"}"
spool_max_bytes = {1 << 40}
"""
    )
    return config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far (Linux /proc, clock ticks)."""
    fields = _proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spooled(state: Path) -> int:
    """Packed bodies published in the spool (``<id>.seg``, renamed from a temporary file once
    complete; each has a ``<id>.meta`` sidecar written before it)."""
    spool = state / "spool"
    try:
        return sum(1 for name in os.listdir(spool) if name.endswith(".seg"))
    except FileNotFoundError:
        return 0


def _started(config: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`archiverd run` with `config`, once its /healthz (on `port`) answers."""
    proc = subprocess.Popen(
        [*ARCHIVERD, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"the daemon did not start ({proc.wait()})") from None
            time.sleep(0.02)
    time.sleep(0.3)  # let its first look at the (empty) root finish
    return proc


def measure_running(
    base: Path, key: Path, root: Path, staged: list[Path], env: dict[str, str]
) -> Run:
    """The daemon as it runs for days: started and ready (its /healthz answers) before any
    log is there, then the exited containers' directories (one segment each) are moved into
    its root at once.
    Timed from that move to the daemon's exit, where SIGTERM was sent once every segment was
    in the spool: discover, seal, pack, spool, and the upload on shutdown. CPU is the
    daemon's (and its descendants') from the move on; its start-up is not in it."""
    _adopt_orphans()
    port = _free_port()
    config = write_config(base, root, key, name="running", port=port)
    state = base / "state"
    root.mkdir(exist_ok=True)
    proc = _started(config, port, env)
    try:
        before = _cpu_seconds(proc.pid)
        start = time.perf_counter()
        for directory in staged:
            os.rename(directory, root / directory.name)
        while _spooled(state) < len(staged):
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited early ({proc.returncode})")
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        for directory in staged:
            if (root / directory.name).exists():
                os.rename(root / directory.name, directory)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the daemon failed with {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime - before
    while True:
        try:
            _, _, orphan = os.wait4(-1, 0)
        except ChildProcessError:
            break
        cpu += orphan.ru_utime + orphan.ru_stime
    return Run(wall, cpu, usage.ru_maxrss)


def line(name: str, run: Run, mb: float, extra: str = "") -> None:
    print(
        f"  {name:22} {mb / run.cpu:7.0f} MB/CPU-s  {mb / run.wall:7.0f} MB/s wall  "
        f"cpu {run.cpu:6.2f} s  wall {run.wall:6.2f} s  peak RSS {run.rss_kib / 1024:5.0f} MiB"
        + (f" (+{run.helpers_rss_kib / 1024:.0f} MiB each helper)" if run.helpers_rss_kib else "")
        + (f" (all processes: peak PSS {run.pss_kib / 1024:.0f} MiB)" if run.pss_kib else "")
        + extra
    )


def best(runs: list[Run]) -> Run:
    """The best of repeated runs (least wall, least CPU, most memory): what the code costs,
    less the time other work on a shared machine took from it."""
    return Run(
        min(r.wall for r in runs),
        min(r.cpu for r in runs),
        max(r.rss_kib for r in runs),
        max(r.helpers_rss_kib for r in runs),
        max(r.pss_kib for r in runs),
    )


def layout(
    base: Path,
    name: str,
    sizes: list[int],
    key: Path,
    profile: Path | None,
    rounds_wanted: int,
) -> dict[str, Run]:
    root = base / "containers"
    logs = [
        make_container(root, f"{i:02x}{name}".ljust(64, "0"), s, i) for i, s in enumerate(sizes)
    ]
    total = sum(p.stat().st_size for p in logs) / MB
    files = " ".join(str(p) for p in logs)
    print(
        f"{name}: {len(logs)} exited container(s), {total:.0f} MB of json-file logs "
        f"(load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    packs = [sys.executable, __file__, "--child-pack", str(key), *map(str, logs)]
    config = write_config(base, root, key)
    once = [*ARCHIVERD, "run", "--once", "--config", str(config)]
    # the same daemon over a root with no container: start-up (imports, journal, key,
    # destination check) and shutdown, what every `run --once` pays before its first byte
    empty = base / "no-containers"
    empty.mkdir(exist_ok=True)
    idle = [
        *ARCHIVERD,
        "run",
        "--once",
        "--config",
        str(write_config(base, empty, key, name="idle")),
    ]
    cmd = once
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        # py-spy samples every thread (cProfile sees only the event loop's); its own CPU is
        # counted too, so a profiled run's figures are for guidance only
        spy = str(Path(sys.executable).with_name("py-spy"))
        out = str(profile / f"{name}.txt")
        cmd = [spy, "record", "--subprocesses", "-r", "250", "-f", "raw", "-o", out, "--", *cmd]
    quiet = {**env, "ARCHIVERD_LOG__LEVEL": "warning"}
    # the same daemon scanning and packing in worker processes, one per core
    processes = {**quiet, "ARCHIVERD_WORKER_PROCESSES": str(os.cpu_count() or 1)}
    shim = base / "no-compiled-scan"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(_NO_COMPILED_SCAN)
    pure = {**quiet, "PYTHONPATH": f"{shim}{os.pathsep}{REPO}"}
    jobs: dict[str, tuple[list[str] | str, dict[str, str] | None, bool]] = {
        "gzip -6": (f"cat {files} | gzip -6 -c > /dev/null", None, False),
        "gzip -1": (f"cat {files} | gzip -1 -c > /dev/null", None, False),
        "archiverd pack": (packs, env, True),
        PROCESSES: (once, processes, False),
        PURE: (once, pure, False),
        "archiverd run --once": (cmd, quiet, False),
        STARTUP: (idle, quiet, False),
    }
    rounds: dict[str, list[Run]] = {label: [] for label in [*jobs, RUNNING]}
    staged = [log.parent for log in logs]
    for _ in range(rounds_wanted):  # interleaved, so a busy spell hits every one alike
        for label, (command, job_env, silent) in jobs.items():
            shutil.rmtree(base / "bucket", ignore_errors=True)
            shutil.rmtree(base / "state", ignore_errors=True)
            rounds[label].append(measure(command, env=job_env, quiet=silent))
        shutil.rmtree(base / "bucket", ignore_errors=True)
        shutil.rmtree(base / "state", ignore_errors=True)
        rounds[RUNNING].append(measure_running(base, key, base / "live", staged, quiet))
        uploaded = list((base / "bucket").rglob("*.log.gz.enc.versions"))
        if len(uploaded) != len(staged):
            raise SystemExit(f"the running daemon stored {len(uploaded)} of {len(staged)} objects")
    runs = {label: best(measured) for label, measured in rounds.items()}
    start = runs.pop(STARTUP)
    shutil.rmtree(base / "bucket", ignore_errors=True)
    shutil.rmtree(base / "state", ignore_errors=True)
    # untimed: the memory of the daemon and its worker processes together
    sampled = measure(once, env=processes, sample_pss=True)
    runs[PROCESSES].pss_kib = sampled.pss_kib
    objects = [p for p in (base / "bucket").rglob("*") if p.is_file()]
    stored = sum(p.stat().st_size for p in objects)
    for label, run in runs.items():
        extra = ""
        if label == "archiverd run --once":
            extra = f"  ({len(objects)} objects, {stored / MB:.0f} MB stored)"
        line(label, run, total, extra)
    daemon = runs["archiverd run --once"]
    # The daemon's start-up (imports, the journal) is paid once per process, not per byte:
    # measured alone (best of the rounds, as the rest) so the per-byte rate shows too.
    marginal = max(daemon.cpu - start.cpu, 1e-9)
    print(
        f"  start-up alone (run --once, no container): cpu {start.cpu:.2f} s, wall "
        f"{start.wall:.2f} s, peak RSS {start.rss_kib / 1024:.0f} MiB; daemon without it: "
        f"{total / marginal:.0f} MB/CPU-s"
    )
    for label, baselines in (
        ("archiverd run --once", ("gzip -6", "gzip -1", "archiverd pack", PROCESSES, PURE)),
        (RUNNING, ("gzip -6", "gzip -1", "archiverd pack", "archiverd run --once")),
    ):
        for base_name in baselines:
            ref, ours = runs[base_name], runs[label]
            print(
                f"  {label} vs {base_name:22} {ref.cpu / ours.cpu:5.2f}x per CPU-second, "
                f"{ref.wall / ours.wall:5.2f}x wall"
            )
    shutil.rmtree(root)
    shutil.rmtree(base / "bucket", ignore_errors=True)
    shutil.rmtree(base / "state", ignore_errors=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=8)
    parser.add_argument("--container-mib", type=float, default=48)
    parser.add_argument("--big-mib", type=float, default=256)
    parser.add_argument("--only", choices=("many", "big"))
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the best counts")
    args = parser.parse_args()
    rounds = 1 if args.profile is not None else args.rounds
    print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    compileall.compile_dir(REPO / "archiverd", quiet=1)
    with tempfile.TemporaryDirectory(prefix="archiverd-bench-daemon-") as tmp:
        base = Path(tmp)
        key = base / "archive.key"
        subprocess.run(
            [*ARCHIVERD, "keygen", "--out", str(key)],
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
        )
        if args.only in (None, "many"):
            each = int(args.container_mib * (1 << 20))
            layout(base, "many", [each] * args.containers, key, args.profile, rounds)
        if args.only in (None, "big"):
            layout(base, "big", [int(args.big_mib * (1 << 20))], key, args.profile, rounds)


def child_pack(key: Path, logs: list[str]) -> None:
    """Pack every log in one process as `archiverd pack` and the daemon's packer do (ISA-L
    gzip + AES-256-GCM + both SHA-256s), into a sink that discards the bytes: no file is
    written, and no device path is ever handed to a command that publishes by rename."""
    from archiverd.config import DEFAULT_COMPRESSION_LEVEL
    from archiverd.pack import load_key_files, pack_stream, tune_allocator

    class Discard(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            return len(data)

    tune_allocator()
    keyring = load_key_files([key])
    for log in logs:
        with open(log, "rb") as src:
            pack_stream(src, Discard(), keyring, level=DEFAULT_COMPRESSION_LEVEL)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child-pack":
        child_pack(Path(sys.argv[2]), sys.argv[3:])
    else:
        main()
