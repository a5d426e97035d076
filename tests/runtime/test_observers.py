"""Observers get coalesced pool_state batches, never one message per update."""

from __future__ import annotations

import asyncio

from tests.runtime.conftest import seed_resources


async def test_observer_gets_full_state_then_coalesced_batches(pool, raw_client) -> None:
    observer = await raw_client()
    await observer.send({"type": "hello", "protocol": 1, "role": "observer", "deviceId": "window-1"})
    welcome = await observer.receive_type("welcome")
    assert welcome["poolId"] == pool.coordinator.config.pool_id
    first = await observer.receive_type("pool_state")
    assert first["full"] is True and first["devices"] == []

    members = []
    for index in range(5):
        member = await raw_client()
        await member.send({"type": "register", "deviceId": f"m{index}", "deviceName": f"M{index}", "platform": "linux"})
        await member.receive_type("devices")
        members.append(member)
    # 5 members x 20 updates in about a second: observers must see a handful of batches, not 100.
    for round_ in range(20):
        for index, member in enumerate(members):
            await member.send({"type": "resource_update", "deviceId": f"m{index}", "resources": seed_resources(cpuUsage=round_)})
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)

    batches = []
    while True:
        try:
            batches.append(await observer.receive_type("pool_state", timeout=0.5))
        except TimeoutError:
            break
    interval = pool.coordinator.config.batch_interval
    assert 1 <= len(batches) <= (20 * 0.05 + 0.6) / interval + 2
    latest = {}
    for batch in batches:
        for device in batch["devices"]:
            latest[device["id"]] = device
    assert sorted(latest) == [f"m{i}" for i in range(5)]
    assert all(device["resources"]["cpuUsage"] == 19 for device in latest.values())
    assert batches[-1]["pool"]["devices"] == 5
    seqs = [b["seq"] for b in batches]
    assert seqs == sorted(seqs)


async def test_an_observer_may_forget_only_offline_devices(pool, raw_client) -> None:
    observer = await raw_client()
    await observer.send({"type": "hello", "protocol": 1, "role": "observer", "deviceId": "window-1"})
    await observer.receive_type("welcome")
    member = await raw_client()
    await member.send({"type": "register", "deviceId": "gone", "deviceName": "G", "platform": "linux"})
    await member.receive_type("devices")
    await observer.send({"type": "forget_device", "deviceId": "gone"})
    assert (await observer.receive_type("error"))["code"] == "forbidden"
    await member.close()
    await asyncio.sleep(0.2)
    await observer.send({"type": "forget_device", "deviceId": "gone"})
    batch = await observer.receive_type("pool_state")
    while "gone" not in batch["removed"]:
        batch = await observer.receive_type("pool_state")
    assert pool.coordinator.registry.get("gone") is None


async def test_a_client_with_another_protocol_version_is_told_and_closed(raw_client) -> None:
    client = await raw_client()
    await client.send({"type": "hello", "protocol": 99, "role": "member", "deviceId": "future"})
    error = await client.receive_type("error")
    assert error["code"] == "unsupported_protocol"
