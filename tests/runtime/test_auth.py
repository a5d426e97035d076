"""The authentication handshake over real TLS WebSocket connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from poolnet_desktop.core.auth import b64encode, handshake_transcript, pairing_proofs
from poolnet_desktop.core.protocol import (
    PROTOCOL_VERSION,
    Auth,
    AuthOk,
    Challenge,
    Error,
    ErrorCode,
    Hello,
    Welcome,
    decode_client,
    decode_server,
    encode,
)
from poolnet_desktop.core.ratelimit import FailureLimiter
from poolnet_desktop.runtime.auth import (
    Authenticator,
    AuthRefused,
    AuthResult,
    HostAuth,
    PendingApproval,
    authenticate_to_host,
    member_hello,
)
from poolnet_desktop.runtime.identity import Identity
from poolnet_desktop.runtime.tls import (
    InsecureConnection,
    client_ssl_context,
    client_ssl_for_url,
    peer_fingerprint,
    server_ssl_context,
)
from poolnet_desktop.runtime.trust import PinnedHosts, TrustStore

POOL = "pool-test"
CODE = "K7QD-M2XP"


@dataclass
class Host:
    identity: Identity
    store: TrustStore
    auth: Authenticator
    url: str = ""
    results: list[AuthResult] = field(default_factory=list)
    refusals: list[AuthRefused] = field(default_factory=list)


@asynccontextmanager
async def running_host(data_dir: Path, *, tls: bool = True, **kwargs: Any) -> AsyncIterator[Host]:
    """A coordinator's front door: read hello, authenticate, send welcome."""
    identity = Identity.load_or_create(data_dir)
    store = await TrustStore.open(data_dir / "trust.db")
    kwargs.setdefault("pool_id", POOL)
    kwargs.setdefault("pairing_code", CODE)
    host = Host(identity, store, Authenticator(store, server_fingerprint=identity.cert_fingerprint, **kwargs))

    async def handler(conn: ServerConnection) -> None:
        hello = decode_client(await conn.recv())
        assert isinstance(hello, Hello)
        try:
            result = await host.auth.authenticate(conn, hello, conn.remote_address[0])
        except AuthRefused as refusal:
            host.refusals.append(refusal)
            return
        host.results.append(result)
        await conn.send(encode(Welcome(
            protocol=PROTOCOL_VERSION, pool_id=POOL, pool_name="test", device_id=result.device_id,
            heartbeat_interval=5, resource_interval=2, heartbeat_timeout=30,
        )), text=True)

    ssl = server_ssl_context(identity) if tls else None
    try:
        async with serve(handler, "127.0.0.1", 0, ssl=ssl) as server:
            port = server.sockets[0].getsockname()[1]
            host.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ws"
            yield host
    finally:
        await store.close()


@dataclass
class Member:
    identity: Identity
    pinned: PinnedHosts

    @classmethod
    def create(cls, data_dir: Path) -> Member:
        return cls(Identity.load_or_create(data_dir), PinnedHosts.load(data_dir / "pinned_hosts.json"))

    def hello(self) -> Hello:
        return Hello(protocol=PROTOCOL_VERSION, role="member", device_id=self.identity.device_id,
                     device_name="laptop", platform="linux")

    async def join(self, url: str, *, code: str | None = None, pool_id: str | None = None) -> HostAuth:
        """Authenticate, then read the welcome that proves the host let us in."""
        ssl = client_ssl_context() if url.startswith("wss") else None
        async with connect(url, ssl=ssl, proxy=None) as conn:
            hello = member_hello(self.identity, self.hello())
            await conn.send(encode(hello), text=True)
            outcome = await authenticate_to_host(conn, self.identity, hello, self.pinned, pool_id, code)
            welcome = decode_server(await conn.recv())
            assert isinstance(welcome, Welcome) and welcome.device_id == self.identity.device_id
            return outcome


async def refused(coro: Any) -> AuthRefused:
    with pytest.raises(AuthRefused) as info:
        await coro
    return info.value


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the host's handler to catch up (it finishes after the client has its answer)."""
    while not condition():
        await asyncio.sleep(0.01)


async def events(store: TrustStore, event: str) -> list[str]:
    return [f"{e.device_id} {e.address} {e.detail}" for e in await store.audit_log(event=event)]  # type: ignore[arg-type]


