"""A pool host: the coordinator serving on its ports, with its trust store, tasks and announcement.

A host serves PoolNet over TLS (``wss://``) on its main port, and the seed's plain protocol on
a separate legacy port only when asked to. Every PoolNet peer authenticates with its key, a
pairing code or the owner's approval; the host's own identity is trusted from the start.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from poolnet_desktop.core.permissions import GRANTED_BY_APPROVAL
from poolnet_desktop.core.retention import RetentionPolicy
from poolnet_desktop.runtime.fdlimit import raise_fd_limit
from poolnet_desktop.runtime.host.access import PoolAccess
from poolnet_desktop.runtime.host.coordinator import Coordinator, CoordinatorConfig
from poolnet_desktop.runtime.host.metrics import PoolMetrics
from poolnet_desktop.runtime.host.rest import load_or_create_rest_token
from poolnet_desktop.runtime.host.server import PoolServer
from poolnet_desktop.runtime.host.task_service import TaskService, TaskServiceConfig
from poolnet_desktop.runtime.net.discovery import DiscoveryError, DiscoverySettings, PoolAnnouncer
from poolnet_desktop.runtime.pool_files import HOSTING_FILE, read_pool_file, write_pool_file
from poolnet_desktop.runtime.security.auth import Authenticator
from poolnet_desktop.runtime.security.identity import Identity, replace_identity
from poolnet_desktop.runtime.security.tls import server_ssl_context
from poolnet_desktop.runtime.security.trust import ApprovedDevice, PinnedHosts, TrustStore

log = logging.getLogger(__name__)


# The host's own member keeps its identity here, apart from the owner's (``prepare_own_member``).
OWN_MEMBER_FOLDER = "member"


def load_pool_identity(data_dir: Path, name: str | None) -> tuple[str, str]:
    """The pool's stable id and its name (kept in ``pool.json``; a new ``name`` replaces it)."""
    path = data_dir / "pool.json"
    stored = read_pool_file(path)
    pool_id = stored.get("poolId") or uuid.uuid4().hex
    pool_name = name or stored.get("poolName") or f"{socket.gethostname()}'s pool"
    if stored != {"poolId": pool_id, "poolName": pool_name}:
        write_pool_file(path, {"poolId": pool_id, "poolName": pool_name})
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
        write_pool_file(self.options.data_dir / HOSTING_FILE, {"url": self.local_url, "poolId": config.pool_id})
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
