"""The two things an instance can run: a pool host (coordinator + servers) and a member.

Both the command line and the desktop app build these, so a headless machine and a desktop run
exactly the same code. Each has ``start()`` and an ordered, idempotent ``stop()``.

A host serves PoolNet over TLS (``wss://``) on its main port, and the seed's plain protocol on
a separate legacy port only when asked to. Every PoolNet peer authenticates with its key, a
pairing code or the owner's approval; the host's own identity is trusted from the start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from poolnet_desktop.core.permissions import GRANTED_BY_APPROVAL
from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.core.retention import RetentionPolicy
from poolnet_desktop.runtime.access import PoolAccess
from poolnet_desktop.runtime.agent import Agent, AgentConfig
from poolnet_desktop.runtime.auth import Authenticator, HostAuth
from poolnet_desktop.runtime.coordinator import Coordinator, CoordinatorConfig
from poolnet_desktop.runtime.discovery import DiscoveryError, DiscoverySettings, PoolAnnouncer, PoolBrowser
from poolnet_desktop.runtime.fdlimit import raise_fd_limit
from poolnet_desktop.runtime.identity import Identity, replace_identity, write_private_file
from poolnet_desktop.runtime.metrics import PoolMetrics
from poolnet_desktop.runtime.rest import load_or_create_rest_token
from poolnet_desktop.runtime.sampler import ResourceSampler
from poolnet_desktop.core.environment import DEFAULT_CACHE_LIMIT
from poolnet_desktop.runtime.sandbox import SandboxSettings
from poolnet_desktop.runtime.server import PoolServer
from poolnet_desktop.runtime.task_executor import TaskExecutor
from poolnet_desktop.runtime.task_service import TaskService, TaskServiceConfig
from poolnet_desktop.runtime.tls import server_ssl_context
from poolnet_desktop.runtime.trust import ApprovedDevice, PinnedHosts, TrustStore

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    write_private_file(path, json.dumps(data, indent=2).encode())


HOSTING_FILE = "hosting.json"
MEMBERSHIP_FILE = "membership.json"
# The host's own member keeps its identity here, apart from the owner's (``prepare_own_member``).
OWN_MEMBER_FOLDER = "member"


# Where a command looks for a pool when none is named and the data folder knows none.
DEFAULT_POOL_URL = "wss://127.0.0.1:3000/ws"


def default_pool_url(data_dir: Path) -> str:
    """The pool a command or ``poolnet.Pool`` means when none is named: the data folder's
    own (``last_pool_url``), else this machine's default port."""
    return last_pool_url(data_dir) or DEFAULT_POOL_URL


def last_pool_url(data_dir: Path) -> str | None:
    """The pool this data folder's commands mean by default: the one it hosts while it does
    (on its real port), else the one it joined last; None if neither."""
    for name in (HOSTING_FILE, MEMBERSHIP_FILE):
        if isinstance(url := _read_json(data_dir / name).get("url"), str) and url:
            return url
    return None


def joined_pool_url(data_dir: Path) -> str | None:
    """The pool this data folder's member joined last (None if it never joined one)."""
    url = _read_json(data_dir / MEMBERSHIP_FILE).get("url")
    return url if isinstance(url, str) and url else None


def load_pool_identity(data_dir: Path, name: str | None) -> tuple[str, str]:
    """The pool's stable id and its name (kept in ``pool.json``; a new ``name`` replaces it)."""
    path = data_dir / "pool.json"
    stored = _read_json(path)
    pool_id = stored.get("poolId") or uuid.uuid4().hex
    pool_name = name or stored.get("poolName") or f"{socket.gethostname()}'s pool"
    if stored != {"poolId": pool_id, "poolName": pool_name}:
        _write_json(path, {"poolId": pool_id, "poolName": pool_name})
    return pool_id, pool_name


@dataclass
class HostOptions:
    """``pairing_code`` None makes a random one; ``legacy_port`` None keeps seed clients out."""

    data_dir: Path
    bind: str = "0.0.0.0"
    port: int = 3000
    pool_name: str | None = None
    heartbeat_timeout: float = 30.0
    batch_interval: float = 1.0
    pairing_code: str | None = None
    legacy_port: int | None = None
    seed_may_submit: bool = False
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    # Replace the host's keys and certificate before starting (``poolnet host --new-identity``).
    new_identity: bool = False
    # Which ended tasks the pool keeps (``poolnet host --keep-task-days/--keep-tasks``).
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)


