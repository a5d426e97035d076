"""Every process's parent and thread count, read from ``/proc`` in one pass (Linux).

The process guard counts each shard's tree once the machine is crowded, which is when ``/proc``
is longest: a fork bomb's thousands of processes. psutil's ``children`` reads every
process's ``stat`` at each call, so counting sixteen shards read ``/proc`` sixteen times, and
the guard, paced at ten times a check's cost, looked again only seconds later. One table per
check reads it once, thread counts included.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessTable:
    """``children``: each parent's child pids; ``threads``: each process's thread count."""

    children: Mapping[int, list[int]]
    threads: Mapping[int, int]

    @classmethod
    def read(cls, proc: str = "/proc") -> ProcessTable:
        """The table now. A process that ends while it is read is left out; one started
        meanwhile may be too, and is counted at the next check."""
        children: dict[int, list[int]] = {}
        threads: dict[int, int] = {}
        for pid in _pids(proc):
            try:
                with open(f"{proc}/{pid}/stat", "rb") as stat:
                    line = stat.read()
            except OSError:
                continue
            # "pid (comm) state ppid ...": the name may hold spaces and parentheses itself.
            fields = line[line.rfind(b")") + 2:].split()
            try:
                parent, count = int(fields[1]), int(fields[17])
            except (IndexError, ValueError):
                continue
            threads[pid] = count
            children.setdefault(parent, []).append(pid)
        return cls(children, threads)

    def tree_threads(self, root: int, with_root: bool = True) -> int:
        """The threads of ``root``'s descendants, and of ``root`` itself if ``with_root``
        (0 for a process that is gone)."""
        total = self.threads.get(root, 0) if with_root else 0
        seen = {root}  # pids reused while /proc was read can make a loop of parents
        waiting = list(self.children.get(root, ()))
        while waiting:
            pid = waiting.pop()
            if pid in seen:
                continue
            seen.add(pid)
            total += self.threads.get(pid, 0)
            waiting.extend(self.children.get(pid, ()))
        return total


def _pids(proc: str) -> Iterable[int]:
    with os.scandir(proc) as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield int(entry.name)
