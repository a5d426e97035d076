"""What one check of the process guard costs once the machine is crowded: counting every
shard's processes and threads, as the guard does now (``ProcessTable``: one read of /proc for
all shards) and as it did up to aa69a9b (psutil: each shard's ``children``, which reads every
process's stat, then each process's thread count), side by side on the same processes.

K shards, each a tree of N sleeping processes (Linux; bounded: K x N processes in all, each
ended here by its process group):

    .venv/bin/python benchmarks/bench_guard_count.py [--shards 1,4,16] [--processes 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poolnet_desktop.runtime.member.process_table import ProcessTable  # noqa: E402

# A shard: a process that forks N - 1 sleeping children, says so, and sleeps.
TREE = r"""
import os, sys, time
for _ in range(int(sys.argv[1]) - 1):
    if os.fork() == 0:
        time.sleep(120)
        os._exit(0)
os.write(1, b"ready\n")
time.sleep(120)
"""


def start_trees(shards: int, each: int) -> list[subprocess.Popen[bytes]]:
    trees = [subprocess.Popen([sys.executable, "-c", TREE, str(each)], stdout=subprocess.PIPE,
                              start_new_session=True) for _ in range(shards)]
    for tree in trees:
        assert tree.stdout is not None and tree.stdout.readline() == b"ready\n"
    return trees


def stop_trees(trees: list[subprocess.Popen[bytes]]) -> None:
    for tree in trees:
        os.killpg(tree.pid, signal.SIGKILL)
        tree.wait()
        assert tree.stdout is not None
        tree.stdout.close()


def with_psutil(roots: list[int]) -> dict[int, int]:
    """The guard's count up to aa69a9b: a walk per shard."""
    counts = {}
    for root in roots:
        process = psutil.Process(root)
        total = 0
        for member in [process, *process.children(recursive=True)]:
            try:
                total += member.num_threads()
            except psutil.Error:
                pass
        counts[root] = total
    return counts


def with_table(roots: list[int]) -> dict[int, int]:
    """The guard's count now: one read of /proc for every shard."""
    table = ProcessTable.read()
    return {root: table.tree_threads(root) for root in roots}


def timed(count: Callable[[list[int]], dict[int, int]], roots: list[int], repeat: int) -> tuple[float, dict[int, int]]:
    times, counts = [], {}
    for _ in range(repeat):
        started = time.perf_counter()
        counts = count(roots)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="1,4,16")
    parser.add_argument("--processes", type=int, default=3000, help="in all, split between the shards (at most 8,000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not sys.platform.startswith("linux") or not 0 < args.processes <= 8000:
        parser.error("Linux only, and --processes in (0, 8000]")
    print(f"{'shards':>6} {'processes':>9} {'machine':>8} {'psutil ms':>9} {'table ms':>8} {'ratio':>6}")
    for shards in (int(k) for k in args.shards.split(",")):
        trees = start_trees(shards, max(1, args.processes // shards))
        try:
            roots = [tree.pid for tree in trees]
            old_ms, old = timed(with_psutil, roots, args.repeat)
            new_ms, new = timed(with_table, roots, args.repeat)
            assert old == new, (old, new)  # both count the same processes and threads
            machine = len(psutil.pids())
            print(f"{shards:>6} {sum(new.values()):>9} {machine:>8} {old_ms:>9.1f} {new_ms:>8.1f} {old_ms / new_ms:>5.1f}x")
        finally:
            stop_trees(trees)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
