"""Fixtures for runtime tests: a real coordinator on 127.0.0.1 and raw WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.net.discovery import DiscoverySettings

PAIRING_CODE = "TEST-CODE"
# Test modules whose async tests run once on each of these event loops: asyncio's own (tests,
# Windows) and uvloop (``poolnet join``). Not qasync (the window's loop), though the runner's
# tests pass on it alone: once qasync loops have run shards in this process, a later test on
# another loop segfaulted in pytest-qt's processing of Qt events (cause not found yet).
LOOPS_BY_MODULE = {
    "test_runner.py": ("asyncio", "uvloop"),
    "test_shard_process.py": ("asyncio", "uvloop"),
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The runner must behave the same on every loop PoolNet runs on, so its tests run on
    each; every other test keeps asyncio's own loop (one factory adds nothing to its id).
    Windows has no uvloop (PoolNet does not install it there)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if sys.platform != "win32":
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    wanted = LOOPS_BY_MODULE.get(item.path.name, ("asyncio",))
    return {name: factories[name] for name in wanted if name in factories}


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[PoolHost]:
    """A started pool host on a free loopback port with short timings for tests."""
    data_dir = resolve_data_dir(tmp_path / "host")
    host = PoolHost(
        HostOptions(
            data_dir=data_dir,
            bind="127.0.0.1",
            port=0,
            heartbeat_timeout=1.5,
            batch_interval=0.1,
            pairing_code=PAIRING_CODE,
            legacy_port=0,
            discovery=DiscoverySettings(enabled=False),
        )
    )
    await host.start()
    yield host
    await host.stop()


class RawClient:
    """A WebSocket client speaking plain JSON, as a client written from the seed's docs would."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.connection.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def receive_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of type ``kind``, skipping others (relays, batches)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.receive(timeout)
                if message.get("type") == kind:
                    return message

    async def close(self) -> None:
        await self.connection.close()


@pytest.fixture
async def raw_client(pool: PoolHost) -> AsyncIterator[Any]:
    """A factory of raw seed-protocol clients on ``pool``'s legacy port; closed at the end."""
    clients: list[RawClient] = []

    async def open_client(path: str = "/ws") -> RawClient:
        assert pool.legacy_server is not None
        url = f"ws://127.0.0.1:{pool.legacy_server.port}{path}"
        client = RawClient(await connect(url, proxy=None, open_timeout=5, max_queue=None, close_timeout=2))
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


def seed_resources(**overrides: Any) -> dict[str, Any]:
    """A resources object exactly as the seed's Flutter client sends it."""
    resources = {
        "cpuUsage": 25.0,
        "cpuAvailable": 75.0,
        "cpuCores": 8,
        "memoryUsage": 4096,
        "memoryAvailable": 12288,
        "memoryTotal": 16384,
        "storageUsage": 100000,
        "storageAvailable": 400000,
        "storageTotal": 500000,
        "hasGPU": False,
        "gpuName": None,
    }
    resources.update(overrides)
    return resources


async def register_members(raw_client: Any, count: int) -> list[RawClient]:
    """``count`` seed clients registered as ``m0``, ``m1``, ...; each has had its ``devices``."""
    members = []
    for index in range(count):
        member = await raw_client()
        await member.send({"type": "register", "deviceId": f"m{index}", "deviceName": f"M{index}", "platform": "linux"})
        await member.receive_type("devices")
        members.append(member)
    return members


@pytest.fixture
async def client(pool: PoolHost) -> AsyncIterator[TaskClient]:
    """The host owner's own task client (its identity is trusted without pairing), for the
    modules that define a ``pool``."""
    link = await open_link(pool.local_url, pool.options.data_dir)
    yield TaskClient(link)
    await link.close()
