"""The seed's REST paths, their field names and units, on the WebSocket's port."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from tests.runtime.conftest import seed_resources


def get(port: int, path: str) -> tuple[int, dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


async def rest(port: int, path: str) -> tuple[int, dict]:
    return await asyncio.to_thread(get, port, path)


async def test_rest_paths_use_the_seeds_fields_and_units(pool, raw_client) -> None:
    client = await raw_client()
    await client.send({"type": "register", "deviceId": "d1", "deviceName": "One", "platform": "windows"})
    await client.receive_type("devices")
    await client.send(
        {"type": "resource_update", "deviceId": "d1", "resources": seed_resources(hasGPU=True, gpuName="RTX 4090")}
    )
    await asyncio.sleep(0.2)
    port = pool.legacy_server.port

    status, root = await rest(port, "/")
    assert status == 200
    assert {"service", "version", "devices", "status"} <= root.keys()
    assert root["devices"] == 1 and root["status"] == "running"

    status, body = await rest(port, "/api/devices")
    assert status == 200
    (device,) = body["devices"]
    assert {"id", "name", "platform", "ipAddress", "lastSeen", "isOnline", "resources"} <= device.keys()
    assert device["resources"]["memoryTotal"] == 16384
    assert device["resources"]["gpuName"] == "RTX 4090"

    status, body = await rest(port, "/api/resources")
    pool_totals = body["pool"]
    assert {"totalCpuAvailable", "totalCpuCores", "totalMemoryAvailable", "totalStorageAvailable", "totalGPUs", "devices"} <= pool_totals.keys()
    assert pool_totals["totalCpuCores"] == 8
    assert pool_totals["totalMemoryAvailable"] == 12288
    assert pool_totals["totalStorageAvailable"] == 400000
    assert pool_totals["totalGPUs"] == 1
    assert pool_totals["devices"] == 1

    status, stats = await rest(port, "/api/stats")
    assert status == 200
    assert stats["devices"] == 1
    assert stats["resources"]["totalCpuCores"] == 8
    assert isinstance(stats["uptime"], float) and stats["uptime"] >= 0


@pytest.mark.parametrize("path", ["/api/nothing", "/ws/extra", "/%2e%2e/etc/passwd"])
async def test_unknown_paths_get_the_seeds_error_shape(pool, path) -> None:
    status, body = await rest(pool.legacy_server.port, path)
    assert status == 404
    assert body["code"] == 404 and body["error"]
