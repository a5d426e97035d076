"""Tasks end to end inside one process: a real pool host, two real members, real shards.

Everything is real (TLS WebSockets on 127.0.0.1, subprocesses, SQLite, files); waits are
bounded polls, never sleeps that assume a speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poolnet_desktop.core.protocol import ProtocolError
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.discovery import DiscoverySettings
from poolnet_desktop.runtime.link import open_link
from poolnet_desktop.runtime.node import Member, MemberOptions, PoolHost
from poolnet_desktop.runtime.task_client import TaskClient
from poolnet_desktop.runtime.task_files import load_task
from tests.runtime.conftest import PAIRING_CODE


async def wait_for(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.fixture
async def members(pool: PoolHost, tmp_path: Path) -> AsyncIterator[list[Member]]:
    """Two members of ``pool``, each with its own data folder, ready for shards."""
    started = []
    for name in ("alpha", "beta"):
        member = Member(MemberOptions(
            url=pool.local_url, data_dir=resolve_data_dir(tmp_path / name), name=name,
            code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
        ))
        started.append((member, asyncio.create_task(member.run())))
    ready = pool.tasks._members
    await wait_for(lambda: all(m.agent.config.device_id in ready for m, _ in started))
    yield [m for m, _ in started]
    for member, running in started:
        await member.stop()
        await running


@pytest.fixture
async def client(pool: PoolHost) -> AsyncIterator[TaskClient]:
    """The host owner's own task client (its identity is trusted without pairing)."""
    link = await open_link(pool.local_url, pool.options.data_dir)
    yield TaskClient(link)
    await link.close()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


async def test_twenty_shards_run_on_both_members_and_every_output_comes_back(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    task_dir = tmp_path / "job"
    write(task_dir, "data/words.txt", "alpha beta gamma delta\n" * 50)
    write(task_dir, "shard.py", """
        import os, pathlib, sys
        shard, shards = int(sys.argv[1]), int(sys.argv[2])
        words = pathlib.Path("data/words.txt").read_text().split()
        out = pathlib.Path("out"); out.mkdir()
        (out / f"part-{shard}.txt").write_text(" ".join(words[shard::shards]) + f" {os.environ['POOLNET_SHARD']}\\n")
        print(f"shard {shard} done")
    """)
    write(task_dir, "job.pool.toml", """
        name = "split words"
        command = ["{python}", "shard.py", "{shard}", "{shards}"]
        shards = 20
        files = ["shard.py", "data"]
        outputs = ["out/*.txt"]
        [resources]
        cpu = 0.5
    """)
    loaded = await asyncio.to_thread(load_task, task_dir)
    task_id = await client.submit(loaded)
    summary = await client.wait(task_id)
    assert (summary.state, summary.succeeded, summary.total) == ("succeeded", 20, 20)

    results = await client.fetch_results(task_id, tmp_path / "results")
    words = (task_dir / "data/words.txt").read_text().split()
    for shard in range(20):
        got = (results / str(shard) / "out" / f"part-{shard}.txt").read_bytes()
        assert got == (" ".join(words[shard::20]) + f" {shard}\n").encode()
    task = pool.tasks.tasks[task_id]
    assert {s.device_id for s in task.shards} == {m.agent.config.device_id for m in members}
    # Each member fetched each input once, however many shards it ran.
    for member in members:
        cached = sorted(p.name for p in (member.options.data_dir / "cache").iterdir())
        assert cached == sorted({e.sha256 for e in loaded.spec.files})

    lines: list[str] = []
    await client.logs(task_id, lambda out: lines.append(out.data), shard=7)
    assert "".join(lines) == "shard 7 done\n"