# ---- pairing and keys ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pairing_with_the_right_code_then_the_key_alone(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host") as host:
        first = await member.join(host.url, code="k7qd m2xp")  # typed loosely
        assert first == HostAuth(POOL, host.identity.cert_fingerprint, "code")
        assert member.pinned.get(POOL) == host.identity.cert_fingerprint
        approved = await host.store.approved(member.identity.device_id)
        assert approved is not None and approved.public_key == member.identity.public_key_b64

        # From now on the key is enough: no code, and the pin proves the host.
        member = Member.create(tmp_path / "member")
        second = await member.join(host.url, pool_id=POOL)
        assert second.method == "key"
        assert [r.method for r in host.results] == ["code", "key"]
        assert len(await events(host.store, "approve")) == 1
        joins = await events(host.store, "join")
        assert len(joins) == 2 and all("127.0.0.1" in j for j in joins)


@pytest.mark.asyncio
async def test_a_wrong_code_is_refused_and_audited(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host") as host:
        refusal = await refused(member.join(host.url, code="AAAA-BBBB"))
        assert refusal.code == ErrorCode.AUTH_FAILED and "wrong pairing code" in refusal.message
        assert await host.store.approved(member.identity.device_id) is None
        assert member.pinned.get(POOL) is None
        [line] = await events(host.store, "refused")
        assert line.startswith(f"{member.identity.device_id} 127.0.0.1 auth_failed: wrong pairing code")


@pytest.mark.asyncio
async def test_repeated_failures_lock_the_address_out(tmp_path: Path) -> None:
    clock = [1000.0]
    limiter = FailureLimiter(max_failures=3, window=60.0)
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", limiter=limiter, monotonic=lambda: clock[0]) as host:
        for _ in range(3):
            assert (await refused(member.join(host.url, code="AAAA-BBBB"))).code == ErrorCode.AUTH_FAILED
        # Even the right code is refused now, with a time to wait.
        locked = await refused(member.join(host.url, code=CODE))
        assert locked.code == ErrorCode.RATE_LIMITED and "retry in 60 s" in locked.message
        await until(lambda: len(host.refusals) == 4)
        assert host.refusals[-1].retry_after == pytest.approx(60.0)
        clock[0] += 61
        assert (await member.join(host.url, code=CODE)).method == "code"
        assert len(await events(host.store, "refused")) == 4


@pytest.mark.asyncio
async def test_a_replayed_handshake_is_refused(tmp_path: Path) -> None:
    """An attacker who recorded a whole successful pairing replays it byte for byte."""
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host") as host:
        client_nonce = os.urandom(32)
        hello = Hello(protocol=PROTOCOL_VERSION, role="member", device_id=member.identity.device_id,
                      public_key=member.identity.public_key_b64, nonce=b64encode(client_nonce))
        async with connect(host.url, ssl=client_ssl_context(), proxy=None) as conn:
            await conn.send(encode(hello), text=True)
            challenge = decode_server(await conn.recv())
            assert isinstance(challenge, Challenge)
            transcript = handshake_transcript(
                server_nonce=base64.b64decode(challenge.nonce), client_nonce=client_nonce,
                server_fingerprint=peer_fingerprint(conn), pool_id=challenge.pool_id,
                device_id=member.identity.device_id, public_key=member.identity.public_key,
            )
            recorded_auth = encode(Auth(signature=b64encode(member.identity.sign(transcript)),
                                             proof=b64encode(pairing_proofs(CODE, transcript).member)))
            await conn.send(recorded_auth, text=True)
            assert isinstance(decode_server(await conn.recv()), AuthOk)

        async with connect(host.url, ssl=client_ssl_context(), proxy=None) as conn:
            await conn.send(encode(hello), text=True)
            fresh = decode_server(await conn.recv())
            assert isinstance(fresh, Challenge) and fresh.nonce != challenge.nonce
            await conn.send(recorded_auth, text=True)
            error = decode_server(await conn.recv())
            assert isinstance(error, Error) and error.code == ErrorCode.AUTH_FAILED
            assert "replayed" in error.message
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert len(host.results) == 1
        assert len(await events(host.store, "refused")) == 1


@pytest.mark.asyncio
async def test_a_hello_that_claims_another_devices_id_is_refused(tmp_path: Path) -> None:
    victim = Member.create(tmp_path / "victim")
    attacker = Member.create(tmp_path / "attacker")
    async with running_host(tmp_path / "host") as host:
        await victim.join(host.url, code=CODE)
        async with connect(host.url, ssl=client_ssl_context(), proxy=None) as conn:
            await conn.send(encode(Hello(
                protocol=PROTOCOL_VERSION, role="member", device_id=victim.identity.device_id,
                public_key=attacker.identity.public_key_b64, nonce=b64encode(os.urandom(32)),
            )), text=True)
            error = decode_server(await conn.recv())
            assert isinstance(error, Error) and "does not belong to publicKey" in error.message
        async with connect(host.url, ssl=client_ssl_context(), proxy=None) as conn:
            await conn.send(encode(attacker.hello()), text=True)  # no key, no nonce: an old client
            error = decode_server(await conn.recv())
            assert isinstance(error, Error) and "requires authentication" in error.message


@pytest.mark.asyncio
async def test_a_stalled_handshake_is_dropped(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", handshake_timeout=0.3) as host:
        async with connect(host.url, ssl=client_ssl_context(), proxy=None) as conn:
            await conn.send(encode(Hello(
                protocol=PROTOCOL_VERSION, role="member", device_id=member.identity.device_id,
                public_key=member.identity.public_key_b64, nonce=b64encode(os.urandom(32)),
            )), text=True)
            assert isinstance(decode_server(await conn.recv()), Challenge)
            error = decode_server(await conn.recv())  # we never answer
            assert isinstance(error, Error) and error.code == ErrorCode.AUTH_TIMEOUT
        await until(lambda: bool(host.refusals))
        assert [r.code for r in host.refusals] == [ErrorCode.AUTH_TIMEOUT]


# ---- revocation ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_revoked_device_cannot_rejoin_even_with_the_code(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host") as host:
        await member.join(host.url, code=CODE)
        assert await host.auth.revoke(member.identity.device_id, reason="lost laptop") is True
        for code in (None, CODE):
            refusal = await refused(member.join(host.url, code=code, pool_id=POOL))
            assert refusal.code == ErrorCode.REVOKED
        assert len(await events(host.store, "revoke")) == 1
        assert all("revoked" in line for line in await events(host.store, "refused"))


# ---- the member checks the host -----------------------------------------------------------


@pytest.mark.asyncio
async def test_a_paired_member_refuses_a_host_with_another_certificate(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host") as host:
        await member.join(host.url, code=CODE)
    # An impostor claims the same pool and even knows the code, but not the host's key.
    async with running_host(tmp_path / "impostor") as impostor:
        for pool_id in (POOL, None):
            refusal = await refused(member.join(impostor.url, code=CODE, pool_id=pool_id))
            assert refusal.code == ErrorCode.HOST_MISMATCH and "impostor" in refusal.message
        assert await impostor.store.approved(member.identity.device_id) is None
        assert impostor.results == []
    assert member.pinned.get(POOL) == host.identity.cert_fingerprint


@pytest.mark.asyncio
async def test_a_host_that_cannot_prove_the_code_is_refused(tmp_path: Path) -> None:
    """A fake host that waves every member in, hoping to receive work and data."""
    fake = Identity.load_or_create(tmp_path / "fake")

    async def handler(conn: ServerConnection) -> None:
        hello = decode_client(await conn.recv())
        assert isinstance(hello, Hello)
        await conn.send(encode(Challenge(nonce=b64encode(os.urandom(32)), pool_id=POOL)), text=True)
        await conn.recv()
        await conn.send(encode(AuthOk(device_id=hello.device_id, method="code",
                                           host_proof=b64encode(os.urandom(32)))), text=True)
        await conn.wait_closed()

    member = Member.create(tmp_path / "member")
    async with serve(handler, "127.0.0.1", 0, ssl=server_ssl_context(fake)) as server:
        url = f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        refusal = await refused(member.join(url, code=CODE))
    assert refusal.code == ErrorCode.HOST_MISMATCH and "did not prove" in refusal.message
    assert member.pinned.all() == {}


@pytest.mark.asyncio
async def test_a_member_refuses_a_host_of_another_pool(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", pool_id="pool-other") as host:
        refusal = await refused(member.join(host.url, code=CODE, pool_id=POOL))
    assert refusal.code == ErrorCode.HOST_MISMATCH and "pool-other" in refusal.message


@pytest.mark.asyncio
async def test_a_member_never_authenticates_over_plain_text(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", tls=False) as host:
        refusal = await refused(member.join(host.url, code=CODE))
        assert refusal.code == ErrorCode.HOST_MISMATCH and "not encrypted" in refusal.message
        assert host.results == []
    with pytest.raises(InsecureConnection, match="wss://"):
        client_ssl_for_url(host.url)
    assert client_ssl_for_url(host.url.replace("ws://", "wss://")) is not None


@pytest.mark.asyncio
async def test_a_hello_without_this_identitys_credentials_is_a_programming_error(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    other = Member.create(tmp_path / "other")
    async with running_host(tmp_path / "host") as host:
        async with connect(host.url, ssl=client_ssl_context(), proxy=None) as conn:
            for hello in (member.hello(), member_hello(other.identity, other.hello())):
                with pytest.raises(ValueError, match="member_hello"):
                    await authenticate_to_host(conn, member.identity, hello, member.pinned, None, CODE)
    fresh = {member_hello(member.identity, member.hello()).nonce for _ in range(3)}
    assert len(fresh) == 3


@pytest.mark.asyncio
async def test_peer_fingerprint_is_the_hosts_certificate(tmp_path: Path) -> None:
    async with running_host(tmp_path / "host") as host:
        async with connect(host.url, ssl=client_ssl_context(), proxy=None) as conn:
            assert peer_fingerprint(conn) == host.identity.cert_fingerprint


# ---- approval by the host's owner ---------------------------------------------------------


def deciding(decide: Callable[[str], bool], seen: list[list[PendingApproval]]) -> Callable[[list[PendingApproval]], None]:
    """An owner who answers every prompt as soon as it appears (as a window's button would)."""

    def on_pending_changed(pending: list[PendingApproval]) -> None:
        seen.append(pending)
        for p in pending:
            asyncio.get_running_loop().call_soon(decide, p.device_id)

    return on_pending_changed


@pytest.mark.asyncio
async def test_the_host_approves_a_device_without_a_code(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    seen: list[list[PendingApproval]] = []
    async with running_host(tmp_path / "host", pairing_code=None) as host:
        host.auth.on_pending_changed = deciding(host.auth.approve, seen)
        outcome = await member.join(host.url)
        assert outcome.method == "approval"
        assert [[p.device_id for p in batch] for batch in seen] == [[member.identity.device_id], []]
        assert seen[0][0].name == "laptop" and seen[0][0].address == "127.0.0.1"
        assert host.auth.pending() == []
        # Trust on first use: the member pinned what it saw, and the host remembers the key.
        assert member.pinned.get(POOL) == host.identity.cert_fingerprint
        assert (await member.join(host.url, pool_id=POOL)).method == "key"
        assert len(await events(host.store, "approve")) == 1


@pytest.mark.asyncio
async def test_the_host_denies_a_device(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host") as host:
        host.auth.on_pending_changed = deciding(host.auth.deny, [])
        refusal = await refused(member.join(host.url))
        assert refusal.code == ErrorCode.APPROVAL_DENIED
        assert await host.store.approved(member.identity.device_id) is None
        assert member.pinned.all() == {}


@pytest.mark.asyncio
async def test_an_unanswered_prompt_times_out(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", approval_timeout=0.3) as host:
        refusal = await refused(member.join(host.url))
        assert refusal.code == ErrorCode.AUTH_TIMEOUT and "nobody approved" in refusal.message
        assert host.auth.pending() == []


@pytest.mark.asyncio
async def test_a_member_that_leaves_while_waiting_is_withdrawn(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    seen: list[list[PendingApproval]] = []
    async with running_host(tmp_path / "host", on_pending_changed=seen.append) as host:
        task = asyncio.create_task(member.join(host.url))
        await until(lambda: bool(host.auth.pending()))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: not host.auth.pending() and bool(host.refusals))
        assert [len(batch) for batch in seen] == [1, 0]
        assert host.auth.approve(member.identity.device_id) is False


# ---- pairing code management --------------------------------------------------------------


@pytest.mark.asyncio
async def test_pairing_codes_are_shown_set_and_turned_off(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", pairing_code=None) as host:
        generated = host.auth.pairing_code
        assert generated is not None and len(generated) == 9 and generated[4] == "-"
        assert host.auth.set_pairing_code("wxyz 2345 abcd") == "WXYZ-2345-ABCD"
        with pytest.raises(ValueError):
            host.auth.set_pairing_code("no")
        assert host.auth.set_pairing_code(None) is None
        refusal = await refused(member.join(host.url, code=CODE))
        assert "does not accept pairing codes" in refusal.message
        code = host.auth.new_pairing_code()
        assert (await member.join(host.url, code=code)).method == "code"
