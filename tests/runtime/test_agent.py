"""The member agent against a real coordinator: real psutil readings, reconnection, backoff."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import psutil

from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.member.agent import AgentState
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.backoff import Backoff
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.runtime.conftest import PAIRING_CODE

NO_DISCOVERY = DiscoverySettings(enabled=False)


def member_of(url: str, data_dir: Path, name: str = "worker") -> Member:
    return Member(MemberOptions(url=url, data_dir=resolve_data_dir(data_dir), name=name, code=PAIRING_CODE, discovery=NO_DISCOVERY))


async def wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_a_member_reports_this_machines_real_resources(pool, tmp_path: Path) -> None:
    member = member_of(pool.local_url, tmp_path / "m", name="worker-1")
    running = asyncio.create_task(member.run())
    try:
        device_id = member.agent.config.device_id
        await wait_for(lambda: (d := pool.coordinator.registry.get(device_id)) is not None and d.resources.cpu_cores > 0)
        device = pool.coordinator.registry.get(device_id)
        assert device.name == "worker-1"
        assert device.resources.cpu_cores == psutil.cpu_count(logical=True)
        total_mb = psutil.virtual_memory().total / 2**20
        assert abs(device.resources.memory_total - total_mb) < 1
        disk = psutil.disk_usage(str(tmp_path))
        assert abs(device.resources.storage_total - disk.total / 2**20) < 1
        # No NVIDIA driver on this machine: the member says so plainly.
        assert device.resources.has_gpu is False and device.resources.gpu_count == 0
        assert device.limits.cpu_percent == 80 and device.limits.storage_percent == 50
    finally:
        await member.stop()
        await running
    assert member.agent.state == AgentState.STOPPED
    await wait_for(lambda: not pool.coordinator.registry.get(device_id).online, what="offline after leaving")


async def test_a_member_rejoins_after_the_coordinator_restarts(tmp_path: Path) -> None:
    host_dir = resolve_data_dir(tmp_path / "host")
    options = HostOptions(data_dir=host_dir, bind="127.0.0.1", port=0, batch_interval=0.1, pairing_code=PAIRING_CODE, discovery=NO_DISCOVERY)
    first = PoolHost(options)
    await first.start()
    port = first.server.port
    member = member_of(first.local_url, tmp_path / "m")
    member.agent._backoff = Backoff(base=0.05, cap=0.3)
    running = asyncio.create_task(member.run())
    second = None
    try:
        await wait_for(lambda: member.agent.state == AgentState.CONNECTED)
        pool_id = member.agent.welcome.pool_id
        await first.stop()
        await wait_for(lambda: member.agent.state != AgentState.CONNECTED)
        options.port = port
        second = PoolHost(options)
        await second.start()
        await wait_for(lambda: member.agent.state == AgentState.CONNECTED, timeout=15)
        device = second.coordinator.registry.get(member.agent.config.device_id)
        assert device is not None and device.online
        assert member.agent.welcome.pool_id == pool_id  # the pool keeps its identity across restarts
    finally:
        await member.stop()
        await running
        if second is not None:
            await second.stop()


def test_backoff_grows_exponentially_with_jitter_and_resets() -> None:
    backoff = Backoff(base=1.0, cap=10.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(10.0, 2**attempt)
        assert ceiling * 0.5 <= delay <= ceiling
    assert max(delays) <= 10.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0


async def test_stop_ends_a_member_still_trying_to_connect(tmp_path: Path) -> None:
    """A host that accepts TCP but never answers: stop() must not wait for the open timeout."""
    import time

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # never answer the TLS handshake

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    member = member_of(f"wss://127.0.0.1:{port}/ws", tmp_path / "m")
    running = asyncio.create_task(member.run())
    try:
        await wait_for(lambda: member.agent.state == AgentState.CONNECTING)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await member.stop()
        await asyncio.wait_for(running, 3)
        assert time.monotonic() - started < 3
        assert member.agent.state == AgentState.STOPPED
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
