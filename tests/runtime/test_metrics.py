"""``/metrics``: the Prometheus text the coordinator serves, read back from a live pool."""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
import urllib.request
from pathlib import Path

from poolnet_desktop.runtime.host.metrics import BUCKETS, Histogram, LoopLagSampler, parse_samples
from poolnet_desktop.runtime.host.rest import read_rest_token
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.conftest import seed_resources
from tests.runtime.test_task_pool import members, submit_manifest, wait_for  # noqa: F401 (fixtures)


def scrape(port: int, data_dir: Path) -> tuple[str, str]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    token = read_rest_token(data_dir)
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    histogram = Histogram()
    for seconds in (0.00005, 0.003, 0.003, 10.0):
        histogram.observe(seconds)
    found = parse_samples("\n".join(histogram.lines("x", 'type="t"')))
    assert found['x_bucket{type="t",le="0.0001"}'] == 1
    assert found['x_bucket{type="t",le="0.005"}'] == 3
    assert found['x_bucket{type="t",le="5.0"}'] == 3
    assert found['x_bucket{type="t",le="+Inf"}'] == 4
    assert found['x_count{type="t"}'] == 4
    assert abs(found['x_sum{type="t"}'] - 10.00605) < 1e-6
    assert len([k for k in found if k.startswith("x_bucket")]) == len(BUCKETS) + 1


async def test_loop_lag_sampler_sees_a_blocked_loop() -> None:
    sampler = LoopLagSampler(interval=0.01)
    sampler.start()
    await asyncio.sleep(0.05)
    time.sleep(0.1)  # block the loop on purpose: the next wake-up is late by about this much
    await asyncio.sleep(0.05)
    await sampler.stop()
    await sampler.stop()  # safe twice
    assert sampler.maximum >= 0.05
    assert sampler.histogram.count >= 2


async def test_metrics_report_devices_sessions_messages_and_dispatch(pool, raw_client) -> None:
    member = await raw_client()
    await member.send({"type": "register", "deviceId": "m1", "deviceName": "M1", "platform": "linux"})
    await member.receive_type("devices")
    await member.send({"type": "resource_update", "deviceId": "m1", "resources": seed_resources(cpuUsage=5)})
    await member.send({"type": "heartbeat", "deviceId": "m1"})
    await asyncio.sleep(0.3)
    gc.collect()

    content_type, text = await asyncio.to_thread(scrape, pool.server.port, pool.options.data_dir)
    assert content_type.startswith("text/plain; version=0.0.4")
    found = parse_samples(text)
    assert found["poolnet_devices_online"] == 1
    assert found["poolnet_devices_known"] == 1
    assert found['poolnet_sessions{dialect="seed",role="member"}'] == 1
    assert found["poolnet_messages_received_total"] >= 3
    assert found['poolnet_dispatch_seconds_count{type="resource_update"}'] == 1
    assert found['poolnet_dispatch_seconds_count{type="register"}'] == 1
    assert found["poolnet_event_loop_lag_seconds_count"] >= 1
    assert found["process_resident_memory_bytes"] > 0
    assert found['python_gc_collections_total{generation="2"}'] >= 1
    assert "# TYPE poolnet_shards gauge" in text and "# TYPE poolnet_tasks gauge" in text
    assert text.endswith("\n")


@linux_only(SANDBOXED_SHARDS)
async def test_metrics_count_the_pools_shards_by_state(pool, members, client, tmp_path: Path) -> None:
    done = await submit_manifest(client, tmp_path / "quick", 'command = ["true"]\nshards = 2\n')
    await client.wait(done)
    slow = await submit_manifest(client, tmp_path / "slow", 'command = ["sleep", "60"]\nshards = 5\n[resources]\ncpu = 1\n')
    task = pool.tasks.tasks[slow]
    await wait_for(lambda: sum(s.state == "running" for s in task.shards) == 2)

    _, text = await asyncio.to_thread(scrape, pool.server.port, pool.options.data_dir)
    found = parse_samples(text)
    assert found['poolnet_shards{state="succeeded"}'] == 2
    assert found['poolnet_shards{state="running"}'] == 2
    assert found.get('poolnet_shards{state="queued"}', 0) + found.get('poolnet_shards{state="assigned"}', 0) == 3

    await client.cancel(slow)
    await wait_for(lambda: task.state.value == "cancelled")
    found = parse_samples((await asyncio.to_thread(scrape, pool.server.port, pool.options.data_dir))[1])
    assert found['poolnet_shards{state="cancelled"}'] == 5 and found['poolnet_shards{state="succeeded"}'] == 2
    assert not any(f'state="{state}"' in key for key in found for state in ("queued", "assigned", "running"))
    await client.forget(done)  # a forgotten task's shards are no longer counted
    found = parse_samples((await asyncio.to_thread(scrape, pool.server.port, pool.options.data_dir))[1])
    assert 'poolnet_shards{state="succeeded"}' not in found and found['poolnet_shards{state="cancelled"}'] == 5
