"""Task throughput and latency, side by side with ``xargs -P 2`` in the same run.

1. ``xargs -P 2`` runs ``true`` N times (default 2,000): the physical limit here is process
   start-up, so this is the yardstick. It runs right before and right after step 2, and the
   mean of the two is the figure (a shared machine's load drifts).
2. A real pool of subprocesses: ``poolnet host --no-member`` and two ``poolnet join``
   members, each pinned with ``taskset`` to a core of its own when the machine has two (each
   member then runs one ``cpu = 1`` shard at a time: parallelism 2, like ``xargs -P 2``).
   One task of N shards of ``true`` goes from submission to its last result, on a pool at
   rest (as a user's is when a task comes): the members had ``SETTLE`` seconds after they
   joined, before ``xargs`` runs, to make what they keep ready between tasks (a spare lane).
3. The median submit-to-result latency of M one-shard tasks on the idle pool (default 50).
4. The start-to-start gap on a member: a task of 1 s shards (``sleep 1`` in bash); each shard
   notes when its work began and ended, and the gap is the time a member lets pass between
   the end of one shard's work and the start of the next one's.

The members run on uvloop (as ``poolnet join`` does where it is installed) and on asyncio's
own loop (uvloop made unimportable, as on Windows), one pool after the other, each measured
against ``xargs -P 2`` in the same run; ``--repeat`` runs the whole comparison again.

    .venv/bin/python benchmarks/bench_throughput.py [--shards 2000] [--latency-tasks 50]
        [--gap-shards 12] [--member-loops uvloop,asyncio] [--sandbox on|off|both] [--repeat 1]
        [--json FILE]

``--json`` also writes every row (run, members' loop, sandbox and its figures) to FILE.

``--sandbox`` runs the members' shards in the bubblewrap sandbox (on, as members do by
default), without it (``--allow-unsandboxed`` with no ``bwrap`` on their PATH), or both, one
pool after the other. The gap (4.) is measured without the sandbox only: its shards write
their times to a shared file, which a sandboxed shard cannot reach.

To measure an older commit side by side, export it (``git archive COMMIT poolnet_desktop |
tar -x -C /tmp/old``) and run this script from that folder: ``python -m poolnet_desktop``
then starts the host and members from the current directory's code.

Loopback only; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from poolnet_desktop.runtime.client.link import open_link  # noqa: E402
from poolnet_desktop.runtime.client.task_client import TaskClient  # noqa: E402
from poolnet_desktop.runtime.client.task_files import load_task  # noqa: E402

POOLNET = [sys.executable, "-m", "poolnet_desktop"]
# ``poolnet`` with uvloop unimportable: the member falls back to asyncio's own loop.
POOLNET_ON_ASYNCIO = [
    sys.executable, "-c",
    "import sys; sys.modules['uvloop'] = None; "
    "from poolnet_desktop.cli import main; raise SystemExit(main(sys.argv[1:]))",
]
MEMBER_COMMANDS = {"uvloop": POOLNET, "asyncio": POOLNET_ON_ASYNCIO}
CODE = "BENCH-CODE"
# Seconds the pool is left alone after its members took the probe task (see 2.).
SETTLE = 2.0


def xargs_rate(shards: int) -> float:
    """``true`` N times through ``xargs -P 2``; commands per second."""
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", "2", "-n", "1", "true"], input="x\n" * shards, text=True, check=True
    )
    return shards / (time.perf_counter() - started)


def manifest(folder: Path, name: str, shards: int, command: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pool.toml"
    line = json.dumps(command or ["true"])
    path.write_text(f'command = {line}\nshards = {shards}\n[resources]\ncpu = 1\n')
    return path


def one_second_shards(log: Path) -> list[str]:
    """A 1 s shard that appends ``member-pid start end`` (bash clock, no fork) to ``log``."""
    return ["bash", "-c", f'b=$EPOCHREALTIME; sleep 1; echo "$PPID $b $EPOCHREALTIME" >> {log}']


def member_gaps(log: Path) -> list[float]:
    """Per member (the shard's parent), the seconds from each shard's end to the next's start."""
    by_member: dict[str, list[tuple[float, float]]] = {}
    for line in log.read_text().splitlines():
        member, begun, ended = line.split()
        by_member.setdefault(member, []).append((float(begun), float(ended)))
    gaps = []
    for spans in by_member.values():
        spans.sort()
        gaps += [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:])]
    return gaps


