"""A malicious member, as it would act: a real paired member connection (TLS, key, code) that
claims, finishes, logs and uploads attempts it was never given. The coordinator must take
reports on an attempt only from the device it placed that attempt on, check a result transfer
before it writes a byte, and leave no partial file behind.

Honest members are real (``poolnet join`` subprocesses running real shards); the attacker
speaks the protocol directly through ``open_link``."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest

from poolnet_desktop.core.manifest import FileEntry
from poolnet_desktop.core.protocol import Error, Heartbeat, ProtocolError
from poolnet_desktop.core.resources import Resources
from poolnet_desktop.core.task_protocol import (
    AssignShards,
    FetchBlobs,
    FinishedShard,
    ShardAck,
    ShardOutput,
    ShardRef,
    ShardResult,
    ShardsFinished,
    ShardsReport,
    ShardStarted,
    result_transfer_id,
)
from poolnet_desktop.core.tasks import SubmitQuota
from poolnet_desktop.core.transfer import ChunkHeader, IncomingLimits, encode_chunk
from poolnet_desktop.runtime.client.link import PoolLink, open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.security.identity import Identity
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_task_pool import join_subprocess, submit_manifest, wait_for

pytestmark = linux_only(SANDBOXED_SHARDS)

FORGED = b"forged by mallory\n"
# What a member that lends a few cores and some disk reports about itself.
LENDER = Resources(cpu_cores=4, memory_total=8192, memory_available=8192,
                   storage_total=100_000, storage_available=100_000)



@asynccontextmanager
async def mallory(
    pool: PoolHost, folder: Path, resources: Resources = Resources(),
    running: list[ShardRef] | None = None,
) -> AsyncIterator[tuple[PoolLink, str]]:
    """A member paired with the pool's code that reports ``running`` as its own attempts and
    shares ``resources`` (none by default: nothing is placed on it honestly)."""
    link = await open_link(pool.local_url, folder, role="member", name="mallory",
                           code=PAIRING_CODE)
    device_id = Identity.load_or_create(folder).device_id

    async def heartbeats() -> None:
        while True:
            await link.send(Heartbeat(device_id=device_id))
            await asyncio.sleep(0.3)

    beating = asyncio.create_task(heartbeats())
    await link.send(ShardsReport(running=running or [], spooled=[], resources=resources))
    try:
        yield link, device_id
    finally:
        beating.cancel()
        with suppress(asyncio.CancelledError):
            await beating
        await link.close()


def entry(path: str, data: bytes) -> FileEntry:
    return FileEntry(path, len(data), hashlib.sha256(data).hexdigest())


def success(*outputs: FileEntry) -> ShardResult:
    return ShardResult(reason="succeeded", exit_code=0, started=1.0, ended=2.0,
                       outputs=list(outputs))


async def send_file(link: PoolLink, ref: ShardRef, file: FileEntry, data: bytes) -> None:
    """One chunk of an output file, as a member's transfer sends it."""
    transfer = result_transfer_id(ref.task_id, ref.shard, ref.attempt)
    header = ChunkHeader(transfer_id=transfer, path=file.path, offset=0, size=file.size,
                         sha256=file.sha256, last=len(data) == file.size)
    await link.send_bytes(encode_chunk(header, data))


async def refused(link: PoolLink) -> str:
    """The error the pool answers next (an ``ack`` instead means it took the claim)."""
    with pytest.raises(ProtocolError) as error:
        await asyncio.wait_for(link.expect(ShardAck), 10)
    return error.value.code


@asynccontextmanager
async def honest_members(pool: PoolHost, tmp_path: Path, count: int) -> AsyncIterator[list]:
    joiners = [join_subprocess(pool, tmp_path / f"honest{n}", f"honest{n}") for n in range(count)]
    try:
        await wait_for(lambda: len(pool.tasks._members) == count)
        yield joiners
    finally:
        for process in joiners:
            if process.poll() is None:
                process.terminate()
            process.communicate()


