"""How soon a member run as root stops a fork bomb (its process guard: the kernel's process
limit does not hold root's own user id).

A real pool (``poolnet host --no-member`` and one ``poolnet join``, sandboxed) gets a one-shard
shell task that starts ``--sleeps`` background ``sleep`` processes (9,500 by default: bounded,
so that a member without a guard leaves this machine room, where a real bomb would take every
process id). The machine's count of tasks (``/proc/loadavg``) is sampled every 0.1 s. Reported:
the processes the shard held when it was stopped (from its reason), and the seconds from the
machine's count first passing a quarter of its room (where the guard starts counting) to the
task's end.

    sudo .venv/bin/python benchmarks/bench_fork_bomb.py [--sleeps 9500]

Run as root (elsewhere the kernel's limit stops the shard first, at ``process_limit``, and this
says so). Loopback only; every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_throughput import Pool, manifest, until_ready  # noqa: E402

from poolnet_desktop.runtime.client.link import open_link  # noqa: E402
from poolnet_desktop.runtime.client.task_client import TaskClient  # noqa: E402
from poolnet_desktop.runtime.client.task_files import load_task  # noqa: E402
from poolnet_desktop.runtime.member.process_guard import machine_tasks  # noqa: E402
from poolnet_desktop.runtime.member.sandbox import process_room  # noqa: E402

SAMPLE_EVERY = 0.1


class Crossing:
    """Samples the machine's tasks in a thread; ``at``: when they first passed ``mark``."""

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self.at: float | None = None
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            tasks = machine_tasks()
            self.peak = max(self.peak, tasks)
            if self.at is None and tasks > self.mark:
                self.at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def measure(sleeps: int) -> None:
    mark = process_room() // 4
    with tempfile.TemporaryDirectory(prefix="poolnet-bench-bomb-") as folder:
        root = Path(folder)
        pool = Pool(root, members=1)
        pool.start()
        try:
            await until_ready(pool, manifest(root / "probe", "probe", 4))
            task = root / "bomb.pool.toml"
            task.write_text(
                f'command = "i=0; while [ $i -lt {sleeps} ]; do sleep 120 & i=$((i+1)); done; wait"\n'
                'shell = true\nshards = 1\ntimeout = 120\nretries = 0\n[resources]\ncpu = 1\n'
            )
            loaded = await asyncio.to_thread(load_task, task)
            async with await open_link(pool.url, root / "host") as link:
                client = TaskClient(link)
                crossing = Crossing(mark)
                task_id = await client.submit(loaded)
                await client.wait(task_id)
                ended = time.monotonic()
                crossing.stop()
                shard = (await client.shards(task_id))[0]
        finally:
            pool.stop()
    print(f"shard: {shard.state}, {shard.reason}")
    print(f"machine's tasks: peak {crossing.peak}, guard's mark {mark} (a quarter of its room)")
    if crossing.at is None:
        print("the machine never passed the mark: the kernel's limit held the shard (a member not run as root)")
    else:
        print(f"from passing the mark to the task's end: {ended - crossing.at:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleeps", type=int, default=9500)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("not root: the kernel's process limit, not the guard, will stop the shard")
    asyncio.run(measure(args.sleeps))


if __name__ == "__main__":
    main()
