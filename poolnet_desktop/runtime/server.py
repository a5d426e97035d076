"""The pool's one port: the WebSocket endpoint ``/ws`` and the REST paths beside it."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ipaddress
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from poolnet_desktop.core.protocol import decode_client
from poolnet_desktop.core.wire import MAX_CONTROL_MESSAGE, ErrorCode, ProtocolError
from poolnet_desktop.runtime.coordinator import Coordinator
from poolnet_desktop.runtime.rest import RestApi, error_response
from poolnet_desktop.runtime.session import Dialect, Session

log = logging.getLogger(__name__)

WS_PATH = "/ws"
# Room for a file chunk's header on top of the largest control message.
MAX_FRAME = MAX_CONTROL_MESSAGE + 64 * 1024
# asyncio's TLS layer gives every connection a zero-filled read buffer of ``max_size`` bytes:
# 256 KiB on Python 3.11, 1.25 GB of resident memory for 5,000 members. One TLS record is at
# most 16 KiB, so a buffer of that size reads every record whole (large frames take a few
# more reads). Set for the process; members and links gain from it too.
TLS_READ_BUFFER = 16 * 1024
asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


class PoolServer:
    """Serves a ``Coordinator`` on ``host:port`` (port 0 picks a free one; see ``port``).

    A connection must introduce itself (``hello`` or ``register``) within
    ``handshake_timeout`` seconds or it is dropped; frames over ``MAX_FRAME`` close it with 1009.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        host: str = "0.0.0.0",
        port: int = 3000,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        max_connections: int = 20_000,
        dialects: frozenset[Dialect] = frozenset({"seed", "poolnet"}),
        rest_for_loopback_only: bool = False,
    ) -> None:
        self.coordinator = coordinator
        self.host = host
        self.port = port
        self.rest = RestApi(coordinator, time.time)
        self._ssl = ssl_context
        self.handshake_timeout = handshake_timeout
        self._max_connections = max_connections
        self._server: Server | None = None
        self._dialects = dialects
        # Connections per address that have not introduced themselves yet: a stranger opening
        # sockets and never speaking is capped here, the handshake timeout ends each one.
        self._waiting: Counter[str] = Counter()
        self.max_waiting_per_address = 64
        self._rest_for_loopback_only = rest_for_loopback_only
        self.binary_handler: Callable[[Session, bytes], Awaitable[None]] | None = None

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{WS_PATH}"

    async def start(self) -> None:
        self._server = await serve(
            self._serve_connection,
            self.host,
            self.port,
            ssl=self._ssl,
            process_request=self._process_request,
            max_size=MAX_FRAME,
            max_queue=32,
            # No permessage-deflate: its zlib state costs tens of KiB per connection and a
            # broadcast compresses the same frame again for every peer; members' messages are
            # small and pool links are LAN.
            compression=None,
            # A restarted host sees its whole pool reconnect at once; asyncio's default of 100
            # pending connections made the kernel drop SYNs and members time out retrying.
            backlog=1024,
            # No keepalive task per connection: members heartbeat every 5 s and the coordinator's
            # sweep drops the silent ones; it pings observers itself (``Session.check_alive``).
            # At 5,000 members the pings were 500 more frames a second each way.
            ping_interval=None,
            close_timeout=5,
            server_header=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("pool %r serving on %s", self.coordinator.config.pool_name, self.url)

    async def stop(self) -> None:
        """Stop accepting and close this listener's connections (the coordinator says goodbye first)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            if self.coordinator.session_count >= self._max_connections:
                return error_response(503, "the pool is full")
            address = _address(connection)
            if self._waiting[address] >= self.max_waiting_per_address:
                log.warning("refused a connection from %s: too many waiting to authenticate", address)
                return error_response(429, f"too many connections from {address} waiting to authenticate")
            return None
        if "upgrade" in request.headers.get("Connection", "").lower():
            return error_response(404, f"the WebSocket endpoint is {WS_PATH}")
        if self._rest_for_loopback_only and not _is_loopback(connection):
            return error_response(403, "this pool's REST API answers this machine only; members use the WebSocket")
        response = self.rest.answer(path)
        return response if response is not None else error_response(404, f"no such path: {path}")

    async def _serve_connection(self, connection: ServerConnection) -> None:
        address = _address(connection)
        session = Session(connection, address, self._dialects)
        self.coordinator.connected(session)
        deadline = asyncio.get_running_loop().time() + self.handshake_timeout
        self._waiting[address] += 1
        waiting = True
        try:
            while True:
                if session.introduced:
                    if waiting:
                        self._stop_waiting(address)
                        waiting = False
                    frame = await connection.recv()
                else:
                    async with asyncio.timeout_at(deadline):
                        frame = await connection.recv()
                await self._handle_frame(session, frame)
        except TimeoutError:
            await session.close(1008, "no hello or register in time")
        except ConnectionClosed:
            pass
        finally:
            if waiting:
                self._stop_waiting(address)
            self.coordinator.disconnected(session)

    def _stop_waiting(self, address: str) -> None:
        """One connection from ``address`` is no longer waiting to introduce itself."""
        self._waiting[address] -= 1
        if not self._waiting[address]:
            del self._waiting[address]

    async def _handle_frame(self, session: Session, frame: str | bytes) -> None:
        if isinstance(frame, bytes) and not frame.lstrip().startswith(b"{"):
            if self.binary_handler is None or not session.introduced:
                await self.coordinator.refuse(
                    session, ProtocolError(ErrorCode.BAD_MESSAGE, "binary frames carry file transfers only")
                )
                return
            await self.binary_handler(session, frame)
            return
        try:
            message = decode_client(frame)
        except ProtocolError as exc:
            await self.coordinator.refuse(session, exc)
            return
        await self.coordinator.dispatch(session, message)


def _address(connection: ServerConnection) -> str:
    return connection.remote_address[0] if connection.remote_address else "?"


def _is_loopback(connection: ServerConnection) -> bool:
    address = _address(connection)
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
