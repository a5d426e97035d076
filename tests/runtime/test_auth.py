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

from poolnet_desktop.core.auth import MemberPairing, b64encode, handshake_transcript, host_pairing
from poolnet_desktop.core.protocol import (
    PROTOCOL_VERSION,
    Auth,
    AuthOk,
    Challenge,
    Error,
    ErrorCode,
    Hello,
    PairingConfirm,
    PairingFinish,
    Welcome,
    decode_client,
    decode_server,
    encode,
)
from poolnet_desktop.core.ratelimit import FailureLimiter
from poolnet_desktop.runtime.security.auth import (
    Authenticator,
    AuthRefused,
    AuthResult,
    HostAuth,
    PendingApproval,
    authenticate_to_host,
    member_hello,
)
from poolnet_desktop.runtime.security.identity import Identity
from poolnet_desktop.runtime.security.tls import (
    InsecureConnection,
    client_ssl_context,
    client_ssl_for_url,
    peer_fingerprint,
    server_ssl_context,
)
from poolnet_desktop.runtime.security.trust import PinnedHosts, TrustStore

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
        # The host confirms first: the member sees its confirmation fail and leaves.
        assert refusal.code == ErrorCode.HOST_MISMATCH and "the code is wrong" in refusal.message
        assert await host.store.approved(member.identity.device_id) is None
        assert member.pinned.get(POOL) is None
        await until(lambda: bool(host.refusals))
        [line] = await events(host.store, "refused")
        assert line.startswith(f"{member.identity.device_id} 127.0.0.1 auth_failed: the device left during pairing")


@pytest.mark.asyncio
async def test_repeated_failures_lock_the_address_out(tmp_path: Path) -> None:
    clock = [1000.0]
    limiter = FailureLimiter(max_failures=3, window=60.0)
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", limiter=limiter, monotonic=lambda: clock[0]) as host:
        for tries in range(1, 4):
            assert (await refused(member.join(host.url, code="AAAA-BBBB"))).code == ErrorCode.HOST_MISMATCH
            await until(lambda: len(host.refusals) == tries)
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
            pairing = MemberPairing(CODE, pool_id=challenge.pool_id, server_fingerprint=peer_fingerprint(conn),
                                    public_key=member.identity.public_key, random_bytes=os.urandom)
            recorded_auth = encode(Auth(signature=b64encode(member.identity.sign(transcript)),
                                        pake=b64encode(pairing.message)))
            await conn.send(recorded_auth, text=True)
            confirm = decode_server(await conn.recv())
            assert isinstance(confirm, PairingConfirm)
            keys = pairing.finish(base64.b64decode(confirm.pake), transcript)
            await conn.send(encode(PairingFinish(confirmation=b64encode(keys.member))), text=True)
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


async def start_pairing(url: str, identity: Identity, code: str) -> tuple[Any, MemberPairing, bytes]:
    """An attacker's pairing attempt up to the point of sending ``auth``: the open
    connection, its SPAKE2 state and the transcript; ``auth`` not sent yet."""
    conn = await connect(url, ssl=client_ssl_context(), proxy=None)
    client_nonce = os.urandom(32)
    await conn.send(encode(Hello(protocol=PROTOCOL_VERSION, role="member", device_id=identity.device_id,
                                 public_key=identity.public_key_b64, nonce=b64encode(client_nonce))), text=True)
    challenge = decode_server(await conn.recv())
    assert isinstance(challenge, Challenge)
    transcript = handshake_transcript(
        server_nonce=base64.b64decode(challenge.nonce), client_nonce=client_nonce,
        server_fingerprint=peer_fingerprint(conn), pool_id=challenge.pool_id,
        device_id=identity.device_id, public_key=identity.public_key,
    )
    pairing = MemberPairing(code, pool_id=challenge.pool_id, server_fingerprint=peer_fingerprint(conn),
                            public_key=identity.public_key, random_bytes=os.urandom)
    await conn.send(encode(Auth(signature=b64encode(identity.sign(transcript)), pake=b64encode(pairing.message))),
                    text=True)
    return conn, pairing, transcript