class Pool:
    """The host and its ``members`` members (two by default) as subprocesses, each member
    pinned to a core of its own where the machine has enough."""

    def __init__(self, root: Path, member_loop: str = "uvloop", sandbox: bool = True, members: int = 2) -> None:
        self.root = root
        self.members = members
        self.member_command = MEMBER_COMMANDS[member_loop]
        self.port = free_port()
        self.url = f"wss://127.0.0.1:{self.port}/ws"
        self.env = dict(os.environ, POOLNET_DISCOVERY="off", POOLNET_HOME=str(root))
        self.member_env = self.env if sandbox else dict(self.env, PATH=str(_path_without_bwrap(root)))
        self.member_flags = [] if sandbox else ["--allow-unsandboxed"]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self._spawn(POOLNET, ["host", "--port", str(self.port), "--bind", "127.0.0.1", "--no-member",
                         "--no-discovery", "--legacy-port", str(free_port()),
                         "--data-dir", str(self.root / "host")], code=CODE)
        cores = sorted(os.sched_getaffinity(0))
        for index in range(self.members):
            pin = (["taskset", "-c", str(cores[index])]
                   if len(cores) >= self.members and shutil.which("taskset") else [])
            self._spawn([*pin, *self.member_command], ["join", self.url, "--no-discovery", *self.member_flags,
                              "--name", f"member-{index}", "--data-dir", str(self.root / f"m{index}")],
                        code=CODE, env=self.member_env)

    def _spawn(self, command: list[str], args: list[str], code: str, env: dict[str, str] | None = None) -> None:
        """A ``poolnet`` subprocess; the pairing code goes in its environment, never argv."""
        self.processes.append(subprocess.Popen(
            [*command, *args], env={**(env or self.env), "POOLNET_PAIRING_CODE": code},
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
    """A PATH folder with only what unsandboxed members and their shards need."""
    folder = root / "path-without-bwrap"
    folder.mkdir(exist_ok=True)
    for program in ("true", "taskset", "bash", "sleep", "date"):
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


async def measure(
    shards: int, latency_tasks: int, gap_shards: int, member_loop: str, root: Path, sandbox: bool
) -> dict[str, float]:
    pool = Pool(root, member_loop, sandbox)
    pool.start()
    try:
        await until_ready(pool, manifest(root / "probe", "probe", 4))
        await asyncio.sleep(SETTLE)
        # The machine may be shared: xargs runs right before and right after PoolNet, and
        # PoolNet is compared with the mean of the two.
        xargs_before = xargs_rate(shards)
        host_before, members_before = pool.cpu_seconds()
        seconds, succeeded = await run_task(pool.url, root / "host", manifest(root / "batch", "batch", shards))
        host_after, members_after = pool.cpu_seconds()
        xargs = (xargs_before + xargs_rate(shards)) / 2
        if succeeded != shards:
            raise RuntimeError(f"only {succeeded} of {shards} shards succeeded")
        one = manifest(root / "one", "one", 1)
        latencies = [(await run_task(pool.url, root / "host", one))[0] for _ in range(latency_tasks)]
        gaps = [float("nan")]
        if not sandbox:
            log = root / "gaps.log"
            await run_task(pool.url, root / "host", manifest(root / "gap", "gap", gap_shards, one_second_shards(log)))
            gaps = member_gaps(log)
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
        "gap_median_ms": statistics.median(gaps) * 1000,
        "gap_max_ms": max(gaps) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=2000)
    parser.add_argument("--latency-tasks", type=int, default=50)
    parser.add_argument("--gap-shards", type=int, default=12, help="1 s shards for the gap (>= 4)")
    parser.add_argument("--member-loops", default="uvloop,asyncio",
                        help="comma-separated, from: " + ", ".join(MEMBER_COMMANDS))
    parser.add_argument("--sandbox", choices=["on", "off", "both"], default="on",
                        help="members run shards in the bubblewrap sandbox, without it, or both")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here as JSON")
    args = parser.parse_args()
    sandboxes = {"on": [True], "off": [False], "both": [True, False]}[args.sandbox]
    loops = args.member_loops.split(",")
    if not set(loops) <= set(MEMBER_COMMANDS) or args.gap_shards < 4:
        parser.error(f"member loops are {', '.join(MEMBER_COMMANDS)}; --gap-shards at least 4")
    print(f"{'run':>3} {'members on':>10} {'sandbox':>7} {'xargs/s':>8} {'PoolNet/s':>9} {'ratio':>6} "
          f"{'host ms':>7} {'members ms':>10} {'latency ms':>10} {'gap med/max ms':>15}")
    rows = []
    for run in range(1, args.repeat + 1):
        for loop, sandbox in [(loop, sandbox) for loop in loops for sandbox in sandboxes]:
            with tempfile.TemporaryDirectory(prefix="poolnet-bench-") as folder:
                f = asyncio.run(measure(
                    args.shards, args.latency_tasks, args.gap_shards, loop, Path(folder), sandbox))
            rows.append({"run": run, "member_loop": loop, "sandbox": sandbox, "shards": args.shards,
                         **{k: None if v != v else round(v, 3) for k, v in f.items()}})  # NaN: none
            print(f"{run:>3} {loop:>10} {'on' if sandbox else 'off':>7} {f['xargs_per_s']:8.0f} {f['poolnet_per_s']:9.0f} "
                  f"{f['ratio']:6.0%} {f['host_cpu_ms_per_shard']:7.2f} "
                  f"{f['member_cpu_ms_per_shard']:10.2f} {f['latency_median_ms']:10.1f} "
                  f"{f['gap_median_ms']:7.1f}/{f['gap_max_ms']:.1f}", flush=True)
    print("host/members ms: CPU per shard of the host and of the members themselves (shards "
          "excluded); gap: a member's idle time between two 1 s shards")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
