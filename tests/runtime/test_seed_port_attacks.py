"""Attacks on the seed port and on the accept path, made as an attacker would: real sockets.

The seed port is unauthenticated by design (a seed client has no key); these tests show that
what it gives is observation and nothing more, and that one address cannot exhaust the host.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member.agent import AgentState
from poolnet_desktop.runtime.member.member import Member
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.conftest import RawClient
from tests.runtime.test_task_pool import members, submit_manifest, wait_for  # noqa: F401 (fixtures)

TASK_REQUESTS = ["list_tasks", "watch_task", "fetch_results", "cancel_task", "retry_task",
                 "subscribe_tasks", "list_shards", "forget_task"]


async def seed_client(pool: PoolHost, source: str = "127.0.0.1") -> RawClient:
    assert pool.legacy_server is not None
    url = f"ws://127.0.0.1:{pool.legacy_server.port}/ws"
    return RawClient(await connect(url, proxy=None, open_timeout=5, close_timeout=1, local_addr=(source, 0)))


async def register(client: RawClient, device_id: str) -> dict:
    await client.send({"type": "register", "deviceId": device_id, "deviceName": device_id, "platform": "linux"})
    async with asyncio.timeout(5):
        while (reply := await client.receive())["type"] not in ("devices", "error"):
            pass
    return reply


@linux_only(SANDBOXED_SHARDS)
async def test_a_seed_client_cannot_list_read_fetch_cancel_or_retry_tasks(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path  # noqa: F811
) -> None:
    task_id = await submit_manifest(client, tmp_path / "private", """
        command = "mkdir out && echo private-result > out/r.txt && echo private-stdout"
        shell = true
        outputs = ["out/r.txt"]
        retries = 0
    """)
    assert (await client.wait(task_id)).state == "succeeded"
    attacker = await seed_client(pool)
    assert (await register(attacker, "attacker"))["type"] == "devices"
    heard: list[dict] = []
    for kind in TASK_REQUESTS:
        await attacker.send({"type": "heartbeat", "deviceId": "attacker"})  # stays online (1.5 s timeout)
        await attacker.send({"type": kind, "taskId": task_id, "detail": True})
        async with asyncio.timeout(5):
            while (reply := await attacker.receive())["type"] != "error":
                heard.append(reply)
        assert reply["code"] == "forbidden" and kind in reply["message"]
    assert all(m["type"] in ("resource_update", "device_joined", "device_left") for m in heard), heard
    assert "private" not in json.dumps(heard)
    task = pool.tasks.tasks[task_id]  # still there: not forgotten
    assert task.state == "succeeded" and [s.attempt for s in task.shards] == [1]


async def test_a_seed_client_cannot_take_a_members_device_id(
    pool: PoolHost, members: list[Member]  # noqa: F811
) -> None:
    victim = members[0]
    device_id = victim.identity.device_id
    session = pool.coordinator.session_for(device_id)
    attacker = await seed_client(pool)
    reply = await register(attacker, device_id)
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    await asyncio.sleep(0.5)  # what a displaced member would see (a close 4001) has had time
    assert pool.coordinator.session_for(device_id) is session and pool.coordinator.is_connected(session)
    device = pool.coordinator.registry.get(device_id)
    assert device is not None and device.online and device.role == "member" and device.name == "alpha"
    assert victim.agent.state == AgentState.CONNECTED


async def test_one_address_registering_thousands_of_seed_devices_is_limited(pool: PoolHost) -> None:
    refusals: list[str] = []
    for index in range(300):
        attacker = await seed_client(pool)
        reply = await register(attacker, f"fake-{index}")
        if reply["type"] == "error":
            refusals.append(reply["code"])
        await attacker.close()
    kept = [d for d in pool.coordinator.registry.all() if d.id.startswith("fake-")]
    assert len(refusals) == 300 - len(kept) and set(refusals) == {"rate_limited"}
    assert len(kept) <= pool.coordinator.seed_admission.per_address_burst + 2  # and a second or two's rate
    # Another address is not held back by this one.
    neighbour = await seed_client(pool, "127.0.0.9")
    assert (await register(neighbour, "neighbour"))["type"] == "devices"


async def test_seed_devices_are_capped_in_total_and_pruned_once_offline(pool: PoolHost) -> None:
    admission = pool.coordinator.seed_admission
    admission.max_devices = 12
    replies = []
    clients = []
    for index in range(20):  # from many addresses: the per-address limit does not apply
        attacker = await seed_client(pool, f"127.0.1.{index + 1}")
        clients.append(attacker)
        replies.append(await register(attacker, f"many-{index}"))
    assert [r["type"] for r in replies] == ["devices"] * 12 + ["error"] * 8
    assert all(r["code"] == "forbidden" and "at most 12" in r["message"] for r in replies[12:])
    admission.keep_offline = 0.5
    for attacker in clients:
        await attacker.close()
    await wait_for(lambda: not any(d.id.startswith("many-") for d in pool.coordinator.registry.all()), timeout=10)


async def test_a_flood_of_valid_messages_is_cut_off_while_others_are_served(pool: PoolHost) -> None:
    flooder, bystander = await seed_client(pool), await seed_client(pool, "127.0.0.7")
    await register(flooder, "flooder")
    await register(bystander, "bystander")
    for _ in range(200):
        await flooder.send({"type": "heartbeat", "deviceId": "flooder"})
    error = await flooder.receive_type("error")
    assert error["code"] == "rate_limited"
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            while True:
                await flooder.connection.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    await bystander.send({"type": "resource_request", "deviceId": "bystander", "requirements": {"cpu": 1}})
    assert (await bystander.receive_type("resource_allocation"))["allocation"]["requestingDevice"] == "bystander"


async def test_sockets_that_never_start_tls_are_capped_per_address_and_dropped(pool: PoolHost) -> None:
    cap = pool.server.max_waiting_per_address
    held = [
        await asyncio.open_connection("127.0.0.1", pool.server.port, local_addr=("127.0.0.2", 0))
        for _ in range(cap + 40)
    ]

    async def dropped(reader: asyncio.StreamReader, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                return await reader.read(1) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    try:
        # The sockets past the cap are dropped at once; those within it wait for their TLS.
        early = await asyncio.gather(*(dropped(reader, 2.0) for reader, _ in held))
        assert sum(early) == 40 and not any(early[:cap])
        # The owner, from another address, still gets in and is answered.
        link = await open_link(pool.local_url, pool.options.data_dir)
        await link.close()
        # Those that never start TLS are dropped by the handshake deadline (10 s from accept).
        late = await asyncio.gather(*(dropped(reader, 12.0) for reader, _ in held[:cap]))
        assert all(late)
        # And they no longer count: the address may open as many again.
        for _, writer in held:
            writer.close()
        held = [
            await asyncio.open_connection("127.0.0.1", pool.server.port, local_addr=("127.0.0.2", 0))
            for _ in range(cap)
        ]
        assert not any(await asyncio.gather(*(dropped(reader, 1.0) for reader, _ in held)))
    finally:
        for _, writer in held:
            writer.close()


async def test_an_authenticated_flood_is_cut_off_past_a_generous_budget(pool: PoolHost) -> None:
    from poolnet_desktop.core.dialects import message_budget
    from poolnet_desktop.core.protocol import Error
    from poolnet_desktop.core.task_protocol import ListTasks, TaskList

    flooder = await open_link(pool.local_url, pool.options.data_dir)
    bystander = await open_link(pool.local_url, pool.options.data_dir)
    try:
        _, burst = message_budget("poolnet")
        for _ in range(int(burst) * 2):
            await flooder.send(ListTasks())
        answered, refusals = 0, []
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(20):
                while True:
                    message = await flooder.recv()
                    if isinstance(message, TaskList):
                        answered += 1
                    elif isinstance(message, Error):
                        refusals.append(message.code)
        assert refusals == ["rate_limited"]
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert burst <= answered < burst * 2  # the whole burst is served: real clients never see the limit
        await bystander.send(ListTasks())
        assert isinstance(await bystander.expect(TaskList), TaskList)
    finally:
        await flooder.close()
        await bystander.close()


@linux_only(SANDBOXED_SHARDS)
async def test_a_shard_printing_line_by_line_never_meets_the_message_limit(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path  # noqa: F811
) -> None:
    # Each flushed line read is one shard_output message: thousands a second from each shard,
    # up to its output cap (about 3,000 for one shard here), several shards on each member.
    task_id = await submit_manifest(client, tmp_path / "chatty", """
        command = ["{python}", "-u", "-c", "for i in range(300000): print(i, flush=True)"]
        shards = 6
        retries = 0
        [resources]
        cpu = 0.1
    """)
    summary = await client.wait(task_id)
    assert summary.state == "succeeded", [(s.index, s.state, s.reason) for s in await client.shards(task_id)]
    assert all(m.agent.state == AgentState.CONNECTED for m in members)
    assert all(pool.coordinator.session_for(m.identity.device_id) is not None for m in members)
