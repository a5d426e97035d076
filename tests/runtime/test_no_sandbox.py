"""A member that cannot make a sandbox (here: bwrap not on its PATH) says so, tells the host,
and takes no tasks unless its owner allowed running them without one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poolnet_desktop.runtime.host.pool_host import PoolHost
from tests.conftest import linux_only
from tests.runtime.conftest import PAIRING_CODE

pytestmark = linux_only("the bwrap probe and its messages")


async def wait_for(condition, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(("flags", "state", "accepts", "line"), [
    ((), "none", False, "no sandbox here (bubblewrap (bwrap) is not installed): not taking tasks"),
    (("--allow-unsandboxed",), "unsandboxed", True, "runs tasks without a sandbox"),
])
async def test_a_member_without_bwrap_refuses_tasks_unless_allowed(
    pool: PoolHost, tmp_path: Path, flags: tuple[str, ...], state: str, accepts: bool, line: str
) -> None:
    member = subprocess.Popen(
        [sys.executable, "-m", "poolnet_desktop", "join", pool.local_url,
         "--no-discovery", "--name", "bare", "--data-dir", str(tmp_path / "bare"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PATH": str(tmp_path / "empty-path"), "POOLNET_PAIRING_CODE": PAIRING_CODE},
    )
    try:
        await wait_for(lambda: any(d.name == "bare" and d.online for d in pool.coordinator.registry.all()))
        (device,) = [d for d in pool.coordinator.registry.all() if d.name == "bare"]
        assert (device.sandbox, device.accept_tasks) == (state, accepts)
    finally:
        member.terminate()
        out, _ = member.communicate(timeout=30)
    assert line in out
    assert ("run poolnet as an ordinary user" in out) == (accepts and os.geteuid() == 0)
