"""The first moment of a connection: count its address before any TLS, then hand it on.

asyncio's ``create_server(ssl=...)`` only shows a connection to the application once its TLS
handshake is over, so a stranger could hold thousands of sockets that never start TLS, each
for the loop's 60 s default, and nothing would count them. Here the server listens on plain
TCP: every accepted socket is shown to the gate's ``admit`` with its address first (refused ones
are dropped at once), and TLS is started on it with a deadline measured from that moment.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from poolnet_desktop.runtime.connection import PoolConnection

log = logging.getLogger(__name__)


class AcceptGate(asyncio.Protocol):
    """One accepted socket until its ``PoolConnection`` takes it over.

    ``admit(connection, address)`` says whether the address may open another connection now
    (and counts it); ``release(connection)`` is called when one refused or failed before it
    was handed on. The connection's HTTP request is due by the same deadline as its TLS.
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
        self._loop = asyncio.get_running_loop()
        # Bytes that arrive between the end of the TLS handshake and the hand-over.
        self._early: list[bytes] = []
        self._eof = False
        self._lost = False
        self._starting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = peer[0] if peer else "?"
        if not self._admit(self._connection, address):
            transport.abort()
            return
        self._connection.open_deadline = self._loop.time() + self._timeout
        if self._ssl is None:
            self._hand_over(transport)  # type: ignore[arg-type]
            return
        transport.pause_reading()  # start_tls takes the bytes from here on
        self._starting = self._loop.create_task(self._start_tls(transport))  # type: ignore[arg-type]

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        try:
            tls = await self._loop.start_tls(
                transport, self, self._ssl, server_side=True, ssl_handshake_timeout=self._timeout
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("no TLS with %s: %r", transport.get_extra_info("peername"), exc)
            transport.abort()
            self._release(self._connection)
            return
        if tls is None or self._lost:
            self._release(self._connection)
            return
        self._hand_over(tls)

    def _hand_over(self, transport: asyncio.Transport) -> None:
        transport.set_protocol(self._connection)
        self._connection.connection_made(transport)
        for data in self._early:
            self._connection.data_received(data)
        self._early.clear()
        if self._eof:
            self._connection.eof_received()

    # Only between the TLS handshake and the hand-over, or when the peer goes mid-handshake.
    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