async def test_a_member_cannot_adopt_a_queued_shard_and_hand_back_a_forged_file(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    async with honest_members(pool, tmp_path, 1):
        # One honest member lending 1.6 cores runs one shard and holds one ahead: the others wait.
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = "sleep 60"
            shell = true
            shards = 4
            outputs = ["out.txt"]
            [resources]
            cpu = 1
        """)
        task = pool.tasks.tasks[task_id]
        await wait_for(lambda: task.count("assigned") + task.count("running") == 2)
        waiting = next(s.index for s in task.shards if s.state == "queued")
        placed = next(s for s in task.shards if s.state in ("assigned", "running"))
        claims = [ShardRef(task_id, waiting, 1), ShardRef(task_id, placed.index, placed.attempt)]
        async with mallory(pool, tmp_path / "mallory", running=claims) as (link, _):
            forged = entry("out.txt", FORGED)
            await link.send(ShardsFinished(results=[FinishedShard(ref, success(forged))
                                                    for ref in claims]))
            for ref in claims:
                await send_file(link, ref, forged, FORGED)
            assert await refused(link) == "forbidden"
        assert task.shards[waiting].state == "queued" and task.shards[waiting].attempt == 0
        assert task.shards[placed.index].state in ("assigned", "running")
        await client.cancel(task_id)
        await client.wait(task_id)
        results = await client.fetch_results(task_id, tmp_path / "results")
        assert not [p for p in results.rglob("*") if p.is_file() and p.read_bytes() == FORGED]
        assert not [p for p in pool.options.data_dir.rglob("*")
                    if p.is_file() and FORGED in p.read_bytes()]


async def test_a_member_cannot_finish_another_members_attempt_old_or_current(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    async with honest_members(pool, tmp_path, 2) as joiners:
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = "sleep 60"
            shell = true
            [resources]
            cpu = 1
        """)
        shard = pool.tasks.tasks[task_id].shards[0]
        await wait_for(lambda: shard.state == "running")
        first = shard.device_id
        # The member running attempt 1 vanishes; attempt 2 runs on the other one.
        doomed = next(p for p in joiners
                      if Identity.load_or_create(Path(p.args[-1])).device_id == first)
        doomed.kill()
        doomed.wait()
        await wait_for(lambda: shard.attempt == 2 and shard.state == "running")
        async with mallory(pool, tmp_path / "mallory") as (link, _):
            for attempt in (1, 2):  # the old attempt (a late success) and the current one
                ref = ShardRef(task_id, 0, attempt)
                await link.send(ShardsFinished(results=[FinishedShard(ref, success())]))
                assert await refused(link) == "forbidden"
        assert shard.state == "running" and shard.reported == set()
        assert (task_id, 0) not in pool.tasks.recorded
        await client.cancel(task_id)


async def test_a_member_cannot_start_or_write_logs_for_attempts_it_never_ran(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    async with honest_members(pool, tmp_path, 1):
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = "sleep 60"
            shell = true
            shards = 3
            [resources]
            cpu = 1
        """)
        task = pool.tasks.tasks[task_id]
        await wait_for(lambda: task.count("running") == 1)
        running = next(s for s in task.shards if s.state == "running")
        queued = next(s for s in task.shards if s.state == "queued")
        async with mallory(pool, tmp_path / "mallory") as (link, _):
            for ref in (ShardRef(task_id, running.index, running.attempt),
                        ShardRef(task_id, queued.index, 1), ShardRef(task_id, running.index, 9)):
                await link.send(ShardStarted(shard=ref))
                assert await refused(link) == "forbidden"
                await link.send(ShardOutput(shard=ref, stream="stdout", data="PWNED\n"))
                assert await refused(link) == "forbidden"
        await pool.tasks.store_or_fail().committed()
        logs = await asyncio.to_thread(pool.tasks.store_or_fail().logs, task_id)
        assert not [record for record in logs if "PWNED" in record.data]
        assert queued.state == "queued"
        await client.cancel(task_id)


async def assigned_to(link: PoolLink, count: int) -> dict[int, int]:
    """The attempts placed on this member, ``{shard: attempt}``, once ``count`` arrived."""
    mine: dict[int, int] = {}
    while len(mine) < count:
        assigned = await asyncio.wait_for(link.expect(AssignShards), 10)
        mine |= {item.shard: item.attempt for item in assigned.items}
    return mine


async def test_result_transfers_beyond_their_attempt_or_storage_write_nothing_and_leave_nothing(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    incoming = pool.options.data_dir / "tasks" / "incoming"

    def partial_files() -> list[Path]:
        return [p for p in pool.options.data_dir.rglob("*") if p.is_file()
                and (p.is_relative_to(incoming) or p.name.endswith(".part"))]

    async with mallory(pool, tmp_path / "mallory", LENDER) as (link, device_id):
        await wait_for(lambda: device_id in pool.tasks._members)
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = ["true"]
            shards = 2
            outputs = ["out.bin"]
            [resources]
            cpu = 1
            storage = "1 MiB"
        """)
        mine = await assigned_to(link, 2)
        chunk = b"x" * (256 * 1024)
        # A made-up attempt of a real shard, announcing a file of 8 GiB.
        made_up = ShardRef(task_id, 0, 7)
        huge = FileEntry("out.bin", 8 * 1024**3, hashlib.sha256(b"").hexdigest())
        await link.send(ShardsFinished(results=[FinishedShard(made_up, success(huge))]))
        await send_file(link, made_up, huge, chunk)
        assert await refused(link) == "forbidden"  # the result
        assert await refused(link) == "forbidden"  # its chunk: no such transfer
        # Its own attempt, announcing 2 MiB where the task asked for 1 MiB of storage.
        own = ShardRef(task_id, 0, mine[0])
        big = FileEntry("out.bin", 2 * 1024 * 1024, hashlib.sha256(b"").hexdigest())
        await link.send(ShardsFinished(results=[FinishedShard(own, success(big))]))
        await send_file(link, own, big, chunk)
        await asyncio.wait_for(link.expect(ShardAck), 10)  # recorded, as a failure
        assert partial_files() == []
        # An honest-sized transfer it leaves half sent.
        half = ShardRef(task_id, 1, mine[1])
        small = FileEntry("out.bin", 512 * 1024, hashlib.sha256(b"").hexdigest())
        await link.send(ShardsFinished(results=[FinishedShard(half, success(small))]))
        await send_file(link, half, small, chunk)
        await wait_for(lambda: partial_files() != [])
    await wait_for(lambda: partial_files() == [])
    # Its own attempt failed on its outputs (and is retried); nothing of it was kept.
    assert "outputs were refused" in pool.tasks.recorded[(task_id, 0)].message
    assert not (pool.tasks.results / task_id / "0").exists()


