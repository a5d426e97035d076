"""A one-off client connection to a pool, for the command line and the window's observer.

``open_link`` connects, says ``hello`` in the given role, authenticates as this instance, and
returns once the pool has answered ``welcome``. Members use ``Agent`` instead, which also
reconnects; this is for short conversations (submit a task, watch its logs, list devices).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from poolnet_desktop import __version__
from poolnet_desktop.core.protocol import (
    PROTOCOL_VERSION,
    Error,
    Hello,
    ProtocolError,
    ServerMessage,
    Welcome,
    decode_server,
    encode_text,
)
from poolnet_desktop.core.wire import Role
from poolnet_desktop.runtime.agent import platform_name
from poolnet_desktop.runtime.node import local_device_id
from poolnet_desktop.runtime.server import MAX_FRAME


class PoolLink:
    """An open, welcomed connection. ``recv`` returns a decoded message or raw binary frame."""

    def __init__(self, connection: ClientConnection, welcome: Welcome) -> None:
        self.connection = connection
        self.welcome = welcome

    async def send(self, message: Any) -> None:
        await self.connection.send(encode_text(message))

    async def send_bytes(self, data: bytes) -> None:
        await self.connection.send(data)

    async def recv(self) -> ServerMessage | bytes:
        frame = await self.connection.recv()
        return frame if isinstance(frame, bytes) else decode_server(frame)

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> PoolLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_link(url: str, data_dir: Path, role: Role = "observer", name: str | None = None) -> PoolLink:
    """Connect to the pool at ``url`` as this instance (its identity lives in ``data_dir``).

    Raises ``ProtocolError`` when the pool refuses, ``OSError`` when it cannot be reached.
    """
    connection = await connect(url, proxy=None, max_size=MAX_FRAME, open_timeout=10, close_timeout=5)
    try:
        hello = Hello(
            protocol=PROTOCOL_VERSION,
            role=role,
            device_id=local_device_id(data_dir),
            device_name=name or socket.gethostname(),
            platform=platform_name(),
            software=f"poolnet {__version__}",
        )
        await connection.send(encode_text(hello))
        async with asyncio.timeout(15):
            while True:
                message = decode_server(await connection.recv())
                if isinstance(message, Welcome):
                    return PoolLink(connection, message)
                if isinstance(message, Error):
                    raise ProtocolError(message.code, message.message)
    except BaseException:
        await connection.close()
        raise