@pytest.mark.asyncio
async def test_parallel_guesses_from_one_address_are_counted_first_and_worked_one_at_a_time(tmp_path: Path) -> None:
    """Attack: 10 guesses of the code sent at once from one address, each from a fresh
    identity. Before, every one was checked (failures were counted after the check). Now
    the first is worked on while the address holds its only pairing slot, and each of the
    others is counted and refused unchecked: at most the limiter's allowance is spent."""
    async with running_host(tmp_path / "host") as host:
        identities = [Identity.load_or_create(tmp_path / f"attacker{i}") for i in range(10)]
        attempts = await asyncio.gather(*(start_pairing(host.url, ident, "AAAA-BBBB") for ident in identities))
        answers = await asyncio.gather(*(conn.recv() for conn, _, _ in attempts))
        decoded = [decode_server(a) for a in answers]
        worked = [i for i, m in enumerate(decoded) if isinstance(m, PairingConfirm)]
        refusals = [m for m in decoded if isinstance(m, Error)]
        assert len(worked) == 1 and len(refusals) == 9
        assert all(r.code == ErrorCode.RATE_LIMITED for r in refusals)
        assert {("in progress" in r.message) or ("too many pairing attempts" in r.message) for r in refusals} == {True}
        # The one worked on holds a wrong guess: its confirmation cannot match.
        conn, pairing, transcript = attempts[worked[0]]
        confirm = decoded[worked[0]]
        keys = pairing.finish(base64.b64decode(confirm.pake), transcript)
        assert not keys.host_matches(base64.b64decode(confirm.confirmation))
        await conn.send(encode(PairingFinish(confirmation=b64encode(keys.member))), text=True)
        error = decode_server(await conn.recv())
        assert isinstance(error, Error) and "wrong pairing code" in error.message
        for conn, _, _ in attempts:
            await conn.close()
        # The allowance is spent: even the right code now waits.
        locked = await refused(Member.create(tmp_path / "late").join(host.url, code=CODE))
        assert locked.code == ErrorCode.RATE_LIMITED
        await until(lambda: len(host.refusals) == 11)
        assert sum("wrong pairing code" in r.message for r in host.refusals) == 1


@pytest.mark.asyncio
async def test_a_third_device_from_one_address_waiting_for_approval_is_refused(tmp_path: Path) -> None:
    """Attack: one address fills the owner's approval queue with devices nobody answers."""
    async with running_host(tmp_path / "host") as host:
        waiting = [asyncio.create_task(Member.create(tmp_path / f"m{i}").join(host.url)) for i in range(2)]
        await until(lambda: len(host.auth.pending()) == 2)
        third = await refused(Member.create(tmp_path / "m2").join(host.url))
        assert third.code == ErrorCode.RATE_LIMITED and "already waiting" in third.message
        assert len(host.auth.pending()) == 2
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


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


@pytest.mark.asyncio
async def test_after_a_revoke_the_old_code_no_longer_pairs(tmp_path: Path) -> None:
    """Attack: a revoked person makes a new key (a fresh data folder) and pairs again with
    the code they were given. The code rotates on revoke, so the old one is refused."""
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host") as host:
        await member.join(host.url, code=CODE)
        await host.auth.revoke(member.identity.device_id, reason="left the team")
        assert host.auth.pairing_code not in (None, CODE)
        comeback = Member.create(tmp_path / "new-key")
        refusal = await refused(comeback.join(host.url, code=CODE))
        assert refusal.code == ErrorCode.HOST_MISMATCH  # the host cannot confirm the old code
        await until(lambda: bool(host.refusals))
        assert await host.store.approved(comeback.identity.device_id) is None
        assert "most likely a wrong pairing code" in host.refusals[-1].message
        assert (await Member.create(tmp_path / "invited").join(host.url, code=host.auth.pairing_code)).method == "code"


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
            assert refusal.code == ErrorCode.HOST_CHANGED and "impostor" in refusal.message
        assert await impostor.store.approved(member.identity.device_id) is None
        assert impostor.results == []
    assert member.pinned.get(POOL) == host.identity.cert_fingerprint


