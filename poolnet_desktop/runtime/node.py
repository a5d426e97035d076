"""The two things an instance can run: a pool host (coordinator + server) and a member.

Both the command line and the desktop app build these, so a headless machine and a desktop run
exactly the same code. Each has ``start()`` and an ordered, idempotent ``stop()``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.runtime.agent import Agent, AgentConfig
from poolnet_desktop.runtime.coordinator import Coordinator, CoordinatorConfig
from poolnet_desktop.runtime.sampler import ResourceSampler
from poolnet_desktop.runtime.server import PoolServer

log = logging.getLogger(__name__)


def _write_json_atomically(path: Path, data: dict) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def load_pool_identity(data_dir: Path, name: str | None) -> tuple[str, str]:
    """The pool's stable id and its name (kept in ``pool.json``; a new ``name`` replaces it)."""
    path = data_dir / "pool.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    pool_id = stored.get("poolId") or uuid.uuid4().hex
    pool_name = name or stored.get("poolName") or f"{socket.gethostname()}'s pool"
    if stored != {"poolId": pool_id, "poolName": pool_name}:
        _write_json_atomically(path, {"poolId": pool_id, "poolName": pool_name})
    return pool_id, pool_name


def local_device_id(data_dir: Path) -> str:
    """This instance's device id, stable across restarts."""
    path = data_dir / "device-id"
    try:
        device_id = path.read_text().strip()
    except OSError:
        device_id = ""
    if not device_id:
        device_id = f"pn-{uuid.uuid4().hex[:26]}"
        path.write_text(device_id)
    return device_id


@dataclass
class HostOptions:
    data_dir: Path
    bind: str = "0.0.0.0"
    port: int = 3000
    pool_name: str | None = None
    heartbeat_timeout: float = 30.0
    batch_interval: float = 1.0


class PoolHost:
    """A coordinator serving on one port; ``url`` is where members connect once started."""

    def __init__(self, options: HostOptions) -> None:
        pool_id, pool_name = load_pool_identity(options.data_dir, options.pool_name)
        self.options = options
        self.coordinator = Coordinator(
            CoordinatorConfig(
                pool_id=pool_id,
                pool_name=pool_name,
                heartbeat_timeout=options.heartbeat_timeout,
                batch_interval=options.batch_interval,
            )
        )
        self.server = PoolServer(self.coordinator, options.bind, options.port)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def local_url(self) -> str:
        """The address this machine's own member uses: always loopback."""
        scheme = "wss" if self.server.tls else "ws"
        return f"{scheme}://127.0.0.1:{self.server.port}/ws"

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()


@dataclass
class MemberOptions:
    url: str
    data_dir: Path
    name: str = field(default_factory=socket.gethostname)
    limits: SharingLimits = field(default_factory=SharingLimits)
    accept_tasks: bool = True


class Member:
    """This machine as a pool member: the agent plus what it needs to sample and run work."""

    def __init__(self, options: MemberOptions) -> None:
        self.options = options
        self.sampler = ResourceSampler(options.data_dir)
        self.agent = Agent(
            AgentConfig(
                url=options.url,
                device_id=local_device_id(options.data_dir),
                device_name=options.name,
                limits=options.limits,
                accept_tasks=options.accept_tasks,
            ),
            self.sampler,
        )

    async def run(self) -> None:
        try:
            await self.agent.run()
        finally:
            self.sampler.close()

    async def stop(self) -> None:
        await self.agent.stop()
