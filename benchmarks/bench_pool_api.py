"""``poolnet.Pool.map`` against ``concurrent.futures.ProcessPoolExecutor(2)``, same run.

N trivial calls (default 1,000: ``x + 1``) through each, taking turns, ``--rounds`` times:

- cold: the whole ``with`` block a user would write (open the executor or pool, ``map``,
  ``list`` the results, leave the block);
- warm: ``map`` alone, on an executor or pool opened before and already used once.

The pool is the one ``bench_throughput`` starts: ``poolnet host --no-member`` and two ``poolnet
join`` members, each pinned with ``taskset`` to a core of its own, sandboxed as members are by
default; ``Pool(max_workers=2)`` splits the calls into two shards (one per member) as
``ProcessPoolExecutor(2)`` has two workers. The executor keeps its default ``chunksize=1``, as
a caller who swaps it for ``poolnet.Pool`` had it. Figures are medians of the rounds; the
ratio is PoolNet's throughput over the executor's (target: at least 0.5).

    .venv/bin/python benchmarks/bench_pool_api.py [--calls 1000] [--rounds 5] [--sandbox on|off]

Loopback only; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import Pool as PoolProcesses  # noqa: E402
from bench_throughput import manifest, until_ready  # noqa: E402

import poolnet  # noqa: E402


def trivial(x: int) -> int:
    return x + 1


def timed(run: Callable[[], list[int]], expected: list[int]) -> float:
    started = time.perf_counter()
    got = run()
    seconds = time.perf_counter() - started
    if got != expected:
        raise RuntimeError("wrong results")
    return seconds


def measure(calls: int, rounds: int, root: Path, sandbox: bool) -> dict[str, float]:
    items, expected = range(calls), [x + 1 for x in range(calls)]
    processes = PoolProcesses(root, "uvloop", sandbox)
    processes.start()
    try:
        asyncio.run(until_ready(processes, manifest(root / "probe", "probe", 4)))

        def poolnet_cold() -> list[int]:
            with poolnet.Pool(processes.url, data_dir=root / "host", max_workers=2) as pool:
                return list(pool.map(trivial, items))

        def executor_cold() -> list[int]:
            with ProcessPoolExecutor(2) as executor:
                return list(executor.map(trivial, items))

        cold: dict[str, list[float]] = {"poolnet": [], "executor": []}
        warm: dict[str, list[float]] = {"poolnet": [], "executor": []}
        with poolnet.Pool(processes.url, data_dir=root / "host", max_workers=2) as pool, \
                ProcessPoolExecutor(2) as executor:
            for open_one in (pool, executor):
                list(open_one.map(trivial, items))
            for _ in range(rounds):
                cold["executor"].append(timed(executor_cold, expected))
                cold["poolnet"].append(timed(poolnet_cold, expected))
                warm["executor"].append(timed(lambda: list(executor.map(trivial, items)), expected))
                warm["poolnet"].append(timed(lambda: list(pool.map(trivial, items)), expected))
    finally:
        processes.stop()
    figures = {}
    for name, samples in (("cold", cold), ("warm", warm)):
        for who in ("poolnet", "executor"):
            figures[f"{name}_{who}_per_s"] = calls / statistics.median(samples[who])
        figures[f"{name}_ratio"] = figures[f"{name}_poolnet_per_s"] / figures[f"{name}_executor_per_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sandbox", choices=["on", "off"], default="on",
                        help="members run shards in the bubblewrap sandbox (on, their default) or not")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poolnet-bench-") as folder:
        f = measure(args.calls, args.rounds, Path(folder), args.sandbox == "on")
    print(f"{'':>5} {'executor calls/s':>16} {'PoolNet calls/s':>15} {'ratio':>6}")
    for name in ("cold", "warm"):
        print(f"{name:>5} {f[f'{name}_executor_per_s']:16.0f} {f[f'{name}_poolnet_per_s']:15.0f} "
              f"{f[f'{name}_ratio']:6.2f}")
    print(f"{args.calls} calls, medians of {args.rounds} rounds; cold: the whole with block, "
          "warm: map alone on an open executor or pool")


if __name__ == "__main__":
    main()
