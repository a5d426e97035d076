"""A pool lets no stranger in: TLS, pairing, revocation and the split between dialects."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from poolnet_desktop.core.pool_url import PoolAddressError
from poolnet_desktop.core.protocol import (
    AccessChanged,
    ListAccess,
    NewPairingCode,
    PairingCode,
    PoolState,
    ProtocolError,
    RevokeDevice,
)
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.rest import read_rest_token
from poolnet_desktop.runtime.member.agent import AgentState
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from poolnet_desktop.runtime.security.tls import client_ssl_context
from tests.conftest import posix_only
from tests.runtime.conftest import PAIRING_CODE


async def wait_for(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def member(url: str, data_dir: Path, code: str | None = PAIRING_CODE) -> Member:
    return Member(
        MemberOptions(url=url, data_dir=resolve_data_dir(data_dir), code=code, discovery=DiscoverySettings(enabled=False))
    )


async def test_the_main_port_speaks_tls_only(pool) -> None:
    with pytest.raises(PoolAddressError, match="pool links use TLS"):  # refused before connecting
        await open_link(f"ws://127.0.0.1:{pool.server.port}/ws", pool.options.data_dir)
    # A plain-text client gets nothing: the TLS handshake fails before any HTTP.
    with pytest.raises(Exception):
        async with connect(f"ws://127.0.0.1:{pool.server.port}/ws", proxy=None, open_timeout=3):
            pass


async def test_seed_clients_are_refused_on_the_main_port_and_poolnet_on_the_legacy_one(pool, raw_client) -> None:
    async with connect(f"wss://127.0.0.1:{pool.server.port}/ws", ssl=client_ssl_context(), proxy=None) as seed_on_tls:
        await seed_on_tls.send(json.dumps({"type": "register", "deviceId": "s", "deviceName": "S", "platform": "linux"}))
        error = json.loads(await asyncio.wait_for(seed_on_tls.recv(), 5))
        assert error["type"] == "error" and error["code"] == "forbidden" and "legacy port" in error["message"]
    legacy = await raw_client()
    await legacy.send({"type": "hello", "protocol": 1, "role": "member", "deviceId": "pn-x"})
    error = await legacy.receive_type("error")
    assert error["code"] == "forbidden" and "wss://" in error["message"]


async def test_seed_clients_observe_but_may_not_run_commands(raw_client) -> None:
    client = await raw_client()
    await client.send({"type": "register", "deviceId": "seed", "deviceName": "S", "platform": "linux"})
    await client.receive_type("devices")
    await client.send({"type": "task_submit", "task": {"id": "t9", "data": {"command": "touch /tmp/pwned"}}})
    result = await client.receive_type("task_result")
    assert result["result"]["success"] is False and "observe" in result["result"]["error"]


async def test_a_member_pairs_with_the_code_once_then_rejoins_by_key(pool, tmp_path: Path) -> None:
    first = member(pool.local_url, tmp_path / "m")
    running = asyncio.create_task(first.run())
    await wait_for(lambda: first.agent.state == AgentState.CONNECTED)
    device_id = first.identity.device_id
    await first.stop()
    await running
    again = member(pool.local_url, tmp_path / "m", code=None)
    running = asyncio.create_task(again.run())
    try:
        await wait_for(lambda: again.agent.state == AgentState.CONNECTED)
        assert pool.coordinator.registry.get(device_id).online
    finally:
        await again.stop()
        await running


async def test_a_wrong_code_is_refused_and_audited(pool, tmp_path: Path) -> None:
    intruder = member(pool.local_url, tmp_path / "x", code="WRNG-C0DE")
    await asyncio.wait_for(intruder.run(), 20)
    assert intruder.agent.state == AgentState.REFUSED
    assert pool.coordinator.registry.get(intruder.identity.device_id) is None
    log = await pool.access.store.audit_log(event="refused")
    assert any(entry.device_id == intruder.identity.device_id for entry in log)


async def test_revoking_cuts_a_member_off_at_once_and_for_good(pool, tmp_path: Path) -> None:
    victim = member(pool.local_url, tmp_path / "v")
    running = asyncio.create_task(victim.run())
    await wait_for(lambda: victim.agent.state == AgentState.CONNECTED)
    device_id = victim.identity.device_id
    async with await open_link(pool.local_url, pool.options.data_dir) as admin:
        await admin.send(RevokeDevice(device_id=device_id, reason="lost laptop"))
        async with asyncio.timeout(5):
            while not isinstance(answer := await admin.recv(), AccessChanged):
                pass
        assert answer.outcome == "revoked"
    # The live link is cut, and the member's reconnection is refused for good.
    await asyncio.wait_for(running, 20)
    assert victim.agent.state == AgentState.REFUSED
    assert "revoked" in (victim.agent.last_error or "")
    assert not pool.coordinator.registry.get(device_id).online


async def test_only_the_hosts_own_identity_administers_the_pool(pool, tmp_path: Path) -> None:
    guest = member(pool.local_url, tmp_path / "g")
    running = asyncio.create_task(guest.run())
    await wait_for(lambda: guest.agent.state == AgentState.CONNECTED)
    await guest.stop()
    await running
    async with await open_link(pool.local_url, tmp_path / "g") as link:
        await link.send(ListAccess())
        async with asyncio.timeout(5):
            while (answer := await link.recv()).__class__.__name__ != "Error":
                assert not isinstance(answer, AccessChanged)
        assert answer.code == "forbidden"


async def test_the_owner_replaces_the_code_and_the_old_one_no_longer_pairs(pool, tmp_path: Path) -> None:
    """``poolnet devices new-code``: the owner's request makes a new code at once; a guest
    asking the same is refused; a device holding the old code cannot pair with it."""
    guest = member(pool.local_url, tmp_path / "g")
    running = asyncio.create_task(guest.run())
    await wait_for(lambda: guest.agent.state == AgentState.CONNECTED)
    await guest.stop()
    await running
    async with await open_link(pool.local_url, tmp_path / "g") as link:
        await link.send(NewPairingCode())
        with pytest.raises(ProtocolError) as refused:
            await asyncio.wait_for(link.expect(PairingCode), 5)
        assert refused.value.code == "forbidden"
    assert pool.pairing_code == "TEST-C0DE"
    async with await open_link(pool.local_url, pool.options.data_dir) as owner:
        await owner.send(NewPairingCode())
        answer = await asyncio.wait_for(owner.expect(PairingCode), 5)
    assert answer.code == pool.pairing_code != "TEST-C0DE"
    late = member(pool.local_url, tmp_path / "late", code=PAIRING_CODE)
    await asyncio.wait_for(late.run(), 20)
    assert late.agent.state == AgentState.REFUSED and "pairing code" in (late.agent.last_error or "")
    invited = member(pool.local_url, tmp_path / "invited", code=answer.code)
    joined = asyncio.create_task(invited.run())
    await wait_for(lambda: invited.agent.state == AgentState.CONNECTED)
    await invited.stop()
    await joined


async def test_an_unknown_observer_waits_for_approval_and_is_let_in_when_approved(pool, tmp_path: Path) -> None:
    stranger_dir = resolve_data_dir(tmp_path / "s")
    opening = asyncio.create_task(open_link(pool.local_url, stranger_dir))
    await wait_for(lambda: pool.access.pending())
    (waiting,) = pool.access.pending()
    assert pool.access.authenticator.approve(waiting.device_id)
    link = await asyncio.wait_for(opening, 10)
    async with link:
        async with asyncio.timeout(5):
            while not isinstance(await link.recv(), PoolState):
                pass


async def test_a_device_joining_as_member_and_observer_is_let_in_on_both_by_one_approval(
    pool, tmp_path: Path
) -> None:
    """The window joins without a code over two links with one key, its member's and its
    observer's. The second used to supersede the first's wait, leaving the computer out of the
    pool after Approve while the window's header turned green."""
    window = member(pool.local_url, tmp_path / "window", code=None)
    sharing = asyncio.create_task(window.run())
    await wait_for(lambda: pool.access.pending())
    watching = asyncio.create_task(open_link(pool.local_url, tmp_path / "window"))
    await asyncio.sleep(0.5)  # the observer's hello reaches the host while the member waits
    (waiting,) = pool.access.pending()
    assert pool.access.authenticator.approve(waiting.device_id)
    link = await asyncio.wait_for(watching, 10)
    try:
        await wait_for(lambda: window.agent.state == AgentState.CONNECTED)
        assert pool.coordinator.registry.get(waiting.device_id).online
    finally:
        await link.close()
        await window.stop()
        await sharing


