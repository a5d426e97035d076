"""How ``poolnet.Pool`` calls become a task: chunks, names, the spec, the pool's size, and
remote tracebacks given back their source."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.devices import DeviceView
from poolnet_desktop.core.manifest import FileEntry, check_name
from poolnet_desktop.core.pool_calls import (
    call_spec,
    plan_chunks,
    restore_sources,
    shared_cores,
    task_name,
)
from poolnet_desktop.core.resources import Resources, SharingLimits


def test_without_chunksize_the_calls_spread_evenly_over_the_workers() -> None:
    chunks = plan_chunks(1000, None, 3)
    assert [len(c) for c in chunks] == [334, 333, 333]
    assert [i for c in chunks for i in c] == list(range(1000))
    assert plan_chunks(2, None, 8) == [range(0, 1), range(1, 2)]
    assert plan_chunks(0, None, 8) == []


def test_chunksize_makes_chunks_of_that_many_calls() -> None:
    assert plan_chunks(10, 3, 99) == [range(0, 3), range(3, 6), range(6, 9), range(9, 10)]


@pytest.mark.parametrize("chunksize, workers", [(0, 1), (None, 0), (-1, 4)])
def test_sizes_below_one_are_refused(chunksize: int | None, workers: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_chunks(10, chunksize, workers)


@pytest.mark.parametrize("function, expected", [
    ("square", "pool square"), ("<lambda>", "pool lambda"), ("<genexpr>", "pool genexpr"),
    ("x" * 300, "pool " + "x" * 90), ("###", "pool call"),
])
def test_task_names_say_which_function_runs_and_are_valid(function: str, expected: str) -> None:
    assert task_name(function) == expected
    check_name(task_name(function))


def test_the_spec_runs_the_worker_per_shard_and_brings_back_its_result() -> None:
    entry = FileEntry(path="calls/0.pkl", size=3, sha256="0" * 64)
    spec = call_spec("square", 1, [entry])
    assert spec.command == ("{python}", "poolnet_pool_worker.py", "{shard}")
    assert (spec.shards, spec.outputs, spec.files) == (1, ("result.pkl",), (entry,))


def device(cores: int, percent: float | None, online: bool = True, accept: bool = True) -> DeviceView:
    limits = None if percent is None else SharingLimits(cpu_percent=percent)
    return DeviceView(id=f"d{cores}{percent}{online}{accept}", name="d", platform="linux", ip_address="ip",
                      last_seen="", is_online=online, resources=Resources(cpu_cores=cores, limits=limits),
                      accept_tasks=accept)


def test_shared_cores_count_each_online_devices_share() -> None:
    assert shared_cores([device(8, 50), device(2, None), device(1, 10)]) == 4 + 2 + 1
    assert shared_cores([device(8, 100, online=False), device(8, 100, accept=False), device(0, 100)]) == 0


def test_remote_frames_of_the_callers_code_get_their_file_and_source_back() -> None:
    remote = (
        'Traceback (most recent call last):\n'
        '  File "/work/slot-1/poolnet_pool_worker.py", line 31, in run_call\n'
        '    return (True, function(*args, **kwargs))\n'
        '  File "<dynamic-code>", line 7, in fit\n'
        '  File "<dynamic-code>", line 3, in unknown\n'
        'ValueError: bad\n'
    )
    source = {("/home/me/job.py", 7): "    raise ValueError('bad')\n"}
    shown = restore_sources(remote, {"fit": "/home/me/job.py"}, lambda f, n: source.get((f, n), ""))
    assert shown == remote.replace(
        '  File "<dynamic-code>", line 7, in fit\n',
        '  File "/home/me/job.py", line 7, in fit\n    raise ValueError(\'bad\')\n',
    )