class PoolHost:
    """A coordinator serving on its ports; ``url`` is where members connect once started."""

    def __init__(self, options: HostOptions) -> None:
        pool_id, pool_name = load_pool_identity(options.data_dir, options.pool_name)
        self.options = options
        self._replaced: Identity | None = None
        if options.new_identity:
            self._replaced, self.identity = replace_identity(options.data_dir)
        else:
            self.identity = Identity.load_or_create(options.data_dir)
        self.coordinator = Coordinator(
            CoordinatorConfig(
                pool_id=pool_id,
                pool_name=pool_name,
                heartbeat_timeout=options.heartbeat_timeout,
                batch_interval=options.batch_interval,
                seed_may_submit=options.seed_may_submit,
            )
        )
        self.server = PoolServer(
            self.coordinator,
            options.bind,
            options.port,
            ssl_context=server_ssl_context(self.identity),
            dialects=frozenset({"poolnet"}),
            rest_for_loopback_only=True,
            rest_token=load_or_create_rest_token(options.data_dir),
        )
        self.metrics = PoolMetrics(self.coordinator)
        self.server.rest.extend("/metrics", self.metrics.response)
        self.legacy_server = (
            PoolServer(self.coordinator, options.bind, options.legacy_port, dialects=frozenset({"seed"}))
            if options.legacy_port is not None
            else None
        )
        self.access: PoolAccess | None = None
        self.tasks = TaskService(self.coordinator, self.server, options.data_dir,
                                 TaskServiceConfig(retention=options.retention))
        self.announcer: PoolAnnouncer | None = None
        self._store: TrustStore | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def local_url(self) -> str:
        """The address this machine's own member and CLI use: loopback, unless the host
        listens on one address only (``--bind 10.0.0.5``), where loopback would find no one."""
        bind = self.options.bind
        if bind in ("", "0.0.0.0", "::") or bind.startswith("127."):
            return f"wss://127.0.0.1:{self.server.port}/ws"
        return f"wss://{f'[{bind}]' if ':' in bind else bind}:{self.server.port}/ws"

    @property
    def pairing_code(self) -> str | None:
        return self.access.authenticator.pairing_code if self.access else None

    async def start(self) -> None:
        config = self.coordinator.config
        raise_fd_limit()  # one socket per peer: a big pool outgrows the usual 1,024
        self._store = await TrustStore.open(self.options.data_dir / "trust.sqlite3")
        authenticator = Authenticator(
            self._store,
            pool_id=config.pool_id,
            server_fingerprint=self.identity.cert_fingerprint,
            pairing_code=self.options.pairing_code,
        )
        self.access = PoolAccess(self.coordinator, authenticator, self._store)
        if self._replaced is not None:
            await self._forget_old_identity(self._replaced, self._store)
        await self.access.trust_owner(self.identity.device_id, socket.gethostname(), self.identity.public_key_b64)
        await self.server.start()
        _write_json(self.options.data_dir / HOSTING_FILE, {"url": self.local_url, "poolId": config.pool_id})
        if self.legacy_server is not None:
            await self.legacy_server.start()
        self.coordinator.start()
        self.metrics.start()
        await self.tasks.start()
        self.announcer = PoolAnnouncer(
            self.options.discovery,
            pool_name=config.pool_name,
            pool_id=config.pool_id,
            port=self.server.port,
            tls=True,
            fingerprint=self.identity.cert_fingerprint[:16],
        )
        try:
            await self.announcer.start()
        except DiscoveryError as exc:
            log.warning("the pool is not announced on the LAN: %s", exc)

    async def prepare_own_member(self) -> Path:
        """The data folder for this machine's own member: ``DATA/member``, with a key pair of
        its own, the host's certificate pinned, and approved in the trust store as a plain
        member (member + observer), never as the owner. A shard that got hold of the member's
        key could then act as a member, not approve, revoke or submit as the owner. Call
        after ``start``."""
        assert self._store is not None, "start the host first"
        folder = self.options.data_dir / OWN_MEMBER_FOLDER
        folder.mkdir(mode=0o700, exist_ok=True)
        identity = await asyncio.to_thread(Identity.load_or_create, folder)
        pins = await asyncio.to_thread(PinnedHosts.load, folder / "pinned-hosts.json")
        pool_id, fingerprint = self.coordinator.config.pool_id, self.identity.cert_fingerprint
        if pins.get(pool_id) != fingerprint:
            # The host itself says which certificate is its own (after --new-identity, a new one).
            await asyncio.to_thread(pins.forget, pool_id)
            await asyncio.to_thread(pins.pin, pool_id, fingerprint)
        if await self._store.approved(identity.device_id) is None:
            await self._store.approve(ApprovedDevice(
                identity.device_id, f"{socket.gethostname()} (host's member)", identity.public_key_b64,
                time.time(), GRANTED_BY_APPROVAL,
            ))
        return folder

    async def _forget_old_identity(self, old: Identity, store: TrustStore) -> None:
        """After ``new_identity``: the old keys are presumed stolen, and with them the trust
        store, so every approval is dropped (each device pairs again with the new code, and
        whoever holds a copy of an approved device's key gets nothing) and the old owner's id is
        revoked. Tasks and the pool's id are kept. The own member's pin goes too."""
        now = time.time()
        dropped = await store.forget_all_except(self.identity.device_id)
        await store.revoke(old.device_id, at=now, reason="the pool's identity was replaced")
        await store.record(
            "new_identity", at=now, device_id=self.identity.device_id,
            detail=f"certificate {self.identity.cert_fingerprint[:16]}…; {len(dropped)} devices must pair again",
        )
        pins = PinnedHosts.load(self.options.data_dir / "pinned-hosts.json")
        await asyncio.to_thread(pins.forget, self.coordinator.config.pool_id)

    async def stop(self) -> None:
        """Withdraw the announcement, say goodbye to every peer, close the ports and the store."""
        if self.announcer is not None:
            await self.announcer.stop()
        await self.coordinator.stop()
        await self.metrics.stop()
        await self.server.stop()
        (self.options.data_dir / HOSTING_FILE).unlink(missing_ok=True)
        if self.legacy_server is not None:
            await self.legacy_server.stop()
        await self.tasks.stop()
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()


def normalise_pool_url(url: str) -> str:
    """Accept ``host:port``, ``https://host:port`` or a full ``wss://host:port/ws``."""
    if "://" not in url:
        url = f"wss://{url}"
    scheme, rest = url.split("://", 1)
    scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    if "/" not in rest:
        rest += "/ws"
    return f"{scheme}://{rest}"


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
        membership = self._membership = _read_json(self._membership_path)
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
            _write_json(self._membership_path, wanted)
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
