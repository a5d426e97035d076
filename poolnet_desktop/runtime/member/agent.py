"""The member agent: joins a pool, reports this machine's resources, keeps the link alive.

It reconnects by itself with exponential backoff and jitter whenever the link drops, so a
restarted coordinator finds its members back within seconds. Work placed on this member is
handled by services registered through ``add_handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from poolnet_desktop import __version__
from poolnet_desktop.core.protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Hello,
    ProtocolError,
    ResourceUpdate,
    ServerShutdown,
    SetAcceptTasks,
    Welcome,
    decode_server,
    encode,
)
from poolnet_desktop.core.resources import Resources, SharingLimits
from poolnet_desktop.core.sandbox_state import SandboxState
from poolnet_desktop.core.wire import ErrorCode
from poolnet_desktop.runtime.member.sampler import ResourceSampler
from poolnet_desktop.runtime.net.backoff import Backoff
from poolnet_desktop.runtime.net.discovery import platform_name
from poolnet_desktop.runtime.security.auth import AuthRefused, HostAuth, join_pool
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.tls import InsecureConnection, client_ssl_for_url
from poolnet_desktop.runtime.security.trust import PinnedHosts

log = logging.getLogger(__name__)


# Refusals that another attempt cannot fix: the member stops and says why.
FATAL_REFUSALS = frozenset(
    {ErrorCode.REVOKED, ErrorCode.AUTH_FAILED, ErrorCode.HOST_MISMATCH, ErrorCode.APPROVAL_DENIED, ErrorCode.FORBIDDEN}
)
# After this many failed attempts in a row, a member that knows its pool looks for it again.
REDISCOVER_AFTER_FAILURES = 2


@dataclass
class AgentConfig:
    """``pool_id`` is the pool this member belongs to (None before its first join); ``code``
    pairs it with a new pool; ``pinned`` holds the host certificates it trusts."""

    url: str
    identity: Identity
    pinned: PinnedHosts
    pool_id: str | None = None
    code: str | None = None
    device_name: str = field(default_factory=socket.gethostname)
    limits: SharingLimits = field(default_factory=SharingLimits)
    accept_tasks: bool = True
    sandbox: SandboxState | Literal[""] = ""  # told by the executor before the first hello
    heartbeat_interval: float | None = None  # None: use the pool's
    resource_interval: float | None = None

    @property
    def device_id(self) -> str:
        return self.identity.device_id


class AgentState:
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    WAITING = "waiting"  # for the host's owner to approve this device
    CONNECTED = "connected"
    REFUSED = "refused"
    STOPPED = "stopped"


class Agent:
    """Runs until ``stop()``; ``state`` and ``welcome`` say where the link stands."""

    def __init__(self, config: AgentConfig, sampler: ResourceSampler, backoff: Backoff | None = None) -> None:
        self.config = config
        self.sampler = sampler
        self.state = AgentState.DISCONNECTED
        self.welcome: Welcome | None = None
        self.last_error: str | None = None
        self.last_resources: Resources | None = None
        self._backoff = backoff or Backoff()
        self._connection: ClientConnection | None = None
        self._attempt: asyncio.Future[float | None] | None = None
        self._stopping = asyncio.Event()
        self._handlers: dict[type, Callable[[Any], Awaitable[None]]] = {}
        # Everyone who follows the link (the task executor, the window) adds a listener.
        self.state_listeners: list[Callable[[str], None]] = []
        # Called once per successful join with what the host proved (to remember the pool).
        self.on_joined: Callable[[HostAuth, str], None] | None = None
        # Finds the pool's current address after repeated failures (zeroconf); None if unknown.
        self.rediscover: Callable[[str, str], Awaitable[str | None]] | None = None

    def add_handler(self, message_type: type, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Route a server message type (shard assignments, cancels) to a service."""
        self._handlers[message_type] = handler

    async def send(self, message: Any) -> bool:
        """Send to the coordinator if connected; returns False when the link is down."""
        connection = self._connection
        if connection is None or self.state != AgentState.CONNECTED:
            return False
        try:
            await connection.send(encode(message), text=True)
        except ConnectionClosed:
            return False
        return True

    async def send_bytes(self, data: bytes) -> bool:
        connection = self._connection
        if connection is None or self.state != AgentState.CONNECTED:
            return False
        try:
            await connection.send(data)
        except ConnectionClosed:
            return False
        return True

    async def set_accept_tasks(self, accept: bool) -> None:
        self.config.accept_tasks = accept
        await self.send(SetAcceptTasks(accept=accept))

    def set_limits(self, limits: SharingLimits) -> None:
        """New sharing limits go out with the next resource report."""
        self.config.limits = limits

    async def run(self) -> None:
        """Connect, serve, and reconnect after every drop until ``stop()``."""
        failures = 0
        while not self._stopping.is_set():
            self._set_state(AgentState.CONNECTING)
            pause: float | None = None
            self._attempt = asyncio.ensure_future(self._session())
            try:
                pause = await self._attempt
                failures = 0
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
            except (AuthRefused, InsecureConnection) as exc:
                code = exc.code if isinstance(exc, AuthRefused) else ErrorCode.HOST_MISMATCH
                said_before = self.last_error
                self.last_error = exc.message if isinstance(exc, AuthRefused) else str(exc)
                # Said once, not at every retry: a member facing an impostor tries for hours.
                # A refusal that ends the agent is said by its owner (the window, the CLI).
                quiet = code in FATAL_REFUSALS or self.last_error == said_before
                (log.info if quiet else log.warning)(
                    "the pool at %s refused this member: %s", self.config.url, self.last_error
                )
                if code == ErrorCode.HOST_CHANGED:
                    # Someone else answers where our pool was (an impostor, a rebuilt or
                    # re-keyed host): keep looking, with backoff and rediscovery, and say so.
                    failures += 1
                elif code in FATAL_REFUSALS:
                    self._set_state(AgentState.REFUSED)
                    return
                pause = exc.retry_after if isinstance(exc, AuthRefused) else None
            except ProtocolError as exc:
                # Turned away after authenticating (a role its permissions lack) is a refusal:
                # the member stops and says why instead of retrying for ever.
                self.last_error = exc.message
                failures += 1
                if exc.code in FATAL_REFUSALS:
                    log.info("the pool at %s refused this member: %s", self.config.url, exc.message)
                    self._set_state(AgentState.REFUSED)
                    return
                log.info("pool link to %s down: %s", self.config.url, exc.message)
            except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                failures += 1
                log.info("pool link to %s down: %s", self.config.url, self.last_error)
            finally:
                self._attempt = None
                self._connection = None
                self.welcome = None
            if self._stopping.is_set():
                break
            self._set_state(AgentState.DISCONNECTED)
            if failures >= REDISCOVER_AFTER_FAILURES:
                await self._look_for_pool()
            delay = pause if pause is not None else self._backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        self._set_state(AgentState.STOPPED)

    async def _look_for_pool(self) -> None:
        """Ask discovery where this member's pool is now (its host may have a new address)."""
        if self.rediscover is None or self.config.pool_id is None:
            return
        new_url = await self.rediscover(self.config.pool_id, self.config.url)
        if new_url and new_url != self.config.url:
            log.info("pool %s found again at %s", self.config.pool_id, new_url)
            self.config.url = new_url

    async def stop(self) -> None:
        """Leave the pool: close the link politely, or abandon a connection still being made."""
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            await connection.close(1001, "member leaving")
        elif self._attempt is not None:
            self._attempt.cancel()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            for listener in self.state_listeners:
                listener(state)

    def _hello(self) -> Hello:
        return Hello(
            protocol=PROTOCOL_VERSION,
            role="member",
            device_id=self.config.device_id,
            device_name=self.config.device_name,
            platform=platform_name(),
            software=f"poolnet {__version__}",
            accept_tasks=self.config.accept_tasks,
            sandbox=self.config.sandbox,
        )

    async def _session(self) -> float | None:
        """One connection's life. Returns a pause the server asked for, or None for backoff."""
        async with connect(
            self.config.url,
            ssl=client_ssl_for_url(self.config.url),
            proxy=None,
            max_size=MAX_FRAME,
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
        ) as connection:
            self._connection = connection
            host, welcome = await join_pool(
                connection, self.config.identity, self._hello(), self.config.pinned, self.config.pool_id,
                self.config.code, on_pending=lambda _message: self._set_state(AgentState.WAITING),
            )
            self.config.pool_id = host.pool_id
            if self.on_joined is not None:
                self.on_joined(host, self.config.url)
            self.welcome = welcome
            self._backoff.reset()
            self.last_error = None
            self._set_state(AgentState.CONNECTED)
            log.info("joined pool %r as %s", welcome.pool_name, welcome.device_id)
            reporters = [
                asyncio.create_task(self._report_resources(welcome)),
                asyncio.create_task(self._heartbeat(welcome)),
            ]
            try:
                return await self._receive(connection)
            finally:
                for task in reporters:
                    task.cancel()
                await asyncio.gather(*reporters, return_exceptions=True)

    async def _receive(self, connection: ClientConnection) -> float | None:
        async for frame in connection:
            if isinstance(frame, bytes):
                handler = self._handlers.get(bytes)
                if handler is not None:
                    await handler(frame)
                continue
            try:
                message = decode_server(frame)
            except ProtocolError as exc:
                log.warning("ignored a malformed message from the pool: %s", exc.message)
                continue
            if isinstance(message, ServerShutdown):
                log.info("the pool is shutting down: %s", message.reason)
                return message.reconnect_after
            if isinstance(message, Error):
                log.warning("the pool refused a message: %s (%s)", message.message, message.code)
                continue
            handler = self._handlers.get(type(message))
            if handler is not None:
                await handler(message)
        return None

    async def _report_resources(self, welcome: Welcome) -> None:
        interval = self.config.resource_interval or welcome.resource_interval
        while True:
            resources = await asyncio.to_thread(self.sampler.sample, self.config.limits)
            self.last_resources = resources
            await self.send(ResourceUpdate(device_id=self.config.device_id, resources=resources))
            await asyncio.sleep(interval)

    async def _heartbeat(self, welcome: Welcome) -> None:
        interval = self.config.heartbeat_interval or welcome.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            await self.send(Heartbeat(device_id=self.config.device_id))
