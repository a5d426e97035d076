"""What one task summary costs the host, for a task of many shards.

The host makes a summary of a task for every watcher of it (``poolnet submit --wait``, the
window's Tasks page) several times a second while it runs, and one per task for every page
of a task list: a summary that walks the task's shards makes a sweep of 100,000 shards slow
down the whole pool. This builds a task of ``--shards`` shards (default 100,000), half of
them placed and started and 40 % finished, and times ``task_summary`` with and without the
detail its submitter gets (the devices used).

    .venv/bin/python benchmarks/bench_task_summary.py [--shards 100000] [--repeat 50]

To compare with an older commit, run this file from a checkout of it (``git worktree add``):
it imports the package next to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poolnet_desktop.core.manifest import TaskSpec  # noqa: E402
from poolnet_desktop.core.task_protocol import task_summary  # noqa: E402
from poolnet_desktop.core.tasks import ShardState, Task  # noqa: E402


def busy_task(shards: int) -> Task:
    """A task half under way: half its shards placed on 500 devices and started, 40 % done."""
    task = Task("t1", TaskSpec(name="sweep", command=("true",), shards=shards), submitted_at=1.0)
    for index in range(shards // 2):
        task.assign(index, f"device-{index % 500}", (), now=2.0 + index * 1e-4)
        task.start(index, 1, now=2.0 + index * 1e-4)
    for index in range(shards * 2 // 5):
        task.record_result(index, 1, ShardState.SUCCEEDED, now=10.0 + index)
    return task


def per_summary_ms(task: Task, detail: bool, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        task_summary(task, detail=detail)
    return (time.perf_counter() - started) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    task = busy_task(args.shards)
    for detail in (False, True):
        label = "with devices" if detail else "plain"
        print(f"summary of a task of {args.shards:,} shards, {label}: "
              f"{per_summary_ms(task, detail, args.repeat):.3f} ms")


if __name__ == "__main__":
    main()
