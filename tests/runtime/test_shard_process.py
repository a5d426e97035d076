"""The spawn and reap path kept for systems without pidfds (Windows, macOS, old kernels).

Linux here has pidfds, so ``pidfd_supported`` is turned off to run the loop's own
``subprocess_exec`` path through the real runner, on every loop (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.runtime.member import shard_process
from poolnet_desktop.runtime.member.runner import ShardRunner, ShardSpec
from poolnet_desktop.runtime.member.shard_process import _LoopSubprocess, start_shard_process
from tests.conftest import posix_only

pytestmark = posix_only("POSIX commands and process groups")


@pytest.fixture
def without_pidfds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shard_process, "pidfd_supported", lambda: False)


@pytest.mark.asyncio
async def test_pidfds_are_used_where_the_kernel_has_them(tmp_path: Path) -> None:
    """On this Linux the loop's own process machinery is never used for a shard."""
    assert shard_process.pidfd_supported()
    process = await start_shard_process(["true"], tmp_path, dict(os.environ), lambda *_: None)
    await process.exited
    process.close()
    assert not isinstance(process, _LoopSubprocess) and process.returncode == 0


@pytest.mark.asyncio
@pytest.mark.usefixtures("without_pidfds")
async def test_without_pidfds_output_exit_code_and_background_child(tmp_path: Path) -> None:
    chunks: list[tuple[str, bytes]] = []

    async def collect(stream: str, data: bytes) -> None:
        chunks.append((stream, data))

    line = "echo out; echo err >&2; sleep 300 & exit 3"
    outcome = await ShardRunner(ShardSpec(command=line, shell=True, workdir=tmp_path), collect).run()
    assert (outcome.reason, outcome.exit_code) == ("failed", 3)
    assert b"".join(d for s, d in chunks if s == "stdout") == b"out\n"
    assert b"".join(d for s, d in chunks if s == "stderr") == b"err\n"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux affinity")
@pytest.mark.asyncio
@pytest.mark.usefixtures("without_pidfds")
async def test_without_pidfds_pinning_and_timeout(tmp_path: Path) -> None:
    core = max(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    pinned = ShardSpec(command=["sh", "-c", "cat /proc/self/status"], workdir=tmp_path,
                       cpu_cores=[core])
    seen: list[bytes] = []

    async def collect(stream: str, data: bytes) -> None:
        seen.append(data)

    assert (await ShardRunner(pinned, collect).run()).reason == "succeeded"
    assert f"Cpus_allowed_list:\t{core}\n".encode() in b"".join(seen)
    assert os.sched_getaffinity(0) == before
    slow = ShardSpec(command=["sleep", "300"], workdir=tmp_path, timeout=0.2)
    assert (await ShardRunner(slow).run()).reason == "timeout"


@pytest.mark.asyncio
async def test_cancelled_while_its_pipes_connect_the_shard_is_killed_and_reaped(
    tmp_path: Path,
) -> None:
    """``run()`` cancelled right after the spawn, before the runner knows the pid: the start
    itself must kill and reap what it started, and close the pipes."""
    me = psutil.Process()
    before = {child.pid for child in me.children()}
    task = asyncio.ensure_future(ShardRunner(ShardSpec(command=["sleep", "300"], workdir=tmp_path)).run())
    await asyncio.sleep(0)  # the task spawns, then waits for its first pipe to connect
    assert [c for c in me.children() if c.pid not in before], "the shard was started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(20):
        while [c for c in me.children() if c.pid not in before]:
            await asyncio.sleep(0.02)