@posix_only("POSIX file modes")
async def test_the_main_ports_rest_answers_the_owners_token_over_https(pool) -> None:
    def fetch() -> dict:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        token = read_rest_token(pool.options.data_dir)
        request = urllib.request.Request(
            f"https://127.0.0.1:{pool.server.port}/api/stats", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as r:
            return json.load(r)

    stats = await asyncio.to_thread(fetch)
    assert "uptime" in stats and "devices" in stats
    assert (pool.options.data_dir / "rest.token").stat().st_mode & 0o777 == 0o600


# Another local process, as another user's program would be: it can reach the port but not
# read the owner's data folder, so it has no token, or a guessed one.
REST_PROBE = """
import ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
for path, token in [("/api/tasks", None), ("/metrics", None), ("/api/stats", "guess"), ("/api/devices", "")]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(f"https://127.0.0.1:{sys.argv[1]}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            print(response.status, response.read()[:200])
    except urllib.error.HTTPError as error:
        print(error.code)
"""


async def test_a_local_process_without_the_owners_token_gets_no_rest_answer(pool) -> None:
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", REST_PROBE, str(pool.server.port), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await asyncio.wait_for(probe.communicate(), 30)
    assert output.decode().split() == ["401"] * 4, output


async def test_a_member_refuses_a_host_with_another_certificate(pool, tmp_path: Path) -> None:
    paired = member(pool.local_url, tmp_path / "p")
    running = asyncio.create_task(paired.run())
    await wait_for(lambda: paired.agent.state == AgentState.CONNECTED)
    await paired.stop()
    await running
    # An impostor: another host claiming the same pool id, with its own certificate.
    from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost

    impostor_dir = resolve_data_dir(tmp_path / "impostor")
    (impostor_dir / "pool.json").write_text(json.dumps({"poolId": pool.coordinator.config.pool_id, "poolName": "evil"}))
    impostor = PoolHost(HostOptions(data_dir=impostor_dir, bind="127.0.0.1", port=0, pairing_code=PAIRING_CODE,
                                    discovery=DiscoverySettings(enabled=False)))
    await impostor.start()
    try:
        fooled = member(impostor.local_url, tmp_path / "p")
        fooled.agent.config.pool_id = pool.coordinator.config.pool_id
        running = asyncio.create_task(fooled.run())
        # It never joins the impostor, and it keeps looking for its pool (an address may be
        # the real host's again later), saying why it is not in.
        await wait_for(lambda: "impostor" in (fooled.agent.last_error or ""))
        await wait_for(lambda: fooled.agent.state == AgentState.DISCONNECTED)
        assert not running.done()
        assert fooled.agent.config.device_id not in {d.id for d in impostor.coordinator.registry.all()}
        await fooled.stop()
        await running
    finally:
        await impostor.stop()

