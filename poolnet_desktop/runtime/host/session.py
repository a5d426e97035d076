"""One WebSocket connection to the coordinator and what is known about its peer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec
from websockets.exceptions import ConnectionClosed

from poolnet_desktop.core.dialects import Dialect, message_budget
from poolnet_desktop.core.permissions import Action, Caller, may
from poolnet_desktop.core.protocol import Error, ErrorCode, ProtocolError, encode
from poolnet_desktop.core.ratelimit import TokenBucket
from poolnet_desktop.runtime.net.connection import PoolConnection

log = logging.getLogger(__name__)

# A peer whose unread output exceeds this is too slow to keep up with the pool: it is closed
# (with this application close code) rather than letting its buffer grow without bound.
MAX_PENDING_OUTPUT = 8 * 1024 * 1024
CLOSE_TOO_SLOW = 4002


class Session:
    """A connected peer: its dialect and role once it has introduced itself, and its errors."""

    def __init__(
        self, connection: PoolConnection, address: str, accepts: frozenset[Dialect] = frozenset({"seed", "poolnet"})
    ) -> None:
        self.connection = connection
        self.address = address
        self.accepts = accepts
        # True for the host's own identity: it alone may approve and revoke devices.
        self.owner = False
        # What the trust store lets this PoolNet peer do (``core.permissions``), set when it
        # authenticates and kept current when the owner changes them.
        self.permissions: frozenset[str] = frozenset()
        self.dialect: Dialect | None = None
        self.role: str | None = None
        self.device_id: str | None = None
        # Who is on the other end (members and observers alike), once introduced.
        self.peer_id: str | None = None
        self.errors = 0
        # True while a task handles this peer's messages (in order); see ``PoolServer``.
        self.busy = False
        self.pinged_at = 0.0  # on the coordinator's clock (observers only)
        self.checking_alive = False
        # Messages this session may still send; made for its dialect once it has one.
        self._allowance: tuple[Dialect | None, TokenBucket] | None = None

    def within_message_rate(self, now: float) -> bool:
        """Count one incoming message against the session's budget (``core.dialects``);
        False once the peer sends faster than its dialect allows."""
        if self._allowance is None or self._allowance[0] != self.dialect:
            rate, burst = message_budget(self.dialect)
            self._allowance = (self.dialect, TokenBucket(rate, burst, now))
        return self._allowance[1].take(now)

    @property
    def introduced(self) -> bool:
        return self.dialect is not None

    @property
    def caller(self) -> Caller:
        """This peer as ``core.permissions`` judges it: only an authenticated PoolNet peer has
        an identity there (a seed client's device id is only what it claimed)."""
        authenticated = self.dialect == "poolnet"
        return Caller(self.peer_id if authenticated else None, self.permissions, self.owner and authenticated)

    def require(self, action: Action, submitter: str | None = None) -> None:
        """Raise ``ProtocolError(forbidden)`` unless this peer may take ``action`` (on a task
        submitted by ``submitter``): the decision is ``core.permissions.may``."""
        reason = may(self.caller, action, submitter)
        if reason is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, reason)

    def pending_output(self) -> int:
        return self.connection.pending_output()

    def post(self, json: bytes) -> None:
        """Queue an encoded message without waiting (a closed connection drops it)."""
        self.post_many((json,))

    def post_many(self, messages: Sequence[bytes]) -> None:
        """Queue encoded messages in one write, in order; a peer that has left more than
        ``MAX_PENDING_OUTPUT`` unread is closed instead, whoever posts to it (batches, task
        updates, live shard output)."""
        if self.connection.pending_output() > MAX_PENDING_OUTPUT:
            self.connection.fail(CLOSE_TOO_SLOW, "too slow to keep up with the pool")
        else:
            self.connection.post_many(messages, text=True)

    async def send(self, message: msgspec.Struct) -> None:
        """Send one message; a peer that has gone is ignored here (its handler cleans up)."""
        try:
            await self.connection.send(encode(message), text=True)
        except ConnectionClosed:
            pass

    async def send_error(self, code: str, message: str) -> None:
        await self.send(Error(code=code, message=message))

    async def check_alive(self, timeout: float) -> None:
        """Ping the peer and drop the connection if no pong comes within ``timeout`` s: a
        peer whose machine slept or lost power would otherwise hold its socket for as long as
        TCP takes to give up (many minutes). One check at a time (``checking_alive``)."""
        self.checking_alive = True
        try:
            async with asyncio.timeout(timeout):
                await self.connection.ping()
        except TimeoutError:
            log.info("%r answered no ping in %.0f s: dropping it", self, timeout)
            # No closing handshake with a peer judged gone: it would wait behind unread output.
            self.connection.abort()
        except ConnectionClosed:
            pass
        finally:
            self.checking_alive = False

    async def close(self, code: int, reason: str) -> None:
        await self.connection.close(code, reason[:120])

    def __repr__(self) -> str:
        who = self.device_id or "anonymous"
        return f"<Session {who} {self.dialect or '-'}/{self.role or '-'} from {self.address}>"
