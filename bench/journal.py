"""Benchmark what the full-disk guard costs each journal transaction.

    .venv/bin/python bench/journal.py [--transactions 1000] [--rounds 5]

Commits, in alternating rounds, --transactions small journal transactions (one fingerprint
update each, the collector's most frequent write) with the disk reserve's check before each
(as the daemon runs) and without it (the baseline, measured in the same run), and prints both
median rates, their ratio and the check's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rate(journal: object, file_id: int, count: int) -> float:
    update = journal.update_fingerprint  # type: ignore[attr-defined]
    started = time.perf_counter()
    for n in range(count):
        update(file_id, f"{n:064x}", 4096)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from archiverd.journal.db import Journal

    with tempfile.TemporaryDirectory(dir=REPO) as tmp:
        journal = Journal.open(Path(tmp) / "state")
        stream = journal.stream_id("bench", "stream")
        file_id = journal.add_file(
            stream, path="/x", dev=1, ino=1, fp="0", fp_len=1, gz=False, base=0
        )
        reserve = journal.reserve
        assert reserve is not None
        assert reserve.held
        rate(journal, file_id, 200)  # warm up
        baselines, guarded = [], []
        for n in range(args.rounds):  # alternate, first one then the other: drift hits both
            for check in (n % 2 == 0, n % 2 == 1):
                journal.reserve = reserve if check else None
                (guarded if check else baselines).append(rate(journal, file_id, args.transactions))
        started = time.perf_counter()
        for _ in range(10_000):
            reserve.before_write()
        check_us = (time.perf_counter() - started) / 10_000 * 1e6
        journal.close()
    base, with_check = statistics.median(baselines), statistics.median(guarded)
    print(f"without the reserve check: {base:8.0f} transactions/s (baseline, median)")
    print(f"with the reserve check:    {with_check:8.0f} transactions/s (median)")
    print(f"ratio guarded/baseline:    {with_check / base:8.3f}")
    print(f"the check alone:           {check_us:8.2f} us per transaction")


if __name__ == "__main__":
    main()
