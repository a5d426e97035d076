"""Task throughput and latency, side by side with ``xargs -P 2`` in the same run.

1. ``xargs -P 2`` runs ``true`` N times (default 2,000): the physical limit here is process
   start-up, so this is the yardstick.
2. A real pool of subprocesses: ``poolnet host --no-member`` and two ``poolnet join``
   members, each pinned with ``taskset`` to a core of its own when the machine has two (each
   member then runs one ``cpu = 1`` shard at a time: parallelism 2, like ``xargs -P 2``).
   One task of N shards of ``true`` goes from submission to its last result.
3. The median submit-to-result latency of M one-shard tasks on the idle pool (default 50).

With ``--sandbox both`` (the default) the pool is measured twice in one run: members that run
each shard in the bubblewrap sandbox, then members that cannot find ``bwrap`` (their PATH
holds only ``true`` and ``taskset``) started with ``--allow-unsandboxed``; the last line is
the sandbox's cost as a ratio of the two throughputs.

    .venv/bin/python benchmarks/bench_throughput.py [--shards 2000] [--latency-tasks 50]
        [--sandbox both|on|off]

Loopback only; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_support import free_port  # noqa: E402

from poolnet_desktop.runtime.link import open_link  # noqa: E402
from poolnet_desktop.runtime.task_client import TaskClient  # noqa: E402
from poolnet_desktop.runtime.task_files import load_task  # noqa: E402

POOLNET = [sys.executable, "-m", "poolnet_desktop"]
CODE = "BENCH-CODE"


def xargs_rate(shards: int) -> float:
    """``true`` N times through ``xargs -P 2``; commands per second."""
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", "2", "-n", "1", "true"], input="x\n" * shards, text=True, check=True
    )
    return shards / (time.perf_counter() - started)


def manifest(folder: Path, name: str, shards: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pool.toml"
    path.write_text(f'command = ["true"]\nshards = {shards}\n[resources]\ncpu = 1\n')
    return path


class Pool:
    """The host and its two members as subprocesses."""

    def __init__(self, root: Path, sandbox: bool = True) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"wss://127.0.0.1:{self.port}/ws"
        self.env = dict(os.environ, POOLNET_DISCOVERY="off", POOLNET_HOME=str(root))
        self.member_env = self.env if sandbox else dict(self.env, PATH=str(_path_without_bwrap(root)))
        self.member_flags = [] if sandbox else ["--allow-unsandboxed"]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self._spawn([], ["host", "--port", str(self.port), "--bind", "127.0.0.1", "--no-member",
                         "--no-discovery", "--legacy-port", str(free_port()),
                         "--data-dir", str(self.root / "host"), "--pairing-code", CODE])
        cores = sorted(os.sched_getaffinity(0))
        for index in range(2):
            taskset = shutil.which("taskset")
            pin = [taskset, "-c", str(cores[index])] if len(cores) >= 2 and taskset else []
            self._spawn(pin, ["join", self.url, "--code", CODE, "--no-discovery", *self.member_flags,
                              "--name", f"member-{index}", "--data-dir", str(self.root / f"m{index}")],
                        self.member_env)

    def _spawn(self, prefix: list[str], args: list[str], env: dict[str, str] | None = None) -> None:
        self.processes.append(subprocess.Popen(
            [*prefix, *POOLNET, *args], env=env or self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU used so far by the host, and by the members themselves (not their shards)."""
        times = [psutil.Process(p.pid).cpu_times() for p in self.processes]
        host = times[0].user + times[0].system
        return host, sum(t.user + t.system for t in times[1:])

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _path_without_bwrap(root: Path) -> Path:
    """A PATH folder with only what the unsandboxed members and their shards need."""
    folder = root / "path-without-bwrap"
    folder.mkdir(exist_ok=True)
    for program in ("true", "taskset"):
        if found := shutil.which(program):
            (folder / program).symlink_to(found)
    return folder


async def run_task(url: str, data_dir: Path, path: Path) -> tuple[float, int]:
    """Submit and wait for one task: (seconds from submission to its end, shards succeeded)."""
    loaded = await asyncio.to_thread(load_task, path)
    async with await open_link(url, data_dir) as link:
        client = TaskClient(link)
        started = time.perf_counter()
        task_id = await client.submit(loaded)
        summary = await client.wait(task_id)
        return time.perf_counter() - started, summary.succeeded


async def until_ready(pool: Pool, probe: Path, timeout: float = 60.0) -> None:
    """Both members joined and took work (a 4-shard probe task completed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, succeeded = await run_task(pool.url, pool.root / "host", probe)
            if succeeded == 4:
                return
        except (OSError, Exception) as exc:  # noqa: BLE001 - the host may still be starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pool did not come up: {exc}") from exc
        await asyncio.sleep(0.5)


async def measure(shards: int, latency_tasks: int, root: Path, sandbox: bool = True) -> dict[str, float]:
    pool = Pool(root, sandbox)
    pool.start()
    try:
        await until_ready(pool, manifest(root / "probe", "probe", 4))
        xargs = xargs_rate(shards)
        host_before, members_before = pool.cpu_seconds()
        seconds, succeeded = await run_task(pool.url, root / "host", manifest(root / "batch", "batch", shards))
        host_after, members_after = pool.cpu_seconds()
        if succeeded != shards:
            raise RuntimeError(f"only {succeeded} of {shards} shards succeeded")
        one = manifest(root / "one", "one", 1)
        latencies = [(await run_task(pool.url, root / "host", one))[0] for _ in range(latency_tasks)]
    finally:
        pool.stop()
    poolnet = shards / seconds
    return {
        "xargs_per_s": xargs,
        "poolnet_per_s": poolnet,
        "ratio": poolnet / xargs,
        "latency_median_ms": statistics.median(latencies) * 1000,
        "host_cpu_ms_per_shard": (host_after - host_before) * 1000 / shards,
        "member_cpu_ms_per_shard": (members_after - members_before) * 1000 / shards,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=2000)
    parser.add_argument("--latency-tasks", type=int, default=50)
    parser.add_argument("--sandbox", choices=["both", "on", "off"], default="both")
    args = parser.parse_args()
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.sandbox]
    rates = {}
    for sandbox in modes:
        with tempfile.TemporaryDirectory(prefix="poolnet-bench-") as folder:
            figures = asyncio.run(measure(args.shards, args.latency_tasks, Path(folder), sandbox))
        print(f"-- members {'with' if sandbox else 'without'} the sandbox")
        report(figures, args.latency_tasks)
        rates[sandbox] = figures["poolnet_per_s"]
    if len(rates) == 2:
        print(f"sandboxed / unsandboxed throughput: {rates[True] / rates[False]:.0%}")


def report(figures: dict[str, float], latency_tasks: int) -> None:
    print(f"xargs -P 2:         {figures['xargs_per_s']:8.0f} tasks/s")
    print(f"PoolNet (2 members): {figures['poolnet_per_s']:7.0f} tasks/s")
    print(f"ratio:              {figures['ratio']:8.0%}")
    print(f"CPU per shard:      host {figures['host_cpu_ms_per_shard']:.2f} ms, members "
          f"{figures['member_cpu_ms_per_shard']:.2f} ms (their own, shards excluded)")
    print(f"one-shard latency:  {figures['latency_median_ms']:8.1f} ms (median of {latency_tasks})")


if __name__ == "__main__":
    main()
