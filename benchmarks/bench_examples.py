"""An example from ``resources/examples`` on one member, then on two, in the same run.

A real pool of subprocesses on 127.0.0.1: ``poolnet host --no-member`` and N ``poolnet join``
members (N = 1, then 2), each pinned with ``taskset`` to a core of its own where the machine
has two. Once every member has run a probe shard, the example is submitted ``--repeat`` times
and each run is timed from submission to its last result (``TaskClient.wait``). Prints the
fastest and the median run per pool and the speed-up of two members over one.

    .venv/bin/python benchmarks/bench_examples.py [--example montecarlo] [--repeat 3]

Packages: an example's ``requirements`` are resolved by uv as ``poolnet submit`` does (its
configured index; here a local mirror, ``UV_DEFAULT_INDEX=file:///opt/pypi/simple``, run in
``unshare -n``); the members build the environment on the first run (the fastest run is
reported, which is a reuse).

Loopback only; every process started here is stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_throughput import Pool, run_task  # noqa: E402

from poolnet_desktop.runtime.client.link import open_link  # noqa: E402
from poolnet_desktop.runtime.client.task_client import TaskClient  # noqa: E402
from poolnet_desktop.runtime.client.task_files import load_task  # noqa: E402

EXAMPLES = REPO / "resources" / "examples"


async def until_every_member_works(pool: Pool, probe: Path, timeout: float = 90.0) -> None:
    """Every member has run a shard of a probe task (each shard sleeps a little, so that
    one member cannot take them all)."""
    deadline = time.monotonic() + timeout
    loaded = await asyncio.to_thread(load_task, probe)
    while True:
        try:
            async with await open_link(pool.url, pool.root / "host") as link:
                client = TaskClient(link)
                task_id = await client.submit(loaded)
                await client.wait(task_id)
                if len({s.device_id for s in await client.shards(task_id)}) == pool.members:
                    return
        except Exception as exc:  # noqa: BLE001 - the host may still be starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pool did not come up: {exc}") from exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {pool.members} members took work")
        await asyncio.sleep(0.5)


async def measure(members: int, task: Path, repeat: int, root: Path) -> list[float]:
    pool = Pool(root, members=members)
    pool.start()
    try:
        probe = root / "probe"
        probe.mkdir(parents=True)
        (probe / "probe.pool.toml").write_text('command = ["sleep", "0.3"]\nshards = 8\n')
        await until_every_member_works(pool, probe)
        runs = []
        for _ in range(repeat):
            seconds, succeeded = await run_task(pool.url, root / "host", task)
            if succeeded == 0:
                raise RuntimeError("no shard of the example succeeded")
            runs.append(seconds)
        return runs
    finally:
        pool.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", default="montecarlo", help="a folder of resources/examples")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poolnet-bench-examples-") as temp:
        work = Path(temp)
        task = work / args.example
        shutil.copytree(EXAMPLES / args.example, task)
        results = {}
        for members in (1, 2):
            runs = asyncio.run(measure(members, task, args.repeat, work / f"pool{members}"))
            results[members] = runs
            print(f"{args.example} on {members} member(s): fastest {min(runs):.2f} s, median "
                  f"{statistics.median(runs):.2f} s over {len(runs)} runs "
                  f"({', '.join(f'{r:.2f}' for r in runs)})")
        print(f"speed-up of two members over one (fastest runs): "
              f"{min(results[1]) / min(results[2]):.2f}x")


if __name__ == "__main__":
    main()
