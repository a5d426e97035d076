"""The pool's one port: the WebSocket endpoint ``/ws`` and the REST paths beside it."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ipaddress
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeGuard

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from poolnet_desktop.core.auth import bearer_token_matches
from poolnet_desktop.core.dialects import is_metered
from poolnet_desktop.core.protocol import MAX_FRAME, ClientMessage, Error, decode_client, encode
from poolnet_desktop.core.wire import ErrorCode, ProtocolError, message_type
from poolnet_desktop.runtime.host.accept import AcceptGate
from poolnet_desktop.runtime.host.coordinator import Coordinator
from poolnet_desktop.runtime.host.rest import RestApi, error_response
from poolnet_desktop.runtime.host.session import Dialect, Session
from poolnet_desktop.runtime.net.connection import Message, PoolConnection

log = logging.getLogger(__name__)

WS_PATH = "/ws"
# asyncio's TLS layer gives every connection a zero-filled read buffer of ``max_size`` bytes:
# 256 KiB on Python 3.11, 1.25 GB of resident memory for 5,000 members. One TLS record is at
# most 16 KiB, so a buffer of that size reads every record whole (large frames take a few
# more reads). Set for the process; members and links gain from it too.
TLS_READ_BUFFER = 16 * 1024
asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


class ListenError(OSError):
    """The server's port cannot be opened (taken by another program, or not this machine's)."""


class PoolServer:
    """Serves a ``Coordinator`` on ``host:port`` (port 0 picks a free one; see ``port``).

    A connection has ``handshake_timeout`` seconds from accept for its TLS handshake and HTTP
    request, and as long again to introduce itself (``hello`` or ``register``), or it is
    dropped; at most ``max_waiting_per_address`` connections from one address may be at any
    of those steps at once (counted at accept, before TLS). Frames over ``MAX_FRAME`` close a
    connection with 1009, and one that sends faster than its dialect's message budget is
    told so and closed with 1008. The server is the ``ConnectionOwner`` of every
    ``PoolConnection`` it accepts.
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
        rest_token: str | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.host = host
        self.port = port
        self.rest = RestApi(coordinator, time.time)
        self._ssl = ssl_context
        self.handshake_timeout = handshake_timeout
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[PoolConnection] = set()
        self._sessions: dict[PoolConnection, Session] = {}
        # Sessions that have not said hello or registered yet, with the timer that ends them.
        self._introductions: dict[Session, asyncio.TimerHandle] = {}
        # Sessions' turns and the closings started here, kept until they end.
        self._tasks: set[asyncio.Future[None]] = set()
        self._dialects = dialects
        # Connections per address that have not introduced themselves yet, counted from accept:
        # a stranger opening sockets and never speaking is capped here, the timeouts end each one.
        self._waiting: Counter[str] = Counter()
        self.max_waiting_per_address = 64
        self._rest_for_loopback_only = rest_for_loopback_only
        # When set, REST requests must carry it as a bearer token (``rest.REST_TOKEN_FILE``).
        self._rest_token = rest_token
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
        """Listen; raises ``ListenError`` (an OSError saying where and why) when it cannot."""
        loop = asyncio.get_running_loop()
        # Plain TCP: ``AcceptGate`` counts the address first, then wraps the socket in TLS.
        try:
            self._server = await loop.create_server(
                self._new_connection,
                self.host,
                self.port,
                # A restarted host sees its whole pool reconnect at once; asyncio's default of
                # 100 pending connections made the kernel drop SYNs and members time out retrying.
                backlog=1024,
            )
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own text repeats the address
            raise ListenError(f"cannot listen on {self.host or '*'}:{self.port}: {why}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("pool %r serving on %s", self.coordinator.config.pool_name, self.url)

    def _new_connection(self) -> AcceptGate:
        # No permessage-deflate: its zlib state costs tens of KiB per connection and a
        # broadcast compresses the same frame again for every peer; members' messages are
        # small and pool links are LAN. No keepalive pings either: members heartbeat every
        # 5 s and the coordinator's sweep drops the silent ones; it pings observers itself
        # (``Session.check_alive``).
        connection = PoolConnection(
            self, max_size=MAX_FRAME, max_queue=32, open_timeout=self.handshake_timeout, close_timeout=5.0
        )
        return AcceptGate(connection, self._ssl, self.handshake_timeout, self._admit, self._stop_waiting)

    async def stop(self) -> None:
        """Stop accepting and close this listener's connections (the coordinator says goodbye first)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        await asyncio.gather(*(c.close(1001, "server shutting down") for c in list(self._connections)))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    # ---- a connection's life (``ConnectionOwner``) --------------------------------------------

    def accepted(self, connection: PoolConnection) -> None:
        self._connections.add(connection)

    def answer(self, connection: PoolConnection, request: Request) -> Response | None:
        """None accepts a WebSocket on ``/ws``; any other path is the REST API's."""
        if self._server is None:
            return error_response(503, "the pool is stopping")
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            if self.coordinator.session_count >= self._max_connections:
                return error_response(503, "the pool is full")
            return None
        if "upgrade" in request.headers.get("Connection", "").lower():
            return error_response(404, f"the WebSocket endpoint is {WS_PATH}")
        if self._rest_for_loopback_only and not _is_loopback(connection):
            return error_response(403, "this pool's REST API answers this machine only; members use the WebSocket")
        token = self._rest_token
        if token is not None and not bearer_token_matches(request.headers.get("Authorization"), token):
            return error_response(401, "this pool's REST API needs the owner's token (rest.token in its data folder)")
        response = self.rest.answer(path)
        return response if response is not None else error_response(404, f"no such path: {path}")

    def opened(self, connection: PoolConnection) -> None:
        address = _address(connection)
        session = Session(connection, address, self._dialects)
        self._sessions[connection] = session
        self.coordinator.connected(session)
        self._introductions[session] = asyncio.get_running_loop().call_later(
            self.handshake_timeout, self._introduction_due, session
        )

    def message_ready(self, connection: PoolConnection) -> None:
        """Handle what the connection has received. Members' reports are handled right here;
        anything that may wait (a hello, a file chunk, a task) starts the session's turn, a
        task that handles its messages in order until none is left."""
        session = self._sessions.get(connection)
        if session is None or session.busy:
            return  # the running turn takes it
        while (frame := connection.recv_nowait()) is not None:
            message = _decode_introduced(session, frame)
            if not self._within_rate(session, frame, message):
                return
            if message is not None and self._handle_now(session, message):
                continue
            session.busy = True
            self._spawn(self._take_turn(session, frame, message))
            return

    def closed(self, connection: PoolConnection) -> None:
        self._connections.discard(connection)
        self._stop_waiting(connection)
        session = self._sessions.get(connection)
        if session is not None and not session.busy:
            self._end(session)  # else the turn ends it when it finishes

    # ---- handling messages ---------------------------------------------------------------------

    def _handle_now(self, session: Session, message: ClientMessage) -> bool:
        try:
            return self.coordinator.handle_now(session, message)
        except Exception:
            log.exception("handling %s from %r failed", type(message).__name__, session)
            self._spawn(session.close(1011, "internal error"))
            return True

    async def _take_turn(self, session: Session, frame: Message, message: ClientMessage | None) -> None:
        try:
            await self._handle_frame(session, frame, message)
            self._check_introduced(session)
            while (queued := session.connection.recv_nowait()) is not None:
                message = _decode_introduced(session, queued)
                if not self._within_rate(session, queued, message):
                    break
                await self._handle_frame(session, queued, message)
                self._check_introduced(session)
        except ConnectionClosed:
            pass  # the peer left mid-answer (a file transfer, say): its end is handled below
        except Exception:
            log.exception("handling a message from %r failed", session)
            await session.close(1011, "internal error")
        finally:
            session.busy = False
            if session.connection.closed:
                self._end(session)

    async def _handle_frame(self, session: Session, frame: Message, message: ClientMessage | None = None) -> None:
        if message is not None:
            await self.coordinator.dispatch(session, message)
            return
        if _is_file_chunk(frame):
            if self.binary_handler is None or session.dialect != "poolnet":
                self.coordinator.refuse(
                    session, ProtocolError(ErrorCode.BAD_MESSAGE, "binary frames carry file transfers only")
                )
                return
            await self.binary_handler(session, frame)
            return
        try:
            message = decode_client(frame)
        except ProtocolError as exc:
            self.coordinator.refuse(session, exc)
            return
        await self.coordinator.dispatch(session, message)

    # ---- introductions -------------------------------------------------------------------------

    def _within_rate(self, session: Session, frame: Message, message: ClientMessage | None) -> bool:
        """Count one message against the session's budget; past it, the peer is told and
        closed (1008), and nothing more it sent is handled. What a PoolNet member streams
        (file chunks, shard output) is bounded elsewhere (``core.dialects.is_metered``)."""
        if _is_file_chunk(frame):
            tag = None
        else:
            tag = message_type(message) if message is not None else ""
        if not is_metered(session.dialect, tag):
            return True
        if session.within_message_rate(time.monotonic()):
            return True
        connection = session.connection
        if connection.protocol.state is State.OPEN:
            log.warning("%r sends too many messages: closing it", session)
            connection.discard_incoming()
            session.post(encode(Error(code=ErrorCode.RATE_LIMITED, message="too many messages: closing")))
            self._spawn(session.close(1008, "too many messages"))
        return False

    def _check_introduced(self, session: Session) -> None:
        if session.introduced and session in self._introductions:
            self._introductions.pop(session).cancel()
            self._stop_waiting(session.connection)

    def _introduction_due(self, session: Session) -> None:
        """A connection must say hello or register in time; one still being answered (its hello
        waits for a person's approval, say) is looked at again a second later."""
        if session.introduced or session.connection.closed:
            return
        if session.busy:
            self._introductions[session] = asyncio.get_running_loop().call_later(1.0, self._introduction_due, session)
            return
        self._spawn(session.close(1008, "no hello or register in time"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task kept until it ends (``stop`` waits for them)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end(self, session: Session) -> None:
        del self._sessions[session.connection]
        timer = self._introductions.pop(session, None)
        if timer is not None:
            timer.cancel()
        self._stop_waiting(session.connection)
        self.coordinator.disconnected(session)

    def _admit(self, connection: PoolConnection, address: str) -> bool:
        """May ``address`` open one more connection that has not introduced itself? Counts it."""
        if self._server is None:
            return False
        if self._waiting[address] >= self.max_waiting_per_address:
            log.warning("dropped a connection from %s: too many not introduced yet", address)
            return False
        self._waiting[address] += 1
        connection.waiting, connection.waiting_address = True, address
        return True

    def _stop_waiting(self, connection: PoolConnection) -> None:
        """``connection`` is no longer waiting to introduce itself (it did, or it is gone)."""
        if not connection.waiting:
            return
        connection.waiting = False
        address = connection.waiting_address
        self._waiting[address] -= 1
        if not self._waiting[address]:
            del self._waiting[address]


def _decode_introduced(session: Session, frame: Message) -> ClientMessage | None:
    """An introduced peer's text frame, decoded (a report is handled at once, anything else
    goes to the turn as it is); None where the turn must look at the frame itself: a binary
    frame, a peer not yet introduced, bad JSON (the refusal is sent from there)."""
    if not session.introduced or not isinstance(frame, str):
        return None
    try:
        return decode_client(frame)
    except ProtocolError:
        return None


def _is_file_chunk(frame: Message) -> TypeGuard[bytes]:
    """A binary frame that is not JSON: a file transfer's chunk."""
    return isinstance(frame, bytes) and not frame.lstrip().startswith(b"{")


def _address(connection: PoolConnection) -> str:
    return connection.remote_address[0] if connection.remote_address else "?"


def _is_loopback(connection: PoolConnection) -> bool:
    address = _address(connection)
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
