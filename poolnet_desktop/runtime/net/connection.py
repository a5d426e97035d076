"""One accepted WebSocket connection: websockets' Sans-I/O protocol driven by an asyncio transport.

websockets' own asyncio server hands every message to a task through a queue and a future. At
5,000 members, 3,500 small messages a second, that hand-over and the task switches cost the
coordinator as much as parsing the frames. Here the frames are parsed as the bytes arrive and
the finished message goes straight to the owner (``ConnectionOwner.message_ready``), which
handles the common ones on the spot and gives a task only those that must wait for something.
The protocol itself (handshake, framing, limits, ping, close) stays websockets'.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Iterable
from typing import Protocol, cast

from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

log = logging.getLogger(__name__)

Message = str | bytes

# Unsent output above this makes ``send`` wait for the peer to read (file chunks). Queued
# messages (``post``) never wait; the session closes a peer whose backlog outgrows
# ``MAX_PENDING_OUTPUT`` (``fail``).
WRITE_HIGH_WATER = 64 * 1024


class ConnectionOwner(Protocol):
    """What the server does at each step of a connection's life."""

    def accepted(self, connection: PoolConnection) -> None:
        """A peer connected (after TLS); ``closed`` follows, always."""

    def answer(self, connection: PoolConnection, request: Request) -> Response | None:
        """The response to an HTTP request: None accepts it as a WebSocket."""

    def opened(self, connection: PoolConnection) -> None:
        """The WebSocket handshake succeeded."""

    def message_ready(self, connection: PoolConnection) -> None:
        """A message is waiting: take it (and any behind it) with ``recv_nowait``."""

    def closed(self, connection: PoolConnection) -> None:
        """The connection is gone (called once, for accepted and refused connections alike)."""


