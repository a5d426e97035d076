"""``poolnet.Pool.map`` against ``concurrent.futures.ProcessPoolExecutor(2)``, same run.

N trivial calls (default 1,000: ``x + 1``) through each, taking turns, ``--rounds`` times:

- cold: the whole ``with`` block a user would write (open the executor or pool, ``map``,
  ``list`` the results, leave the block);
- warm: ``map`` alone, on an executor or pool opened before and already used once.

The pool is the one ``bench_throughput`` starts: ``poolnet host --no-member`` and two ``poolnet
join`` members, each pinned with ``taskset`` to a core of its own, sandboxed as members are by
default; ``Pool(max_workers=2)`` splits the calls into two shards (one per member) as
``ProcessPoolExecutor(2)`` has two workers. The executor keeps its default ``chunksize=1``, as
a caller who swaps it for ``poolnet.Pool`` had it, and runs again with the calls in two chunks
(its best case: as PoolNet's two shards run them). Figures are medians of the rounds; the
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


def measure(calls: int, rounds: int, root: Path, sandbox: bool) -> dict[str, dict[str, float]]:
    """Calls per second, by ``cold``/``warm`` then by contender (medians of the rounds)."""
    items, expected = range(calls), [x + 1 for x in range(calls)]
    halves = max(1, calls // 2)
    processes = PoolProcesses(root, "uvloop", sandbox)
    processes.start()
    try:
        asyncio.run(until_ready(processes, manifest(root / "probe", "probe", 4)))

        def poolnet_cold() -> list[int]:
            with poolnet.Pool(processes.url, data_dir=root / "host", max_workers=2) as pool:
                return list(pool.map(trivial, items))

        def executor_cold(chunksize: int) -> list[int]:
            with ProcessPoolExecutor(2) as executor:
                return list(executor.map(trivial, items, chunksize=chunksize))

        samples: dict[str, dict[str, list[float]]] = {
            name: {who: [] for who in CONTENDERS} for name in ("cold", "warm")
        }
        with poolnet.Pool(processes.url, data_dir=root / "host", max_workers=2) as pool, \
                ProcessPoolExecutor(2) as executor:
            for open_one in (pool, executor):
                list(open_one.map(trivial, items))
            for _ in range(rounds):
                cold, warm = samples["cold"], samples["warm"]
                cold["executor"].append(timed(lambda: executor_cold(1), expected))
                cold["executor chunked"].append(timed(lambda: executor_cold(halves), expected))
                cold["poolnet"].append(timed(poolnet_cold, expected))
                warm["executor"].append(timed(lambda: list(executor.map(trivial, items)), expected))
                warm["executor chunked"].append(
                    timed(lambda: list(executor.map(trivial, items, chunksize=halves)), expected))
                warm["poolnet"].append(timed(lambda: list(pool.map(trivial, items)), expected))
    finally:
        processes.stop()
    return {name: {who: calls / statistics.median(times) for who, times in by_who.items()}
            for name, by_who in samples.items()}


# The executor as a caller who swaps it for poolnet.Pool has it (chunksize=1), and with its
# calls in two chunks as PoolNet's two shards run them (its best case here).
CONTENDERS = ("executor", "executor chunked", "poolnet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sandbox", choices=["on", "off"], default="on",
                        help="members run shards in the bubblewrap sandbox (on, their default) or not")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poolnet-bench-") as folder:
        figures = measure(args.calls, args.rounds, Path(folder), args.sandbox == "on")
    print(f"{'':>5} {'executor/s':>10} {'chunked/s':>10} {'PoolNet/s':>10} {'ratio':>6} {'vs chunked':>10}")
    for name, f in figures.items():
        print(f"{name:>5} {f['executor']:10.0f} {f['executor chunked']:10.0f} {f['poolnet']:10.0f} "
              f"{f['poolnet'] / f['executor']:6.2f} {f['poolnet'] / f['executor chunked']:10.2f}")
    print(f"{args.calls} calls, medians of {args.rounds} rounds; cold: the whole with block, warm: map "
          "alone on an open executor or pool; ratio: PoolNet over the executor (chunksize=1), "
          "vs chunked: over the executor with the calls in two chunks")


if __name__ == "__main__":
    main()
