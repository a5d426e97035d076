"""The authentication handshake on a pool link, host side (``Authenticator``) and member side
(``authenticate_to_host``).

    member                                   host
    hello {deviceId, publicKey, nonce}  ->
                                        <-   challenge {nonce, poolId}
    auth {signature, pake?}             ->
                                        <-   pairing_confirm {pake, confirmation}   (pairing by code)
    pairing_finish {confirmation}       ->                                          (pairing by code)
                                        <-   auth_pending {...}      (only while a person decides)
                                        <-   auth_ok {method}   then the caller's welcome
                                  or    <-   error {code, message}, close 1008

The member always signs the transcript (``core.auth``) with its key. A device the host has
approved needs nothing more. A new device either pairs with the code (SPAKE2, the host
confirming the shared key first, the member only after checking it) or waits while the host's
owner approves it in a prompt. The member checks the host by its pinned certificate
fingerprint, or, the first time, by the host's key confirmation; with neither (approval
without a code) it trusts the first certificate it sees.

Pairing is guarded before any key work: the attempt is counted against the address first, one
pairing runs per address at a time, and a few at most run at once in all.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import msgspec
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from poolnet_desktop.core.auth import (
    CONFIRMATION_BYTES,
    NONCE_BYTES,
    PAKE_MESSAGE_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    MemberPairing,
    b64decode,
    b64encode,
    device_id_for,
    format_pairing_code,
    handshake_transcript,
    host_pairing,
    make_pairing_code,
    normalize_pairing_code,
    verify_challenge,
)
from poolnet_desktop.core.pairing_gate import PairingGate, approval_refusal
from poolnet_desktop.core.permissions import granted_on_pairing
from poolnet_desktop.core.protocol import (
    Auth,
    AuthOk,
    AuthPending,
    Challenge,
    Error,
    ErrorCode,
    Hello,
    PairingConfirm,
    PairingFinish,
    ProtocolError,
    Welcome,
    decode_client,
    decode_server,
    encode,
)
from poolnet_desktop.core.ratelimit import FailureLimiter
from poolnet_desktop.core.wire import StorageError
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.tls import InsecureConnection, peer_fingerprint
from poolnet_desktop.runtime.security.trust import ApprovedDevice, PinnedHosts, TrustStore

log = logging.getLogger(__name__)

Method = Literal["key", "code", "approval"]
_Decision = Literal["approve", "deny", "revoked"]
POLICY_VIOLATION = 1008
_M = TypeVar("_M", bound=msgspec.Struct)


class HostSide(Protocol):
    """A connection as the host's half of the handshake uses it: the pool server's
    ``PoolConnection`` (or a websockets server connection, in tests)."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str | bytes, text: bool | None = None) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    async def wait_closed(self) -> None: ...


class AuthRefused(Exception):
    """The handshake failed. ``code`` is an ``ErrorCode``; ``message`` says what to do.
    ``counted``: the attempt is already on the address's record (a pairing attempt)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None, *, counted: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.counted = counted


@dataclass(frozen=True)
class AuthResult:
    """Who the host just let in, and how."""

    device_id: str
    name: str
    public_key: str  # base64
    method: Method
    address: str


@dataclass(frozen=True)
class PendingApproval:
    """A device waiting for the host's owner to approve or deny it (shown as a prompt)."""

    device_id: str
    name: str
    platform: str
    role: str
    address: str
    since: float  # wall-clock seconds


@dataclass
class _Waiting:
    """One device waiting for the owner; every connection it opens meanwhile (the window's
    member and observer links) waits on the same decision, so one Approve lets all in."""

    info: PendingApproval
    decision: asyncio.Future[_Decision]
    connections: int = 0


