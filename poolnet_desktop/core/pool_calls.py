"""How ``poolnet.Pool`` turns Python calls into a task: the chunks a ``map`` is split into, the
task's name and spec, and the pool's shared cores that size a ``map`` by default.

One task per ``submit`` (one shard, one call) and per ``map`` (one shard per chunk of calls):
a thousand trivial calls as a thousand one-call shards would pay a thousand interpreter starts,
while a few chunks of calls pay a few, as ``ProcessPoolExecutor``'s ``chunksize`` does.

Each shard runs the worker (``runtime.client.pool_worker``) on the files named here; the layout is
shared by the submitter (``runtime.client.pool_api``) and the worker, which reads the same names.

Pure: no file system, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from poolnet_desktop.core.devices import DeviceView
from poolnet_desktop.core.environment import EnvironmentSpec
from poolnet_desktop.core.manifest import PYTHON_PLACEHOLDER, SHARD_PLACEHOLDER, FileEntry, TaskSpec

WORKER_FILE = "poolnet_pool_worker.py"
FUNCTION_FILE = "function.pkl"
CALLS_FOLDER = "calls"
RESULT_FILE = "result.pkl"

# Chunks one ``map`` makes when the pool's size is not known yet.
FALLBACK_WORKERS = 4

_UNNAMEABLE = re.compile(r"[^\w.+-]+")


def calls_file(shard: int) -> str:
    """The shipped file holding shard ``shard``'s calls."""
    return f"{CALLS_FOLDER}/{shard}.pkl"


def plan_chunks(count: int, chunksize: int | None, workers: int) -> list[range]:
    """Split ``count`` calls into consecutive chunks, one shard each.

    With ``chunksize`` (as ``ProcessPoolExecutor.map`` takes it) every chunk but the last has
    that many calls; without it the calls are spread evenly over ``workers`` chunks (fewer if
    there are fewer calls), so each core of the pool starts one interpreter.
    """
    if count < 0:
        raise ValueError(f"a count of calls cannot be negative: {count}")
    if chunksize is not None and chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, not {chunksize}")
    if workers < 1:
        raise ValueError(f"max_workers must be at least 1, not {workers}")
    if count == 0:
        return []
    if chunksize is None:
        chunks = min(count, workers)
        size, extra = divmod(count, chunks)
        bounds, start = [], 0
        for index in range(chunks):
            end = start + size + (1 if index < extra else 0)
            bounds.append(range(start, end))
            start = end
        return bounds
    return [range(start, min(start + chunksize, count)) for start in range(0, count, chunksize)]


def task_name(function_name: str) -> str:
    """A task name (``core.manifest.check_name``) that says which function runs:
    ``"pool square"``, ``"pool lambda"`` for a lambda."""
    cleaned = _UNNAMEABLE.sub("_", function_name).strip("._+-") or "call"
    return f"pool {cleaned[:90]}"


def call_spec(
    function_name: str,
    shards: int,
    files: Iterable[FileEntry],
    environment: EnvironmentSpec | None = None,
) -> TaskSpec:
    """The task that runs ``shards`` chunks of calls: every shard runs the worker with its
    index and brings back its result file, on the task environment's Python if one is given
    (its wheels among ``files``)."""
    return TaskSpec(
        name=task_name(function_name),
        command=(PYTHON_PLACEHOLDER, WORKER_FILE, SHARD_PLACEHOLDER),
        shards=shards,
        files=tuple(sorted(files, key=lambda entry: entry.path)),
        outputs=(RESULT_FILE,),
        environment=environment,
    )


def shared_cores(devices: Iterable[DeviceView]) -> int:
    """The cores the pool lends to tasks now: each online device that takes tasks lends its
    share (``limits.cpu_percent`` of its cores, at least one); 0 when none does."""
    total = 0
    for device in devices:
        if not (device.is_online and device.accept_tasks) or device.resources.cpu_cores < 1:
            continue
        limits = device.resources.limits
        percent = 100.0 if limits is None else limits.cpu_percent
        total += max(1, int(device.resources.cpu_cores * percent / 100))
    return total


# cloudpickle sends the caller's code without its file name (the payload stays the same
# wherever it was defined), so the member's traceback names such frames like this.
_DYNAMIC_FRAME = re.compile(r'^(?P<indent>\s*)File "<dynamic-code>", line (?P<line>\d+), in (?P<name>.+)$')


def restore_sources(text: str, files: Mapping[str, str], source_line: Callable[[str, int], str]) -> str:
    """A remote traceback as a local one reads: each ``<dynamic-code>`` frame of a function
    the caller sent (``files``: its name -> its file here) gets its file back, and the line
    of source that ``source_line(file, line)`` finds (``linecache.getline``)."""
    out = []
    for line in text.splitlines(keepends=True):
        match = _DYNAMIC_FRAME.match(line.rstrip("\n"))
        filename = files.get(match["name"]) if match else None
        if match is None or filename is None:
            out.append(line)
            continue
        number = int(match["line"])
        out.append(f'{match["indent"]}File "{filename}", line {number}, in {match["name"]}\n')
        source = source_line(filename, number).strip()
        if source:
            out.append(f'{match["indent"]}  {source}\n')
    return "".join(out)