@asynccontextmanager
async def fake_host(identity: Identity, guess: str, received: list[Any]) -> AsyncIterator[str]:
    """An attacker's host on 127.0.0.1 (real TLS, its own certificate) that waits for members
    to pair with it. It records every message a member sends and plays the protocol as far as
    it can with its ``guess`` of the code (and, for a member that sends an old-style proof,
    waves it in hoping for work)."""

    async def handler(conn: ServerConnection) -> None:
        hello = decode_client(await conn.recv())
        assert isinstance(hello, Hello)
        received.append(hello)
        server_nonce = os.urandom(32)
        await conn.send(encode(Challenge(nonce=b64encode(server_nonce), pool_id=POOL)), text=True)
        try:
            answer = decode_client(await conn.recv())
            received.append(answer)
            assert isinstance(answer, Auth)
            if answer.pake is not None:
                public_key = base64.b64decode(hello.public_key or "")
                transcript = handshake_transcript(
                    server_nonce=server_nonce, client_nonce=base64.b64decode(hello.nonce or ""),
                    server_fingerprint=identity.cert_fingerprint, pool_id=POOL, device_id=hello.device_id,
                    public_key=public_key,
                )
                message, keys = host_pairing(guess, base64.b64decode(answer.pake), transcript, pool_id=POOL,
                                             server_fingerprint=identity.cert_fingerprint, public_key=public_key,
                                             random_bytes=os.urandom)
                await conn.send(encode(PairingConfirm(pake=b64encode(message), confirmation=b64encode(keys.host))),
                                text=True)
            else:
                await conn.send(encode(AuthOk(device_id=hello.device_id, method="code")), text=True)
            while True:
                received.append(decode_client(await conn.recv()))
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", 0, ssl=server_ssl_context(identity)) as server:
        yield f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


@pytest.mark.asyncio
async def test_a_fake_host_gets_nothing_to_guess_the_code_against(tmp_path: Path) -> None:
    """Attack: a fake host lures a member that pairs with the real code. With the old HMAC
    proofs the member sent ``proof`` (an HMAC keyed by the code) before the host proved
    anything, and the fake host could try every code offline. Now the member sends only a
    SPAKE2 message blinded by a fresh random scalar, refuses the fake host's confirmation, and
    sends nothing more: no key confirmation, no value derived from the code alone."""
    received: list[Any] = []
    member = Member.create(tmp_path / "member")
    async with fake_host(Identity.load_or_create(tmp_path / "fake"), "AAAA-BBBB", received) as url:
        refusal = await refused(member.join(url, code=CODE))
    assert refusal.code == ErrorCode.HOST_MISMATCH and "did not prove" in refusal.message
    assert member.pinned.all() == {}
    assert [type(m) for m in received] == [Hello, Auth]  # no pairing_finish ever left the member
    [auth] = [m for m in received if isinstance(m, Auth)]
    assert set(msgspec_fields(auth)) == {"signature", "pake"}  # the old ``proof`` is gone
    assert auth.pake is not None and len(base64.b64decode(auth.pake)) == 33


def msgspec_fields(message: Any) -> list[str]:
    return [name for name in message.__struct_fields__ if getattr(message, name) is not None]


@pytest.mark.asyncio
async def test_a_member_refuses_a_host_of_another_pool(tmp_path: Path) -> None:
    member = Member.create(tmp_path / "member")
    async with running_host(tmp_path / "host", pool_id="pool-other") as host:
        refusal = await refused(member.join(host.url, code=CODE, pool_id=POOL))
    assert refusal.code == ErrorCode.HOST_CHANGED and "pool-other" in refusal.message


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
