"""Where the CPU of a throughput task goes: each process's share per shard, whole machine.

The throughput benchmark (``bench_throughput.py``) gives one ratio to ``xargs -P 2``; this
says what makes it up. The same pool (host, two members pinned to a core each) runs one task
of N shards of ``true``; the CPU every process on the machine used meanwhile (its own, and its
reaped children's: the shards) is divided by N, with the machine's idle time:

    .venv/bin/python benchmarks/bench_cpu_split.py [--shards 4000] [--member-loop uvloop]
        [--sandbox on|off]

A member's lanes show as the launcher (``poolnet-lane``, the build of its C text, or
``python -I -S -c import os,sys...``), whose reaped children are the shards themselves; without
the sandbox the member reaps them. Compare the
total with ``xargs -P 2``'s core-time per command (two cores over its rate), which
``bench_throughput.py`` prints beside it. Loopback only; every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import psutil
from bench_throughput import Pool, manifest, run_task, until_ready

ROW_AT_LEAST = 0.005  # ms per shard: smaller rows (the kernel's threads, this script) are summed


def cpu_by_process() -> dict[int, tuple[str, float, float]]:
    """Each process's command (shortened), its own CPU seconds and its reaped children's."""
    seen = {}
    for process in psutil.process_iter(["cmdline", "name"]):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        command = " ".join(process.info["cmdline"] or [process.info["name"] or "?"])
        if command.startswith("/proc/self/fd/"):  # a program run from a descriptor: its name says more
            command = f"{process.info['name']} ({command})"
        seen[process.pid] = (command[:70], times.user + times.system, times.children_user + times.children_system)
    return seen


async def measure(shards: int, member_loop: str, sandbox: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="poolnet-bench-") as folder:
        root = Path(folder)
        pool = Pool(root, member_loop, sandbox)
        pool.start()
        try:
            await until_ready(pool, manifest(root / "probe", "probe", 4))
            task = manifest(root / "batch", "batch", shards)
            before, machine_before = cpu_by_process(), psutil.cpu_times()
            started = time.perf_counter()
            _, succeeded = await run_task(pool.url, root / "host", task)
            wall = time.perf_counter() - started
            after, machine_after = cpu_by_process(), psutil.cpu_times()
        finally:
            pool.stop()
    if succeeded != shards:
        raise SystemExit(f"only {succeeded} of {shards} shards succeeded")
    per_shard = 1000 / shards  # seconds in total to ms per shard
    cores = len(os.sched_getaffinity(0))
    print(f"{shards / wall:.0f} shards/s; the machine's {cores} cores: "
          f"{cores * wall * per_shard:.3f} ms per shard, of which idle "
          f"{(machine_after.idle - machine_before.idle) * per_shard:.3f} ms")
    print(f"{'own ms':>7} {'reaped ms':>9}  process")
    rest = 0.0
    for pid, (command, own, reaped) in sorted(after.items(), key=lambda item: -item[1][1]):
        own_before, reaped_before = before.get(pid, (command, 0.0, 0.0))[1:]
        own_ms, reaped_ms = (own - own_before) * per_shard, (reaped - reaped_before) * per_shard
        if max(own_ms, reaped_ms) >= ROW_AT_LEAST:
            print(f"{own_ms:7.3f} {reaped_ms:9.3f}  {command}")
        else:
            rest += own_ms + reaped_ms
    print(f"{rest:7.3f} {'':>9}  every other process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=4000)
    parser.add_argument("--member-loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--sandbox", choices=["on", "off"], default="on")
    args = parser.parse_args()
    asyncio.run(measure(args.shards, args.member_loop, args.sandbox == "on"))


if __name__ == "__main__":
    main()
