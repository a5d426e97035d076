"""Sweeps and platform matching end to end: a real pool host and two real members on
127.0.0.1 running a ``[matrix]`` task, each shard seeing its own values; a task no member's
platform can run refused at submission; and followers of a running task (``poolnet run``)
getting its output exactly once."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from poolnet_desktop.core.protocol import ProtocolError
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_task_pool import members, submit_manifest, write  # noqa: F401 (fixtures)


async def test_a_matrix_runs_one_shard_per_combination_each_seeing_its_values(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path  # noqa: F811
) -> None:
    task_dir = tmp_path / "sweep"
    write(task_dir, "probe.py", """
        import json, os, pathlib, sys
        out = pathlib.Path("out"); out.mkdir()
        params = {k: v for k, v in os.environ.items() if k.startswith("POOLNET_PARAM_")}
        (out / "seen.json").write_text(json.dumps({"argv": sys.argv[1:], "env": params}))
    """)
    task_id = await submit_manifest(client, task_dir, """
        command = ["{python}", "probe.py", "{rate}", "{seed}", "{label}", "{shard}"]
        files = ["probe.py"]
        outputs = ["out/*.json"]
        [matrix]
        rate = [0.1, 0.2, 0.4]
        seed = [1, 2]
        label = ["a b"]
        [resources]
        cpu = 0.5
    """)
    summary = await client.wait(task_id)
    assert (summary.state, summary.succeeded, summary.total) == ("succeeded", 6, 6)

    results = await client.fetch_results(task_id, tmp_path / "results")
    combinations = list(itertools.product(("0.1", "0.2", "0.4"), ("1", "2")))
    for shard, (rate, seed) in enumerate(combinations):
        seen = json.loads((results / str(shard) / "out" / "seen.json").read_text())
        assert seen["argv"] == [rate, seed, "a b", str(shard)]
        assert seen["env"] == {
            "POOLNET_PARAM_RATE": rate, "POOLNET_PARAM_SEED": seed, "POOLNET_PARAM_LABEL": "a b"
        }
    # Both members ran some: the values came from each member's own derivation.
    task = pool.tasks.tasks[task_id]
    assert {s.device_id for s in task.shards} == {m.agent.config.device_id for m in members}

    listed = await client.shards(task_id)
    assert [s.values for s in listed] == [
        {"rate": float(rate), "seed": int(seed), "label": "a b"} for rate, seed in combinations
    ]


async def test_a_task_no_member_platform_runs_is_refused_as_unfit_with_the_reason(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path  # noqa: F811
) -> None:
    with pytest.raises(ProtocolError) as refused:
        await submit_manifest(client, tmp_path / "bat", 'command = ["cmd", "/c", "build.bat"]\n')
    assert refused.value.code == "unfit"
    assert refused.value.message == (
        "task 'job' refused: it runs on windows (a cmd command) only, and no member does "
        "(members' platforms: linux)"
    )
    with pytest.raises(ProtocolError) as listed:
        await submit_manifest(client, tmp_path / "mac", 'command = ["true"]\nplatform = ["macos"]\n')
    assert "it runs on macos (its manifest's platform list) only" in listed.value.message
    assert pool.tasks.tasks == {}
    # The same pool runs a task meant for it.
    task_id = await submit_manifest(client, tmp_path / "lin", 'command = ["true"]\nplatform = ["linux"]\n')
    assert (await client.wait(task_id)).state == "succeeded"


async def test_a_shell_command_reads_its_value_from_the_variable(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path  # noqa: F811
) -> None:
    task_id = await submit_manifest(client, tmp_path / "sh", """
        command = ["sh", "-c", "echo n=$POOLNET_PARAM_N"]
        [matrix]
        n = [1, 2, 3]
    """)
    assert (await client.wait(task_id)).succeeded == 3
    lines: list[str] = []
    await client.logs(task_id, lambda out: lines.append(out.data), shard=2)
    assert "".join(lines) == "n=3\n"


async def test_followers_joining_mid_run_get_every_output_record_exactly_once(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path  # noqa: F811
) -> None:
    """Watchers that join while a shard prints (as ``poolnet run`` and ``logs --follow``
    do) each see its whole output once and in order: what arrives while their history is
    read is neither lost nor sent twice."""
    task_id = await submit_manifest(client, tmp_path / "talk", """
        command = ["{python}", "-c", "import time\\nfor i in range(150):\\n    print(i, flush=True); time.sleep(0.004)"]
    """)

    async def follow() -> str:
        chunks: list[str] = []
        link = await open_link(pool.local_url, pool.options.data_dir)
        try:
            await TaskClient(link).logs(task_id, lambda out: chunks.append(out.data), follow=True)
        finally:
            await link.close()
        return "".join(chunks)

    followers = []
    for _ in range(8):
        followers.append(asyncio.create_task(follow()))
        await asyncio.sleep(0.06)
    expected = "".join(f"{i}\n" for i in range(150))
    assert await asyncio.gather(*followers) == [expected] * 8


async def test_a_restarted_host_still_sends_a_finished_tasks_whole_output(tmp_path: Path) -> None:
    """The records counted for watchers start from what the store holds, not from zero."""
    options = HostOptions(
        data_dir=resolve_data_dir(tmp_path / "host"), bind="127.0.0.1", port=0,
        batch_interval=0.1, pairing_code=PAIRING_CODE, legacy_port=0,
        discovery=DiscoverySettings(enabled=False),
    )
    first = PoolHost(options)
    await first.start()
    member = Member(MemberOptions(
        url=first.local_url, data_dir=resolve_data_dir(tmp_path / "m"), name="m",
        code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
    ))
    running = asyncio.create_task(member.run())
    try:
        async with asyncio.timeout(20):
            while member.agent.config.device_id not in first.tasks._members:
                await asyncio.sleep(0.05)
        async with await open_link(first.local_url, options.data_dir) as link:
            task_id = await submit_manifest(TaskClient(link), tmp_path / "say", """
                command = ["sh", "-c", "echo one; echo two >&2"]
            """)
            assert (await TaskClient(link).wait(task_id)).state == "succeeded"
    finally:
        await member.stop()
        await running
        await first.stop()
    second = PoolHost(options)
    await second.start()
    try:
        async with await open_link(second.local_url, options.data_dir) as link:
            seen: list[tuple[str, str]] = []
            await TaskClient(link).logs(task_id, lambda out: seen.append((out.stream, out.data)))
    finally:
        await second.stop()
    assert sorted(seen) == [("stderr", "two\n"), ("stdout", "one\n")]
