"""A one-off client connection to a pool, for the command line and the window's observer.

``open_link`` connects, says ``hello`` in the given role, authenticates as this instance, and
returns once the pool has answered ``welcome``. Members use ``Agent`` instead, which also
reconnects; this is for short conversations (submit a task, watch its logs, list devices).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from poolnet_desktop import __version__
from poolnet_desktop.core.protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    Error,
    Hello,
    ProtocolError,
    ServerMessage,
    Welcome,
    decode_server,
    encode,
)
from poolnet_desktop.core.pool_url import normalise_pool_url
from poolnet_desktop.core.wire import Role
from poolnet_desktop.runtime.net.discovery import platform_name
from poolnet_desktop.runtime.security.auth import join_pool
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.pool_addresses import PoolAddresses
from poolnet_desktop.runtime.security.tls import client_ssl_for_url
from poolnet_desktop.runtime.security.trust import PinnedHosts


class PoolLink:
    """An open, welcomed connection. ``recv`` returns a decoded message or raw binary frame."""

    def __init__(self, connection: ClientConnection, welcome: Welcome) -> None:
        self.connection = connection
        self.welcome = welcome

    async def send(self, message: Any) -> None:
        await self.connection.send(encode(message), text=True)

    async def send_bytes(self, data: bytes) -> None:
        await self.connection.send(data)

    async def recv(self) -> ServerMessage | bytes:
        frame = await self.connection.recv()
        return frame if isinstance(frame, bytes) else decode_server(frame)

    async def expect(self, *wanted: type) -> Any:
        """The next message of one of the ``wanted`` types (a binary frame if ``bytes``),
        skipping others; an ``error`` from the pool raises ``ProtocolError``."""
        while True:
            message = await self.recv()
            if isinstance(message, Error):
                raise ProtocolError(message.code, message.message)
            if isinstance(message, wanted):
                return message

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> PoolLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_link(
    url: str,
    data_dir: Path,
    role: Role = "observer",
    name: str | None = None,
    code: str | None = None,
    *,
    identity: Identity | None = None,
    pinned: PinnedHosts | None = None,
    on_pending: Callable[[str], None] | None = None,
) -> PoolLink:
    """Connect to the pool at ``url`` as this instance (its identity lives in ``data_dir``).

    A caller that already holds this instance's ``identity`` and ``pinned`` hosts (the
    window's member) passes them: nothing is read from disk on the loop at each reconnect, and
    a host pinned here is pinned in the member's copy too, not in a second one.

    The pool that answers at ``url``'s address is remembered (``pool-addresses.json``): a
    host of another pool there later is refused unless ``code`` is given, which pairs anew.

    ``on_pending`` is told when the host's owner is asked to approve this device (see
    ``join_pool``). Raises ``AuthRefused`` when the pool will not let this instance in, ``ProtocolError`` when
    it refuses otherwise, ``PoolAddressError`` for an address no pool link could use (a plain
    ``ws://`` one among them), ``OSError`` when unreachable.
    """
    url = normalise_pool_url(url)
    if identity is None:
        identity = Identity.load_or_create(data_dir)
    connection = await connect(
        url, ssl=client_ssl_for_url(url), proxy=None, max_size=MAX_FRAME, open_timeout=10, close_timeout=5
    )
    try:
        hello = Hello(
            protocol=PROTOCOL_VERSION,
            role=role,
            device_id=identity.device_id,
            device_name=name or socket.gethostname(),
            platform=platform_name(),
            software=f"poolnet {__version__}",
        )
        if pinned is None:
            pinned = PinnedHosts.load(data_dir / "pinned-hosts.json")
        addresses = await asyncio.to_thread(PoolAddresses.load, data_dir / "pool-addresses.json")
        expected_pool = None if code else addresses.get(url)
        host, welcome = await join_pool(connection, identity, hello, pinned, expected_pool, code,
                                        on_pending=on_pending)
        await asyncio.to_thread(addresses.remember, url, host.pool_id)
        return PoolLink(connection, welcome)
    except BaseException:
        await connection.close()
        raise
