"""What a ``poolnet join`` member costs at rest: CPU over a window, and resident memory.

A host (``--no-member``) and two members on 127.0.0.1 with ``--no-discovery``, as in
``bench_throughput.py``; once both members have run a 4-shard probe task, the pool is left
alone for a short settling time, then each member's CPU time is read before and after
``--seconds`` (default 60) of rest. Members run on uvloop and on asyncio's own loop, one pool
after the other. Target (issue 14): an idle member under 0.5 % of one core. Its resident
memory is given alone and with what it keeps running at rest (the spare lane a member keeps
for the next task: bubblewrap and a launcher), summed over the processes (pages they
share, such as the interpreter's, counted in each).

    .venv/bin/python benchmarks/bench_idle.py [--seconds 60] [--member-loops uvloop,asyncio]
        [--json FILE]

Loopback only; stops by itself; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import psutil

from bench_throughput import MEMBER_COMMANDS, Pool, manifest, until_ready

SETTLE_SECONDS = 5.0


def _tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and every process under it, summed."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # it ended meanwhile
            continue
    return total


async def measure(member_loop: str, seconds: float, root: Path) -> list[tuple[float, int, int]]:
    """Per member: (percent of one core over the window, resident bytes at its end, the same
    with the processes under it)."""
    pool = Pool(root, member_loop)
    pool.start()
    try:
        await until_ready(pool, manifest(root / "probe", "probe", 4))
        await asyncio.sleep(SETTLE_SECONDS)
        members = [psutil.Process(p.pid) for p in pool.processes[1:]]
        before = [sum(m.cpu_times()[:2]) for m in members]
        started = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        after = [sum(m.cpu_times()[:2]) for m in members]
        rss = [(m.memory_info().rss, _tree_rss(m)) for m in members]
    finally:
        pool.stop()
    return [((a - b) / elapsed * 100, *r) for a, b, r in zip(after, before, rss)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--member-loops", default="uvloop,asyncio")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here as JSON")
    args = parser.parse_args()
    loops = args.member_loops.split(",")
    if not set(loops) <= set(MEMBER_COMMANDS) or not 0 < args.seconds <= 600:
        parser.error(f"member loops are {', '.join(MEMBER_COMMANDS)}; --seconds in (0, 600]")
    rows = []
    for loop in loops:
        with tempfile.TemporaryDirectory(prefix="poolnet-idle-") as folder:
            figures = asyncio.run(measure(loop, args.seconds, Path(folder)))
        for index, (percent, rss, tree) in enumerate(figures):
            print(f"member {index} on {loop:>7}: {percent:5.2f} % of a core over "
                  f"{args.seconds:.0f} s at rest, {rss / 2**20:5.1f} MiB resident "
                  f"({tree / 2**20:5.1f} MiB with its sandboxes)", flush=True)
            rows.append({"member": index, "member_loop": loop, "seconds": args.seconds,
                         "cpu_pct": round(percent, 3), "rss_mib": round(rss / 2**20, 1),
                         "tree_rss_mib": round(tree / 2**20, 1)})
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