class Authenticator:
    """The host's gatekeeper: one per coordinator, shared by every connection.

    ``authenticate`` runs the handshake on a connection whose ``hello`` the caller has read.
    Every refusal is counted against the address, written to the audit log, answered with an
    ``error`` and a close 1008, and raised as ``AuthRefused``.

    ``on_pending_changed`` is called (on the loop) with the full list of waiting devices each
    time it changes; a window shows them as prompts and calls ``approve`` or ``deny``.
    ``on_code_changed`` is called with the new code (formatted) each time it changes.

    The pairing code rotates on every revoke (a revoked person knew it) and on demand.
    ``max_pending`` devices in all, and ``max_pending_per_address`` from one address, may wait
    for approval; ``max_concurrent_pairings`` SPAKE2 runs are worked on at once in all.
    """

    def __init__(
        self,
        store: TrustStore,
        *,
        pool_id: str,
        server_fingerprint: str,
        pairing_code: str | None = None,
        limiter: FailureLimiter | None = None,
        handshake_timeout: float = 10.0,
        approval_timeout: float = 120.0,
        max_pending: int = 16,
        max_pending_per_address: int = 2,
        max_concurrent_pairings: int = 4,
        on_pending_changed: Callable[[list[PendingApproval]], None] | None = None,
        on_code_changed: Callable[[str | None], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store = store
        self.pool_id = pool_id
        self.server_fingerprint = server_fingerprint.lower()
        self.limiter = limiter if limiter is not None else FailureLimiter()
        self.handshake_timeout = handshake_timeout
        self.approval_timeout = approval_timeout
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self._pairing_slots = asyncio.Semaphore(max_concurrent_pairings)
        self._pairing_gate = PairingGate(self.limiter)
        self.on_pending_changed = on_pending_changed
        self.on_code_changed = on_code_changed
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._random = random_bytes
        self._code: str | None = None
        self._waiting: dict[str, _Waiting] = {}
        if pairing_code is None:
            self.new_pairing_code()
        else:
            self.set_pairing_code(pairing_code)

    # ---- pairing code

    @property
    def pairing_code(self) -> str | None:
        """The code to show the host's owner (``ABCD-EFGH``), or None when codes are off."""
        return format_pairing_code(self._code) if self._code else None

    def set_pairing_code(self, code: str | None) -> str | None:
        """Use ``code`` (as typed, e.g. from ``POOLNET_PAIRING_CODE``), or None to turn codes off.
        Raises ``ValueError`` for a code that is too short or has other characters."""
        self._code = normalize_pairing_code(code) if code is not None else None
        self._code_changed()
        return self.pairing_code

    def new_pairing_code(self) -> str:
        """Replace the code with a fresh random one and return it, formatted."""
        self._code = make_pairing_code(self._random(5))
        self._code_changed()
        return format_pairing_code(self._code)

    def _code_changed(self) -> None:
        if self.on_code_changed is not None:
            self.on_code_changed(self.pairing_code)

    # ---- the owner's decisions

    def pending(self) -> list[PendingApproval]:
        return [w.info for w in self._waiting.values()]

    def approve(self, device_id: str) -> bool:
        """Let a waiting device in (it is remembered). False if it is not waiting."""
        return self._decide(device_id, "approve")

    def deny(self, device_id: str) -> bool:
        """Turn a waiting device away. False if it is not waiting."""
        return self._decide(device_id, "deny")

    async def revoke(self, device_id: str, *, reason: str = "", address: str = "") -> bool:
        """Revoke ``device_id`` for good, audit it and rotate the pairing code (the revoked
        person knew it); returns whether it had been approved. The caller must close that
        device's live connections right after."""
        self._decide(device_id, "revoked")
        if self._code is not None:
            self.new_pairing_code()
        was_approved = await self.store.revoke(device_id, at=self._wall_clock(), reason=reason)
        await self.store.record("revoke", at=self._wall_clock(), device_id=device_id, address=address, detail=reason)
        log.warning("device %s revoked%s", device_id, f": {reason}" if reason else "")
        return was_approved

    def _decide(self, device_id: str, decision: _Decision) -> bool:
        waiting = self._waiting.get(device_id)
        if waiting is None or waiting.decision.done():
            return False
        waiting.decision.set_result(decision)
        return True

    def _notify(self) -> None:
        if self.on_pending_changed is not None:
            self.on_pending_changed(self.pending())

    # ---- the handshake

    async def authenticate(self, conn: HostSide, hello: Hello, address: str) -> AuthResult:
        """Authenticate the device that sent ``hello`` from ``address`` (an IP, no port).

        On success ``auth_ok`` has been sent; the caller sends ``welcome`` next. On refusal the
        connection is closed and ``AuthRefused`` raised.
        """
        try:
            return await self._authenticate(conn, hello, address)
        except AuthRefused as refusal:
            await self._refuse(conn, hello, address, refusal)
            raise

    async def _authenticate(self, conn: HostSide, hello: Hello, address: str) -> AuthResult:
        paired = False
        try:
            async with asyncio.timeout(self.handshake_timeout):
                wait = self.limiter.retry_after(address, self._monotonic())
                if wait > 0:
                    raise AuthRefused(
                        ErrorCode.RATE_LIMITED,
                        f"too many failed attempts from {address}; retry in {math.ceil(wait)} s",
                        retry_after=wait,
                    )
                public_key, client_nonce = _hello_credentials(hello)
                if await self.store.is_revoked(hello.device_id):
                    raise AuthRefused(ErrorCode.REVOKED, "this device has been revoked by the host")
                known = await self.store.approved(hello.device_id)
                if known is not None and known.public_key != hello.public_key:
                    raise AuthRefused(ErrorCode.AUTH_FAILED, "this device id is registered with another key")
                server_nonce = self._random(NONCE_BYTES)
                transcript = handshake_transcript(
                    server_nonce=server_nonce,
                    client_nonce=client_nonce,
                    server_fingerprint=self.server_fingerprint,
                    pool_id=self.pool_id,
                    device_id=hello.device_id,
                    public_key=public_key,
                )
                await conn.send(encode(Challenge(nonce=b64encode(server_nonce), pool_id=self.pool_id)), text=True)
                answer = await _receive(conn, Auth)
                signature = _decode_field(answer.signature, SIGNATURE_BYTES, "signature")
                if not verify_challenge(public_key, transcript, signature):
                    raise AuthRefused(
                        ErrorCode.AUTH_FAILED,
                        "the signature does not match this handshake (replayed, relayed or forged)",
                    )
                if answer.pake is not None:
                    await self._pair(conn, answer.pake, transcript, public_key, address)
                    paired = True
        except TimeoutError:
            raise AuthRefused(
                ErrorCode.AUTH_TIMEOUT, f"authentication not completed within {self.handshake_timeout:g} s"
            ) from None
        except ConnectionClosed:
            raise AuthRefused(ErrorCode.AUTH_FAILED, "the connection closed during authentication") from None

        method: Method
        if known is not None:
            method = "key"
        elif paired:
            method = "code"
        else:
            method = "approval"
            await self._await_approval(conn, hello, address)
        if known is None:
            await self._remember(hello, address, method)
        await _send(conn, AuthOk(device_id=hello.device_id, method=method))
        # A known window or CLI looking in by key is routine; every other join is kept.
        if not (method == "key" and hello.role == "observer"):
            await self.store.record(
                "join", at=self._wall_clock(), device_id=hello.device_id, address=address,
                detail=f"{hello.role} {hello.device_name!r} by {method}",
            )
        return AuthResult(hello.device_id, hello.device_name, hello.public_key or "", method, address)

    async def _pair(self, conn: HostSide, pake_b64: str, transcript: bytes, public_key: bytes, address: str) -> None:
        """Run the host's side of SPAKE2 and check the member's key confirmation.

        The attempt is counted against ``address`` before any work, so parallel guesses use up
        the address's allowance as fast as serial ones, and a second pairing from the address
        while one runs is refused outright.
        """
        code = self._code
        if code is None:
            raise AuthRefused(
                ErrorCode.AUTH_FAILED, "this host does not accept pairing codes now; ask its owner to approve you"
            )
        member_message = _decode_field(pake_b64, PAKE_MESSAGE_BYTES, "pake")
        not_now = self._pairing_gate.start(address, self._monotonic())
        if not_now is not None:
            raise AuthRefused(ErrorCode.RATE_LIMITED, not_now.message, not_now.retry_after, counted=not_now.counted)
        try:
            async with self._pairing_slots:
                try:
                    host_message, keys = await asyncio.to_thread(
                        host_pairing, code, member_message, transcript, pool_id=self.pool_id,
                        server_fingerprint=self.server_fingerprint, public_key=public_key, random_bytes=self._random,
                    )
                except ValueError as exc:
                    raise AuthRefused(ErrorCode.AUTH_FAILED, str(exc)) from None
            await _send(conn, PairingConfirm(pake=b64encode(host_message), confirmation=b64encode(keys.host)))
            finish = await _receive(conn, PairingFinish)
            confirmation = _decode_field(finish.confirmation, CONFIRMATION_BYTES, "confirmation")
            if not keys.member_matches(confirmation):
                raise AuthRefused(ErrorCode.AUTH_FAILED, "wrong pairing code")
        except AuthRefused as refusal:
            refusal.counted = True  # counted above, before the work
            raise
        except ConnectionClosed:
            raise AuthRefused(ErrorCode.AUTH_FAILED, "the device left during pairing: most likely a wrong pairing code",
                              counted=True) from None
        finally:
            self._pairing_gate.finish(address)

    async def _await_approval(self, conn: HostSide, hello: Hello, address: str) -> None:
        mine = self._waiting.get(hello.device_id)
        if mine is None or mine.decision.done():
            others = (w.info.address for w in self._waiting.values())
            full = approval_refusal(others, address, max_total=self.max_pending,
                                    max_per_address=self.max_pending_per_address)
            if full is not None:
                raise AuthRefused(ErrorCode.RATE_LIMITED, full)
            info = PendingApproval(hello.device_id, hello.device_name, hello.platform, hello.role, address,
                                   self._wall_clock())
            mine = _Waiting(info, asyncio.get_running_loop().create_future())
            self._waiting[hello.device_id] = mine
            self._notify()
        mine.connections += 1
        closed = asyncio.ensure_future(conn.wait_closed())
        try:
            await _send(conn, AuthPending(message="waiting for the host's owner to approve this device",
                                          timeout=self.approval_timeout))
            either: set[asyncio.Future[Any]] = {mine.decision, closed}
            await asyncio.wait(either, timeout=self.approval_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            mine.connections -= 1
            if self._waiting.get(hello.device_id) is mine and (mine.decision.done() or not mine.connections):
                del self._waiting[hello.device_id]
                self._notify()
        if not mine.decision.done():
            if not mine.connections:
                mine.decision.cancel()
            if closed.done():
                raise AuthRefused(ErrorCode.AUTH_FAILED, "the connection closed while waiting for approval")
            raise AuthRefused(ErrorCode.AUTH_TIMEOUT,
                              f"nobody approved this device within {self.approval_timeout:g} s")
        decision = mine.decision.result()
        if decision == "approve":
            return
        messages = {
            "deny": "the host's owner denied this device",
            "revoked": "this device has been revoked by the host",
        }
        code = ErrorCode.REVOKED if decision == "revoked" else ErrorCode.APPROVAL_DENIED
        raise AuthRefused(code, messages[decision])

    async def _remember(self, hello: Hello, address: str, method: Method) -> None:
        device = ApprovedDevice(hello.device_id, hello.device_name, hello.public_key or "", self._wall_clock(),
                                granted_on_pairing(method))
        try:
            await self.store.approve(device)
        except ValueError:
            raise AuthRefused(ErrorCode.REVOKED, "this device has been revoked by the host") from None
        except StorageError as exc:
            raise AuthRefused(ErrorCode.STORAGE_FAILED, f"{exc}; try again once it has room") from None
        how = "by pairing code" if method == "code" else "by the host's owner"
        await self.store.record("approve", at=device.approved_at, device_id=hello.device_id, address=address,
                                detail=f"{hello.device_name!r} {how}")

    async def _refuse(self, conn: HostSide, hello: Hello, address: str, refusal: AuthRefused) -> None:
        if refusal.code not in (ErrorCode.RATE_LIMITED, ErrorCode.STORAGE_FAILED) and not refusal.counted:
            self.limiter.record_failure(address, self._monotonic())
        log.warning("refused %s from %s: %s", hello.device_id, address, refusal.message)
        await self.store.record("refused", at=self._wall_clock(), device_id=hello.device_id, address=address,
                                detail=f"{refusal.code}: {refusal.message}")
        try:
            await conn.send(encode(Error(code=refusal.code, message=refusal.message)), text=True)
            await conn.close(POLICY_VIOLATION, refusal.code)
        except ConnectionClosed:
            pass


def _decode_field(text: str, size: int, what: str) -> bytes:
    try:
        return b64decode(text, size, what)
    except ValueError as exc:
        raise AuthRefused(ErrorCode.AUTH_FAILED, str(exc)) from None


def _hello_credentials(hello: Hello) -> tuple[bytes, bytes]:
    if hello.public_key is None or hello.nonce is None:
        raise AuthRefused(ErrorCode.AUTH_FAILED, "hello lacks publicKey and nonce; this host requires authentication")
    public_key = _decode_field(hello.public_key, PUBLIC_KEY_BYTES, "publicKey")
    nonce = _decode_field(hello.nonce, NONCE_BYTES, "nonce")
    if device_id_for(public_key) != hello.device_id:
        raise AuthRefused(ErrorCode.AUTH_FAILED, "deviceId does not belong to publicKey")
    return public_key, nonce


async def _receive(conn: HostSide, expected: type[_M]) -> _M:
    """The member's next message, which must be an ``expected``."""
    try:
        message = decode_client(await conn.recv())
    except ProtocolError as exc:
        raise AuthRefused(ErrorCode.AUTH_FAILED, f"invalid {expected.__name__} message: {exc.message}") from None
    if not isinstance(message, expected):
        raise AuthRefused(ErrorCode.AUTH_FAILED, f"expected {expected.__name__}, got {type(message).__name__}")
    return message


async def _send(conn: HostSide, message: msgspec.Struct) -> None:
    try:
        await conn.send(encode(message), text=True)
    except ConnectionClosed:
        raise AuthRefused(ErrorCode.AUTH_FAILED, "the connection closed during authentication") from None


# ---- member side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostAuth:
    """What the member learnt: the pool, the host's certificate (now pinned) and the method."""

    pool_id: str
    fingerprint: str
    method: Method


def member_hello(identity: Identity, hello: Hello) -> Hello:
    """``hello`` carrying this identity's device id, its public key and a fresh nonce.

    Build one for every connection, send it, then pass the same object to
    ``authenticate_to_host``: the nonce in it is half of what makes the handshake unique.
    """
    return msgspec.structs.replace(
        hello,
        device_id=identity.device_id,
        public_key=identity.public_key_b64,
        nonce=b64encode(os.urandom(NONCE_BYTES)),
    )


async def join_pool(
    conn: Connection,
    identity: Identity,
    hello: Hello,
    pinned: PinnedHosts,
    pool_id: str | None,
    code: str | None,
    *,
    timeout: float = 10.0,
    welcome_timeout: float = 15.0,
    on_pending: Callable[[str], None] | None = None,
) -> tuple[HostAuth, Welcome]:
    """Say ``hello`` as ``identity``, authenticate (``authenticate_to_host``) and read the
    pool's ``welcome``. The one way in for the member's agent and for every link of the
    command line and the window, so the checks of the host cannot drift apart.

    Raises ``AuthRefused`` as ``authenticate_to_host`` does, and ``ProtocolError`` when the
    pool answers with an error instead of ``welcome`` (turned away after authenticating, for a
    role its permissions lack). ``on_pending`` is told, with the host's words, when the host's
    owner is asked to approve this device: the caller says so at once rather than go silent.
    """
    hello = member_hello(identity, hello)
    await conn.send(encode(hello), text=True)
    host = await authenticate_to_host(conn, identity, hello, pinned, pool_id, code, timeout=timeout,
                                      on_pending=on_pending)
    async with asyncio.timeout(welcome_timeout):
        while True:
            message = decode_server(await conn.recv())
            if isinstance(message, Welcome):
                return host, message
            if isinstance(message, Error):
                raise ProtocolError(message.code, message.message)


async def authenticate_to_host(
    conn: Connection,
    identity: Identity,
    hello: Hello,
    pinned: PinnedHosts,
    pool_id: str | None,
    code: str | None,
    *,
    timeout: float = 10.0,
    on_pending: Callable[[str], None] | None = None,
) -> HostAuth:
    """Authenticate to the host after the caller has sent ``hello`` (made by ``member_hello``).
    On return ``auth_ok`` has been read; ``welcome`` comes next.

    ``pool_id`` is the pool this member belongs to, if any: a host speaking for another pool is
    refused. The host must match its pin; with no pin, ``code`` pairs (and proves the host)
    or, without a code, the host's owner approves and the first certificate is trusted.
    Raises ``AuthRefused`` (and closes the connection) when either side says no, and
    ``ValueError`` for a ``hello`` not made by ``member_hello(identity, ...)``.
    """
    if hello.public_key != identity.public_key_b64 or hello.device_id != identity.device_id or not hello.nonce:
        raise ValueError("send member_hello(identity, hello) before authenticate_to_host")
    client_nonce = b64decode(hello.nonce, NONCE_BYTES, "hello nonce")
    try:
        return await _authenticate_to_host(conn, identity, client_nonce, pinned, pool_id, code, timeout, on_pending)
    except AuthRefused as refusal:
        try:
            await conn.close(POLICY_VIOLATION, refusal.code)
        except ConnectionClosed:
            pass
        raise


async def _authenticate_to_host(
    conn: Connection,
    identity: Identity,
    client_nonce: bytes,
    pinned: PinnedHosts,
    pool_id: str | None,
    code: str | None,
    timeout: float,
    on_pending: Callable[[str], None] | None,
) -> HostAuth:
    try:
        canonical_code = normalize_pairing_code(code) if code else None
    except ValueError as exc:
        raise AuthRefused(ErrorCode.AUTH_FAILED, f"invalid pairing code: {exc}") from None
    try:
        seen = peer_fingerprint(conn)
    except InsecureConnection as exc:
        raise AuthRefused(ErrorCode.HOST_MISMATCH, f"{exc}: PoolNet joins only over wss://") from None
    if pool_id is not None:
        _check_pin(pinned, pool_id, seen)
    try:
        async with asyncio.timeout(timeout):
            challenge = await _receive_from_host(conn, Challenge)
        if pool_id is not None and challenge.pool_id != pool_id:
            raise AuthRefused(ErrorCode.HOST_CHANGED,
                              f"this host serves pool {challenge.pool_id!r}, not {pool_id!r}; it may be an impostor "
                              "(if that pool was rebuilt, pair again with its code)")
        pin = _check_pin(pinned, challenge.pool_id, seen)
        try:
            server_nonce = b64decode(challenge.nonce, NONCE_BYTES, "challenge nonce")
        except ValueError as exc:
            raise AuthRefused(ErrorCode.AUTH_FAILED, f"the host sent a malformed challenge: {exc}") from None
        transcript = handshake_transcript(
            server_nonce=server_nonce,
            client_nonce=client_nonce,
            server_fingerprint=seen,
            pool_id=challenge.pool_id,
            device_id=identity.device_id,
            public_key=identity.public_key,
        )
        pairing = None
        if pin is None and canonical_code is not None:
            pairing = MemberPairing(canonical_code, pool_id=challenge.pool_id, server_fingerprint=seen,
                                    public_key=identity.public_key, random_bytes=os.urandom)
        async with asyncio.timeout(timeout):
            await conn.send(encode(Auth(
                signature=b64encode(identity.sign(transcript)),
                pake=b64encode(pairing.message) if pairing else None,
            )), text=True)
            if pairing is not None:
                await _confirm_pairing(conn, pairing, transcript)
        ok = await _await_ok(conn, timeout, on_pending)
    except TimeoutError:
        raise AuthRefused(ErrorCode.AUTH_TIMEOUT, f"the host did not answer within {timeout:g} s") from None
    except ConnectionClosed:
        raise AuthRefused(ErrorCode.AUTH_FAILED, "the host closed the connection during authentication") from None

    if ok.device_id != identity.device_id:
        raise AuthRefused(ErrorCode.HOST_MISMATCH, "the host accepted another device id than ours")
    if pin is None:
        await asyncio.to_thread(pinned.pin, challenge.pool_id, seen)
    return HostAuth(challenge.pool_id, seen, ok.method)


async def _confirm_pairing(conn: Connection, pairing: MemberPairing, transcript: bytes) -> None:
    """Check the host's key confirmation, then, and only then, send ours."""
    confirm = await _receive_from_host(conn, PairingConfirm)
    try:
        keys = pairing.finish(b64decode(confirm.pake, PAKE_MESSAGE_BYTES, "pake"), transcript)
        valid = keys.host_matches(b64decode(confirm.confirmation, CONFIRMATION_BYTES, "confirmation"))
    except ValueError:
        valid = False
    if not valid:
        raise AuthRefused(
            ErrorCode.HOST_MISMATCH,
            "the host did not prove it knows this pairing code: the code is wrong, or the host is an impostor",
        )
    await conn.send(encode(PairingFinish(confirmation=b64encode(keys.member))), text=True)


def _check_pin(pinned: PinnedHosts, pool_id: str, seen: str) -> str | None:
    pin = pinned.get(pool_id)
    if pin is not None and pin != seen:
        raise AuthRefused(
            ErrorCode.HOST_CHANGED,
            f"the pool's identity changed: pair again with the code (poolnet join --forget-pin). "
            f"The host of pool {pool_id!r} shows certificate {seen[:16]}…, not the pinned {pin[:16]}…: "
            "if its owner did not replace the pool's identity, it is an impostor",
        )
    return pin


async def _await_ok(conn: Connection, timeout: float, on_pending: Callable[[str], None] | None) -> AuthOk:
    deadline = timeout
    while True:
        async with asyncio.timeout(deadline):
            message: AuthOk | AuthPending = await _receive_from_host(conn, AuthOk, AuthPending)
        if isinstance(message, AuthOk):
            return message
        if on_pending is not None:
            on_pending(message.message)
        # The host's owner is being asked: wait as long as the host says it will, plus slack.
        deadline = min(message.timeout, 3600.0) + timeout


async def _receive_from_host(conn: Connection, *expected: type[_M]) -> _M:
    """The host's next message if it is one of ``expected``; its ``error`` becomes a refusal."""
    try:
        message = decode_server(await conn.recv())
    except ProtocolError as exc:
        raise AuthRefused(ErrorCode.AUTH_FAILED, f"the host sent an invalid message: {exc.message}") from None
    if isinstance(message, Error):
        raise AuthRefused(message.code, message.message)
    if not isinstance(message, expected):
        raise AuthRefused(ErrorCode.AUTH_FAILED, f"the host sent {type(message).__name__} during authentication")
    return message
