"""This machine as a pool member: the agent, its sampler and the sandboxed task executor."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from poolnet_desktop.core.environment import DEFAULT_CACHE_LIMIT
from poolnet_desktop.core.pool_url import normalise_pool_url
from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.runtime.member.agent import Agent, AgentConfig
from poolnet_desktop.runtime.member.sampler import ResourceSampler
from poolnet_desktop.runtime.member.sandbox import SandboxSettings
from poolnet_desktop.runtime.member.task_executor import TaskExecutor
from poolnet_desktop.runtime.net.discovery import DiscoveryError, DiscoverySettings, PoolBrowser
from poolnet_desktop.runtime.pool_files import (
    MEMBERSHIP_FILE,
    read_pool_file,
    write_pool_file,
)
from poolnet_desktop.runtime.security.auth import HostAuth
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.trust import PinnedHosts

log = logging.getLogger(__name__)


@dataclass
class MemberOptions:
    """How this machine joins the pool at ``url`` (``joined_pool_url`` gives the last one)."""

    url: str
    data_dir: Path
    name: str = field(default_factory=socket.gethostname)
    limits: SharingLimits = field(default_factory=SharingLimits)
    accept_tasks: bool = True
    # Tasks may use the network (off: each shard gets a network namespace of its own).
    task_network: bool = True
    # Where no sandbox can be made, run tasks anyway (off: the member takes no tasks).
    allow_unsandboxed: bool = False
    # More folders shards must not see: the host's data folder, for the host's own member
    # (its own folder lies inside it, and may lie outside the home, hidden anyway).
    hidden_from_tasks: tuple[Path, ...] = ()
    # Bytes of built Python environments kept for tasks (least recently used go first).
    env_cache_limit: int = DEFAULT_CACHE_LIMIT
    code: str | None = None
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    # Drop the pin of the pool this member joined, to pair again with ``code`` after its owner
    # replaced the pool's identity (``poolnet host --new-identity``).
    forget_pin: bool = False


class MembershipError(Exception):
    """The options contradict each other."""


class Member:
    """This machine as a pool member: the agent plus what it needs to sample and run work.

    It remembers the pool it joined (``membership.json``: its id and last address), and when
    the host's address changes it finds the pool again through zeroconf.
    """

    def __init__(self, options: MemberOptions) -> None:
        if options.forget_pin and not options.code:
            raise MembershipError("--forget-pin needs --code: a host with a new identity must prove the code")
        self.options = options
        self._membership_path = options.data_dir / MEMBERSHIP_FILE
        membership = self._membership = read_pool_file(self._membership_path)
        url = normalise_pool_url(options.url)
        same_pool = url == membership.get("url")
        self.identity = Identity.load_or_create(options.data_dir)
        self.sampler = ResourceSampler(options.data_dir)
        pinned = PinnedHosts.load(options.data_dir / "pinned-hosts.json")
        if options.forget_pin and membership.get("poolId"):
            pinned.forget(membership["poolId"])
        self.agent = Agent(
            AgentConfig(
                url=url,
                identity=self.identity,
                pinned=pinned,
                pool_id=membership.get("poolId") if same_pool else None,
                code=options.code,
                device_name=options.name,
                limits=options.limits,
                accept_tasks=options.accept_tasks,
            ),
            self.sampler,
        )
        self.executor = TaskExecutor(
            self.agent, options.data_dir, self.sampler,
            SandboxSettings(network=options.task_network, allow_unsandboxed=options.allow_unsandboxed,
                            hidden=options.hidden_from_tasks),
            env_cache_limit=options.env_cache_limit,
        )
        self.sampler.environments = self.executor.environments.usage
        self.agent.on_joined = self._remember_pool
        self.agent.rediscover = self._find_pool

    def _remember_pool(self, host: HostAuth, url: str) -> None:
        wanted = {"poolId": host.pool_id, "url": url}
        if self._membership != wanted:  # every reconnect asks: write only what changed
            write_pool_file(self._membership_path, wanted)
            self._membership = wanted

    async def _find_pool(self, pool_id: str, failed_url: str) -> str | None:
        browser = PoolBrowser(self.options.discovery)
        try:
            await browser.start()
            found = await browser.find_pool(pool_id, timeout=5.0, exclude_url=failed_url)
        except DiscoveryError as exc:
            log.debug("cannot look for pool %s: %s", pool_id, exc)
            return None
        finally:
            await browser.close()
        return found.url if found is not None else None

    async def run(self) -> None:
        try:
            await self.executor.prepare()
            await self.agent.run()
        finally:
            self.sampler.close()

    async def stop(self) -> None:
        await self.executor.stop()
        await self.agent.stop()
