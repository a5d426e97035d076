"""A client written only from the seed's API reference joins a PoolNet pool unchanged."""

from __future__ import annotations

import asyncio

from tests.runtime.conftest import seed_resources


async def register(client, device_id: str, name: str) -> dict:
    await client.send({"type": "register", "deviceId": device_id, "deviceName": name, "platform": "linux"})
    return await client.receive_type("devices")


async def test_register_answers_devices_and_announces_to_others(raw_client) -> None:
    alice = await raw_client()
    listed = await register(alice, "alice", "Alice's laptop")
    assert [d["id"] for d in listed["devices"]] == ["alice"]
    device = listed["devices"][0]
    assert device["name"] == "Alice's laptop"
    assert device["platform"] == "linux"
    assert device["ipAddress"] == "127.0.0.1"
    assert device["isOnline"] is True
    assert device["lastSeen"].endswith("Z") and "T" in device["lastSeen"]

    bob = await raw_client()
    listed = await register(bob, "bob", "Bob's desktop")
    assert sorted(d["id"] for d in listed["devices"]) == ["alice", "bob"]
    joined = await alice.receive_type("device_joined")
    assert joined["device"]["id"] == "bob"
    assert joined["device"]["name"] == "Bob's desktop"


async def test_resource_updates_are_relayed_to_the_others(raw_client) -> None:
    alice, bob = await raw_client(), await raw_client()
    await register(alice, "alice", "A")
    await register(bob, "bob", "B")
    await bob.send({"type": "resource_update", "deviceId": "bob", "resources": seed_resources(cpuCores=12)})
    relayed = await alice.receive_type("resource_update")
    while relayed["deviceId"] != "bob":
        relayed = await alice.receive_type("resource_update")
    assert relayed["resources"]["cpuCores"] == 12
    assert relayed["resources"]["memoryTotal"] == 16384
    assert relayed["resources"]["hasGPU"] is False


async def test_closing_the_socket_tells_the_others_device_left(raw_client) -> None:
    alice, bob = await raw_client(), await raw_client()
    await register(alice, "alice", "A")
    await register(bob, "bob", "B")
    await bob.close()
    left = await alice.receive_type("device_left")
    assert left == {"type": "device_left", "deviceId": "bob"}


async def test_a_silent_device_times_out_and_the_others_hear_device_left(pool, raw_client) -> None:
    alice, quiet = await raw_client(), await raw_client()
    await register(alice, "alice", "A")
    await register(quiet, "quiet", "Q")
    # Alice keeps heart-beating; the quiet one says nothing past the 1.5 s timeout.
    async def beat() -> None:
        for _ in range(10):
            await alice.send({"type": "heartbeat", "deviceId": "alice"})
            await asyncio.sleep(0.3)

    beating = asyncio.create_task(beat())
    left = await alice.receive_type("device_left", timeout=6)
    beating.cancel()
    assert left["deviceId"] == "quiet"
    assert pool.coordinator.registry.get("quiet").online is False
    assert pool.coordinator.registry.get("alice").online is True


async def test_resource_request_gets_the_seed_allocation(raw_client) -> None:
    alice, bob = await raw_client(), await raw_client()
    await register(alice, "alice", "A")
    await register(bob, "bob", "B")
    await bob.send({"type": "resource_update", "deviceId": "bob", "resources": seed_resources()})
    await asyncio.sleep(0.2)
    await alice.send(
        {"type": "resource_request", "deviceId": "alice", "requirements": {"cpu": 200, "memory": 1024, "storage": 10, "gpu": False}}
    )
    answer = await alice.receive_type("resource_allocation")
    allocation = answer["allocation"]
    assert allocation["requestingDevice"] == "alice"
    assert allocation["fulfilled"] is True
    assert [d["deviceId"] for d in allocation["allocatedDevices"]] == ["bob"]
    granted = allocation["allocatedDevices"][0]
    assert granted == {
        "deviceId": "bob",
        "deviceName": "B",
        "allocatedCpu": 200.0,
        "allocatedMemory": 1024.0,
        "allocatedStorage": 10.0,
        "allocatedGpu": False,
    }


async def test_seed_task_submit_is_answered_honestly(raw_client) -> None:
    alice = await raw_client()
    await register(alice, "alice", "A")
    await alice.send(
        {"type": "task_submit", "task": {"id": "t1", "type": "command", "submitterId": "alice", "requirements": {}, "data": {"command": "echo hi"}}}
    )
    result = await alice.receive_type("task_result")
    assert result["taskId"] == "t1"
    assert result["result"]["success"] is False
    assert result["result"]["error"]