class PoolConnection(asyncio.Protocol):
    """A server-side WebSocket: ``recv``/``recv_nowait`` in, ``send``/``post`` out, ``ping``, ``close``.

    Incoming messages queue up to ``max_queue`` before reading pauses, so a peer cannot make the
    host buffer without bound. Text frames arrive as ``str``, binary ones as ``bytes``.
    """

    def __init__(
        self,
        owner: ConnectionOwner,
        *,
        max_size: int,
        max_queue: int = 32,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        self._owner = owner
        self.protocol = ServerProtocol(max_size=max_size)
        self.transport: asyncio.Transport | None = None
        self.remote_address: tuple[str, int] | None = None
        self._loop = asyncio.get_running_loop()
        self._max_queue = max_queue
        self._open_timeout = open_timeout
        # When the HTTP request is due on the loop's clock; set by whoever accepted the socket
        # (``AcceptGate``: the accept time plus the timeout), else ``open_timeout`` from now.
        self.open_deadline: float | None = None
        self._open_timer: asyncio.TimerHandle | None = None
        # True while the server counts this connection as not yet introduced (``PoolServer``).
        self.waiting = False
        self.waiting_address = ""
        self._close_timeout = close_timeout
        self._messages: deque[Message] = deque()
        self._reading_paused = False
        self._failed = False
        self._discarding = False
        self._fragments: list[BytesLike] = []
        self._fragmented_text = False
        self._recv_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._writing_paused = False
        self._pings: dict[bytes, asyncio.Future[None]] = {}
        self._close_timer: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()

    # ---- reading -------------------------------------------------------------------------------

    def recv_nowait(self) -> Message | None:
        """The next queued message, or None."""
        if not self._messages:
            return None
        message = self._messages.popleft()
        if self._reading_paused and len(self._messages) <= self._max_queue // 4 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return message

    async def recv(self) -> Message:
        """The next message; ``ConnectionClosed`` once none will come. A message stays queued
        until taken, so one that arrives as a waiting ``recv`` is cancelled is not lost."""
        while not self._messages:
            if self._lost.done():
                raise self._closed_error()
            if self._recv_waiter is not None:
                raise ConcurrencyError("two coroutines called recv on one connection")
            self._recv_waiter = self._loop.create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        message = self.recv_nowait()
        assert message is not None
        return message

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(frame.data, opcode is Opcode.TEXT)
            else:
                self._fragments, self._fragmented_text = [frame.data], opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(frame.data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._deliver(data, self._fragmented_text)
        elif opcode is Opcode.PONG:
            waiter = self._pings.pop(bytes(frame.data), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        # The protocol answers pings and close frames itself.

    def discard_incoming(self) -> None:
        """Drop what the peer has sent and will send (a peer being closed for a flood). Reading
        goes on, so its close frame is read and the backlog left unread does not turn the
        closing handshake into a reset that loses the error sent before it."""
        self._discarding = True
        self._messages.clear()
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _deliver(self, data: BytesLike, text: bool) -> None:
        if self._discarding:
            return
        message: Message
        if text:
            try:
                message = bytes(data).decode()
            except UnicodeDecodeError:
                self._failed = True  # nothing after this frame is taken
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
                self._flush()
                return
        else:
            message = bytes(data)
        self._messages.append(message)
        if len(self._messages) > self._max_queue and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        waiter = self._recv_waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)  # the turn waiting in recv takes it, and those behind it
        else:
            self._owner.message_ready(self)

    # ---- writing -------------------------------------------------------------------------------

    def post(self, data: Message, text: bool | None = None) -> None:
        """Queue one message without waiting; nothing happens on a connection that is not open.
        ``bytes`` go as a binary frame unless ``text`` (already UTF-8 JSON, say)."""
        self.post_many((data,), text)

    def post_many(self, messages: Iterable[Message], text: bool | None = None) -> None:
        """Queue several messages in one write (one system call, one TLS record where they fit)."""
        if self.protocol.state is not State.OPEN:
            return
        for data in messages:
            if isinstance(data, str):
                self.protocol.send_text(data.encode())
            elif text:
                self.protocol.send_text(data)
            else:
                self.protocol.send_binary(data)
        self._flush()

    async def send(self, data: Message, text: bool | None = None) -> None:
        """Send one message, then wait while the peer is behind on reading."""
        if self.protocol.state is not State.OPEN:
            raise self._closed_error()
        self.post(data, text)
        if self._writing_paused and not self._lost.done():
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            try:
                await waiter
            finally:
                self._drain_waiters.remove(waiter)

    def pending_output(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    async def ping(self) -> None:
        """Ping the peer and wait for its pong."""
        if self.protocol.state is not State.OPEN:
            raise self._closed_error()
        data = os.urandom(4)
        waiter = self._loop.create_future()
        self._pings[data] = waiter
        try:
            self.protocol.send_ping(data)
            self._flush()
            await waiter
        finally:
            self._pings.pop(data, None)

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and wait until the connection is gone (at most the close
        timeout: a peer that does not answer is cut off)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        elif self.transport is not None and self.protocol.state is State.CONNECTING:
            self.transport.close()
        self._expect_close()
        await self.wait_closed()

    def fail(self, code: int, reason: str) -> None:
        """End the connection from this side without waiting: a close frame behind what is
        already queued, and the close timeout for the peer to go."""
        if self.protocol.state is State.OPEN:
            log.info("closing %r: %s", self, reason)
            self.protocol.fail(code, reason)
            self._flush()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)

    @property
    def closed(self) -> bool:
        return self._lost.done()

    def abort(self) -> None:
        """Drop the connection at once, with no closing handshake (a peer judged gone)."""
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        output = self.protocol.data_to_send()
        if not output:
            return
        transport = self.transport
        assert transport is not None
        end = not output[-1]  # b"": the protocol is done sending
        transport.writelines(output[:-1] if end else output)
        if end:
            if transport.can_write_eof():
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):  # uvloop raises RuntimeError on a closing socket
                    transport.close()
            else:  # TLS has no half-close: close once the output is out
                transport.close()
        # A close frame sent or received, or a failure: the peer gets the close timeout to go.
        if self.protocol.close_expected():
            self._expect_close()

    def _expect_close(self) -> None:
        """Cut the connection off if it is not gone within the close timeout: a peer that stops
        reading would otherwise keep it open for as long as its unread output waits."""
        if self._close_timer is None and self.transport is not None and not self._lost.done():
            self._close_timer = self._loop.call_later(self._close_timeout, self.transport.abort)

    def _closed_error(self) -> ConnectionClosed:
        protocol = self.protocol
        return ConnectionClosed(protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent)

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not its subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.remote_address = transport.get_extra_info("peername")
        # A peer that never sends its HTTP request is cut off.
        deadline = self.open_deadline if self.open_deadline is not None else self._loop.time() + self._open_timeout
        self._open_timer = self._loop.call_at(deadline, transport.abort)
        self._owner.accepted(self)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        self._flush()  # the protocol's own answers first: pongs, close frames
        for event in events:
            if self._failed:
                break
            if isinstance(event, Request):
                self._answer(event)
            elif isinstance(event, Frame):  # a server is never sent a Response
                self._on_frame(event)

    def _answer(self, request: Request) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
        try:
            response = self._owner.answer(self, request)
        except Exception:
            log.exception("answering %s %s failed", request.path, self.remote_address)
            response = self.protocol.reject(500, "the pool could not answer this request\n")
        self.protocol.send_response(response if response is not None else self.protocol.accept(request))
        self._flush()
        if self.protocol.state is State.OPEN:
            self._owner.opened(self)

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._flush()
        self._expect_close()  # asyncio closes the transport, once the output has gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent; the protocol is CLOSED from here on
        for timer in (self._open_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._lost.set_result(None)
        error = self._closed_error()
        if self._recv_waiter is not None and not self._recv_waiter.done():
            self._recv_waiter.set_exception(error)
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._release_writers()
        self._owner.closed(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._release_writers()

    def _release_writers(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<PoolConnection {self.remote_address} {self.protocol.state.name}>"
