"""Observers get coalesced pool_state batches, never one message per update."""

from __future__ import annotations

import asyncio

import pytest
from websockets.protocol import State

from poolnet_desktop.core.protocol import Error, Forget, PoolState, ProtocolError, Welcome
from poolnet_desktop.runtime.client.link import PoolLink, open_link
from tests.runtime.conftest import register_members, seed_resources


async def next_of(link: PoolLink, kind: type, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        while not isinstance(message := await link.recv(), kind):
            pass
    return message


@pytest.fixture
async def observer(pool):
    """The host's own window: an observer with the host's identity."""
    link = await open_link(pool.local_url, pool.options.data_dir)
    yield link
    await link.close()


async def test_observer_gets_full_state_then_coalesced_batches(pool, observer, raw_client) -> None:
    assert observer.welcome.pool_id == pool.coordinator.config.pool_id
    first = await next_of(observer, PoolState)
    assert first.full is True and first.devices == []

    members = await register_members(raw_client, 5)
    # 5 members x 20 updates in about a second: observers must see a handful of batches, not 100.
    for round_ in range(20):
        for index, member in enumerate(members):
            await member.send({"type": "resource_update", "deviceId": f"m{index}", "resources": seed_resources(cpuUsage=round_)})
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)

    batches = []
    while True:
        try:
            batches.append(await next_of(observer, PoolState, timeout=0.5))
        except TimeoutError:
            break
    interval = pool.coordinator.config.batch_interval
    assert 1 <= len(batches) <= (20 * 0.05 + 0.6) / interval + 2
    latest = {}
    for batch in batches:
        for device in batch.devices:
            latest[device.id] = device
    assert sorted(latest) == [f"m{i}" for i in range(5)]
    assert all(device.resources.cpu_usage == 19 for device in latest.values())
    assert batches[-1].pool.devices == 5
    seqs = [b.seq for b in batches]
    assert seqs == sorted(seqs)


async def test_an_observer_may_forget_only_offline_devices(pool, observer, raw_client) -> None:
    member = await raw_client()
    await member.send({"type": "register", "deviceId": "gone", "deviceName": "G", "platform": "linux"})
    await member.receive_type("devices")
    await observer.send(Forget(device_id="gone"))
    assert (await next_of(observer, Error)).code == "forbidden"
    await member.close()
    await asyncio.sleep(0.2)
    await observer.send(Forget(device_id="gone"))
    batch = await next_of(observer, PoolState)
    while "gone" not in batch.removed:
        batch = await next_of(observer, PoolState)
    assert pool.coordinator.registry.get("gone") is None


async def test_expect_skips_other_messages_and_raises_the_pools_error(pool, observer, raw_client) -> None:
    assert isinstance(await observer.expect(PoolState), PoolState)
    member = await raw_client()
    await member.send({"type": "register", "deviceId": "busy", "deviceName": "B", "platform": "linux"})
    await member.receive_type("devices")
    await observer.send(Forget(device_id="busy"))  # online: refused
    with pytest.raises(ProtocolError) as refused:
        async with asyncio.timeout(5):
            await observer.expect(Welcome)  # never comes: the error ends the wait
    assert refused.value.code == "forbidden"


async def test_an_observer_that_answers_no_ping_is_closed_and_a_live_one_stays(pool, observer) -> None:
    pool.coordinator.config.observer_ping_interval = 0.3
    await next_of(observer, PoolState)
    asleep = await open_link(pool.local_url, pool.options.data_dir)
    try:
        await next_of(asleep, PoolState)
        # A laptop that went to sleep: its socket stays open, nothing is read or answered.
        asleep.connection.transport.pause_reading()

        def observers() -> int:
            return sum(1 for s in pool.coordinator.sessions if s.role == "observer")

        assert observers() == 2
        async with asyncio.timeout(10):
            while observers() > 1:
                await asyncio.sleep(0.05)
        # The one that answers its pings is still served, many intervals later.
        await asyncio.sleep(1.0)
        assert observers() == 1
        assert observer.connection.state is State.OPEN
    finally:
        asleep.connection.transport.abort()