async def test_a_submitter_past_its_quota_is_refused_and_others_are_not(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    pool.tasks.config.quota = SubmitQuota(max_tasks=2, max_shards=5)
    async with honest_members(pool, tmp_path, 1):
        body = 'command = "sleep 60"\nshell = true\nshards = 2\n[resources]\ncpu = 1\n'
        first = await submit_manifest(client, tmp_path / "one", body)
        await submit_manifest(client, tmp_path / "two", body)
        with pytest.raises(ProtocolError) as refused_task:
            await submit_manifest(client, tmp_path / "three", body)
        assert refused_task.value.code == "forbidden"
        assert "2 tasks held" in refused_task.value.message
        await client.cancel(first)
        await client.wait(first)
        with pytest.raises(ProtocolError) as refused_shards:
            await submit_manifest(client, tmp_path / "four", body.replace("shards = 2", "shards = 4"))
        assert "shards held" in refused_shards.value.message
        await submit_manifest(client, tmp_path / "five", body)  # an ended task holds nothing
        assert len(pool.tasks.tasks) == 3


async def test_result_bytes_in_flight_are_capped_per_member_and_by_the_hosts_free_disk(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    mib = 1024 * 1024
    pool.tasks.config.incoming = IncomingLimits(per_member=mib, total=1024 * mib, disk_margin=0)
    async with mallory(pool, tmp_path / "mallory", LENDER) as (link, device_id):
        await wait_for(lambda: device_id in pool.tasks._members)
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = ["true"]
            shards = 3
            outputs = ["out.bin"]
            [resources]
            cpu = 1
        """)
        mine = await assigned_to(link, 3)
        refs = [ShardRef(task_id, shard, attempt) for shard, attempt in sorted(mine.items())]
        big = FileEntry("out.bin", 768 * 1024, hashlib.sha256(b"").hexdigest())
        await link.send(ShardsFinished(results=[FinishedShard(refs[0], success(big))]))
        await send_file(link, refs[0], big, b"x" * (256 * 1024))  # still arriving
        await link.send(ShardsFinished(results=[FinishedShard(refs[1], success(big))]))
        await asyncio.wait_for(link.expect(ShardAck), 10)
        assert "this member already sends" in pool.tasks.recorded[(task_id, 1)].message
        free = (await asyncio.to_thread(shutil.disk_usage, pool.options.data_dir)).free
        pool.tasks.config.incoming = IncomingLimits(
            per_member=1024 * mib, total=1024 * mib, disk_margin=free
        )
        small = FileEntry("out.bin", 1024, hashlib.sha256(b"").hexdigest())
        await link.send(ShardsFinished(results=[FinishedShard(refs[2], success(small))]))
        await asyncio.wait_for(link.expect(ShardAck), 10)
        assert "disk is short" in pool.tasks.recorded[(task_id, 2)].message
        incoming = pool.options.data_dir / "tasks" / "incoming"
        written = {p.parent.name for p in incoming.rglob("*") if p.is_file()}
        assert written == {result_transfer_id(task_id, 0, mine[0])}


async def test_a_member_cannot_fetch_the_inputs_of_a_task_not_placed_on_it(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    """Input files are their submitter's data: a member gets those of its own shards only,
    whatever hash it knows (from a task it ran before, or a guess at a file's content)."""
    secret = b"the submitter's private input\n"
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "secret.txt").write_bytes(secret)
    sha = hashlib.sha256(secret).hexdigest()
    async with honest_members(pool, tmp_path, 1):
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = "sleep 60"
            shell = true
            files = ["secret.txt"]
        """)
        task = pool.tasks.tasks[task_id]
        await wait_for(lambda: task.count("running") == 1)  # on the honest member, not on mallory
        async with mallory(pool, tmp_path / "mallory") as (link, _):
            await link.send(FetchBlobs(sha256=[sha]))
            async with asyncio.timeout(10):
                while not isinstance(answer := await link.recv(), Error):
                    assert not isinstance(answer, bytes), "a chunk of the secret came back"
            assert answer.code == "forbidden"
        await client.cancel(task_id)
