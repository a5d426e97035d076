"""The member agent: joins a pool, reports this machine's resources, keeps the link alive.

It reconnects by itself with exponential backoff and jitter whenever the link drops, so a
restarted coordinator finds its members back within seconds. Work placed on this member is
handled by services registered through ``add_handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from poolnet_desktop import __version__
from poolnet_desktop.core.protocol import (
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
    encode_text,
)
from poolnet_desktop.core.resources import Resources, SharingLimits
from poolnet_desktop.runtime.backoff import Backoff
from poolnet_desktop.runtime.sampler import ResourceSampler
from poolnet_desktop.runtime.server import MAX_FRAME

log = logging.getLogger(__name__)


def platform_name() -> str:
    """The seed's platform names: ``linux``, ``windows``, ``macos``."""
    system = platform.system().lower()
    return {"darwin": "macos"}.get(system, system or "unknown")


@dataclass
class AgentConfig:
    url: str
    device_id: str
    device_name: str = field(default_factory=socket.gethostname)
    limits: SharingLimits = field(default_factory=SharingLimits)
    accept_tasks: bool = True
    heartbeat_interval: float | None = None  # None: use the pool's
    resource_interval: float | None = None
    ssl_context: ssl.SSLContext | None = None


class AgentState:
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
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
        self._stopping = asyncio.Event()
        self._handlers: dict[type, Callable[[Any], Awaitable[None]]] = {}
        self.on_state_change: Callable[[str], None] | None = None
        self.authenticate: Callable[[ClientConnection, Hello], Awaitable[None]] | None = None

    def add_handler(self, message_type: type, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Route a server message type (shard assignments, cancels) to a service."""
        self._handlers[message_type] = handler

    async def send(self, message: Any) -> bool:
        """Send to the coordinator if connected; returns False when the link is down."""
        connection = self._connection
        if connection is None or self.state != AgentState.CONNECTED:
            return False
        try:
            await connection.send(encode_text(message))
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
        while not self._stopping.is_set():
            self._set_state(AgentState.CONNECTING)
            pause: float | None = None
            try:
                pause = await self._session()
            except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError, ProtocolError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.info("pool link to %s down: %s", self.config.url, self.last_error)
            finally:
                self._connection = None
                self.welcome = None
            if self._stopping.is_set():
                break
            self._set_state(AgentState.DISCONNECTED)
            delay = pause if pause is not None else self._backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        self._set_state(AgentState.STOPPED)

    async def stop(self) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            await connection.close(1001, "member leaving")

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_state_change is not None:
                self.on_state_change(state)

    def _hello(self) -> Hello:
        return Hello(
            protocol=PROTOCOL_VERSION,
            role="member",
            device_id=self.config.device_id,
            device_name=self.config.device_name,
            platform=platform_name(),
            software=f"poolnet {__version__}",
            accept_tasks=self.config.accept_tasks,
        )

    async def _session(self) -> float | None:
        """One connection's life. Returns a pause the server asked for, or None for backoff."""
        async with connect(
            self.config.url,
            ssl=self.config.ssl_context,
            proxy=None,
            max_size=MAX_FRAME,
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
        ) as connection:
            self._connection = connection
            hello = self._hello()
            await connection.send(encode_text(hello))
            if self.authenticate is not None:
                await self.authenticate(connection, hello)
            welcome = await self._await_welcome(connection)
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

    async def _await_welcome(self, connection: ClientConnection) -> Welcome:
        async with asyncio.timeout(15):
            while True:
                message = decode_server(await connection.recv())
                if isinstance(message, Welcome):
                    return message
                if isinstance(message, Error):
                    raise ProtocolError(message.code, message.message)

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
