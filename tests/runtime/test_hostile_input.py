"""Garbage on the socket gets a clear error or a close, and everyone else keeps being served."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from poolnet_desktop.core.protocol import MAX_CONTROL_MESSAGE, Register
from tests.runtime.conftest import seed_resources


async def registered(raw_client, device_id: str):
    client = await raw_client()
    await client.send({"type": "register", "deviceId": device_id, "deviceName": device_id, "platform": "linux"})
    await client.receive_type("devices")
    return client


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2, 3]", "bad_message"),
        ('{"no": "type"}', "bad_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "heartbeat", "deviceId": 42}', "bad_message"),
        ('{"type": "resource_update", "deviceId": "v", "resources": {"cpuUsage": -5}}', "bad_message"),
        ('{"type": "resource_update", "deviceId": "v", "resources": {"memoryTotal": 1e30}}', "bad_message"),
        ('{"type": "resource_update", "deviceId": "v", "resources": {"cpuCores": "many"}}', "bad_message"),
        ('{"type": "register", "deviceId": ""}', "bad_message"),
        ('{"type": "heartbeat", "deviceId": "somebody-else"}', "forbidden"),
        ('{"type": "register", "deviceId": "again"}', "already_registered"),
        ("\"just a string\"", "bad_message"),
    ],
)
async def test_bad_messages_get_a_clear_error_and_the_session_survives(raw_client, frame, code) -> None:
    victim = await registered(raw_client, "v")
    await victim.send(frame)
    error = await victim.receive_type("error")
    assert error["code"] == code
    assert error["message"]
    # The same connection still works afterwards.
    await victim.send({"type": "resource_request", "deviceId": "v", "requirements": {"cpu": 1}})
    assert (await victim.receive_type("resource_allocation"))["allocation"]["requestingDevice"] == "v"


async def test_messages_before_register_are_refused(raw_client) -> None:
    client = await raw_client()
    await client.send({"type": "heartbeat", "deviceId": "x"})
    assert (await client.receive_type("error"))["code"] == "not_registered"


async def test_an_oversized_frame_closes_with_1009_and_others_are_unaffected(pool, raw_client) -> None:
    bystander = await registered(raw_client, "bystander")
    attacker = await raw_client()
    with pytest.raises(ConnectionClosed) as closed:
        await attacker.send("x" * (MAX_CONTROL_MESSAGE + 128 * 1024))
        await attacker.receive(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await bystander.send({"type": "heartbeat", "deviceId": "bystander"})
    await bystander.send({"type": "resource_request", "deviceId": "bystander", "requirements": {}})
    assert (await bystander.receive_type("resource_allocation"))["type"] == "resource_allocation"


async def test_binary_garbage_is_refused(raw_client) -> None:
    client = await registered(raw_client, "b")
    await client.send(b"\x00\xff\xfe garbage")
    assert (await client.receive_type("error"))["code"] == "bad_message"


async def test_a_flood_of_errors_ends_in_a_policy_close(pool, raw_client) -> None:
    client = await raw_client()
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(pool.coordinator.config.max_errors_per_session + 5):
            await client.send("nope")
        while True:
            await client.receive(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_connection_that_never_introduces_itself_is_dropped(pool) -> None:
    pool.legacy_server.handshake_timeout = 0.3
    async with connect(f"ws://127.0.0.1:{pool.legacy_server.port}/ws", proxy=None) as silent:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(silent.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
message_types = st.sampled_from(
    ["register", "heartbeat", "resource_update", "resource_request", "task_submit", "hello", "x", ""]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=message_types, fields=st.dictionaries(st.sampled_from(["deviceId", "resources", "requirements", "task", "protocol", "role", "deviceName"]), json_values, max_size=4))
async def test_fuzzed_messages_never_take_the_coordinator_down(pool, kind, fields) -> None:
    url = f"ws://127.0.0.1:{pool.legacy_server.port}/ws"
    async with connect(url, proxy=None) as fuzzer:
        await fuzzer.send(json.dumps({"type": kind, **fields}, allow_nan=True))
        try:
            reply = json.loads(await asyncio.wait_for(fuzzer.recv(), 2))
            assert isinstance(reply, dict) and "type" in reply
        except (TimeoutError, ConnectionClosed):
            pass  # a heartbeat needs no answer; a bad protocol version is closed
    async with connect(url, proxy=None) as probe:
        await probe.send(json.dumps({"type": "register", "deviceId": "probe", "deviceName": "p", "platform": "linux"}))
        reply = json.loads(await asyncio.wait_for(probe.recv(), 5))
        assert reply["type"] == "devices"


async def test_too_many_silent_connections_from_one_address_are_refused(pool) -> None:
    from websockets.exceptions import InvalidMessage

    pool.legacy_server.max_waiting_per_address = 3
    url = f"ws://127.0.0.1:{pool.legacy_server.port}/ws"
    silent = [await connect(url, proxy=None) for _ in range(3)]
    try:
        # Counted at accept: the fourth socket is dropped before it gets any HTTP answer.
        with pytest.raises(InvalidMessage):
            await connect(url, proxy=None)
        # Once one of them introduces itself, a new connection is accepted again.
        await silent[0].send(json.dumps({"type": "register", "deviceId": "ok", "deviceName": "ok", "platform": "linux"}))
        json.loads(await asyncio.wait_for(silent[0].recv(), 5))
        async with connect(url, proxy=None):
            pass
    finally:
        for connection in silent:
            await connection.close()


async def test_reports_sent_right_behind_register_are_handled_after_it(pool, raw_client) -> None:
    """Reports are handled the moment they arrive, but never ahead of the register still
    being answered: they wait their turn and are not refused as unregistered."""
    register = pool.coordinator._handlers[Register]

    async def slow_register(session, message) -> None:
        await asyncio.sleep(0.2)  # as a PoolNet hello waits while it is authenticated
        await register(session, message)

    pool.coordinator.add_handler(Register, slow_register)
    client = await raw_client()
    frames = [json.dumps({"type": "register", "deviceId": "eager", "deviceName": "E", "platform": "linux"})]
    frames += [json.dumps({"type": "resource_update", "deviceId": "eager", "resources": seed_resources(cpuCores=n)})
               for n in range(1, 21)]
    for frame in frames:  # back to back: nothing waits for the host's answer
        await client.connection.send(frame)
    await client.receive_type("devices")
    async with asyncio.timeout(5):
        while (device := pool.coordinator.registry.get("eager")).resources.cpu_cores != 20:
            await asyncio.sleep(0.02)
    assert device.online
    with pytest.raises(TimeoutError):
        await client.receive_type("error", timeout=0.3)


async def test_an_introduction_still_being_answered_is_not_cut_off_by_the_deadline(pool, raw_client) -> None:
    """The deadline is for peers that say nothing; a hello waiting for its answer (a person's
    approval, say) is given the time it takes."""
    register = pool.coordinator._handlers[Register]

    async def slow_register(session, message) -> None:
        await asyncio.sleep(0.8)
        await register(session, message)

    pool.coordinator.add_handler(Register, slow_register)
    pool.legacy_server.handshake_timeout = 0.3
    client = await raw_client()
    await client.send({"type": "register", "deviceId": "patient", "deviceName": "P", "platform": "linux"})
    await client.receive_type("devices")
    await client.send({"type": "heartbeat", "deviceId": "patient"})
    await asyncio.sleep(0.5)
    assert pool.coordinator.registry.get("patient").online
