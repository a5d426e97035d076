"""The first moment of a connection: count its address before any TLS, then hand it on.

asyncio's ``create_server(ssl=...)`` only shows a connection to the application once its TLS
handshake is over, so a stranger could hold thousands of sockets that never start TLS, each
for the loop's 60 s default, and nothing would count them. Here the server listens on plain
TCP: every accepted socket is shown to the gate's ``admit`` with its address first (refused ones
are dropped at once), then wrapped in the running loop's own TLS protocol (what
``create_server(ssl=...)`` does itself) with a handshake deadline measured from that moment.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from collections.abc import Callable
from typing import Any

from poolnet_desktop.runtime.net.connection import PoolConnection

try:
    import uvloop
    import uvloop.loop
except ImportError:  # optional: the CLI runs on it where it is installed
    uvloop = None  # type: ignore[assignment]


def _tls_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The TLS protocol the loop itself wraps server sockets in (uvloop has its own)."""
    if uvloop is not None and isinstance(loop, uvloop.Loop):
        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]  # uvloop's stubs omit it
    return asyncio.sslproto.SSLProtocol


class AcceptGate(asyncio.Protocol):
    """One accepted socket until its ``PoolConnection`` (or the TLS layer under it) takes over.

    ``admit(connection, address)`` says whether the address may open another connection now
    (and counts it); ``release(connection)`` is called for one whose TLS handshake failed or
    timed out (a connection that got through is released by the server as it closes). The
    connection's HTTP request is due by the same deadline as its TLS handshake.
    """

    def __init__(
        self,
        connection: PoolConnection,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
        admit: Callable[[PoolConnection, str], bool],
        release: Callable[[PoolConnection], None],
    ) -> None:
        self._connection = connection
        self._ssl = ssl_context
        self._timeout = timeout
        self._admit = admit
        self._release = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = peer[0] if peer else "?"
        if not self._admit(self._connection, address):
            transport.abort()  # type: ignore[attr-defined]
            return
        loop = asyncio.get_running_loop()
        self._connection.open_deadline = loop.time() + self._timeout
        if self._ssl is None:
            transport.set_protocol(self._connection)
            self._connection.connection_made(transport)
            return
        handshake = loop.create_future()
        handshake.add_done_callback(self._handshake_done)
        tls = _tls_protocol_class(loop)(
            loop, self._connection, self._ssl, handshake, server_side=True, ssl_handshake_timeout=self._timeout
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def _handshake_done(self, handshake: asyncio.Future[None]) -> None:
        if handshake.cancelled() or handshake.exception() is not None:
            self._release(self._connection)
