"""Least authority, attacked the way a paired device would: each device does only what its
permissions and its own tasks allow, and only the owner changes who is in the pool.

Everything is real: a pool host on 127.0.0.1 over TLS, devices paired with the code from their
own data folders, a member running real shards, the ``poolnet`` CLI as a subprocess.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poolnet_desktop.core.protocol import (
    AccessChanged,
    ApproveDevice,
    Forget,
    ListAccess,
    ProtocolError,
    RevokeDevice,
)
from poolnet_desktop.runtime.client.link import PoolLink, open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.client.task_files import load_task
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.member.agent import AgentState
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from poolnet_desktop.runtime.security.auth import AuthRefused
from tests.runtime.conftest import PAIRING_CODE


async def wait_for(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def new_member(url: str, data_dir: Path, code: str | None = PAIRING_CODE, **options) -> Member:
    return Member(MemberOptions(url=url, data_dir=resolve_data_dir(data_dir), code=code,
                                discovery=DiscoverySettings(enabled=False), **options))


@pytest.fixture
async def worker(pool: PoolHost, tmp_path: Path) -> AsyncIterator[Member]:
    """A member that runs the shards."""
    member = new_member(pool.local_url, tmp_path / "worker")
    running = asyncio.create_task(member.run())
    await wait_for(lambda: member.agent.config.device_id in pool.tasks._members)
    yield member
    await member.stop()
    await running


async def device_link(pool: PoolHost, folder: Path) -> PoolLink:
    """A device paired with the code, looking in as the CLI does (an observer)."""
    return await open_link(pool.local_url, resolve_data_dir(folder), code=PAIRING_CODE)


async def submit_job(client: TaskClient, folder: Path) -> str:
    folder.mkdir(parents=True)
    (folder / "job.pool.toml").write_text(textwrap.dedent("""
        name = "alices secret job"
        command = ["{python}", "-c", "import pathlib; pathlib.Path('out').mkdir(); pathlib.Path('out/r.txt').write_text('alice'); print('secret line')"]
        outputs = ["out/*.txt"]
        retries = 0
    """))
    return await client.submit(await asyncio.to_thread(load_task, folder))


async def refused(call) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await asyncio.wait_for(call, 10)
    return caught.value


async def test_another_device_cannot_cancel_retry_read_or_fetch_a_task_its_submitter_and_the_owner_can(
    pool: PoolHost, worker: Member, tmp_path: Path
) -> None:
    alice_link, bob_link = await device_link(pool, tmp_path / "alice"), await device_link(pool, tmp_path / "bob")
    owner_link = await open_link(pool.local_url, pool.options.data_dir)
    alice, bob, owner = TaskClient(alice_link), TaskClient(bob_link), TaskClient(owner_link)
    try:
        task_id = await submit_job(alice, tmp_path / "job")
        assert (await alice.wait(task_id)).state == "succeeded"

        # Bob, paired with the same code, goes after Alice's task.
        for attack in (bob.cancel(task_id), bob.retry(task_id), bob.logs(task_id, print),
                       bob.fetch_results(task_id, tmp_path / "stolen"), bob.wait(task_id),
                       bob.shards(task_id), bob.forget(task_id)):
            error = await refused(attack)
            assert error.code == "forbidden" and "submitter" in error.message
        assert not (tmp_path / "stolen").exists()
        # He sees that it exists, not where or how it ran.
        (seen,) = [t for t in await bob.list() if t.id == task_id]
        assert seen.state == "succeeded" and seen.devices is None and seen.device_count == 0

        # Alice and the owner can do all of it.
        for client in (alice, owner):
            lines: list[str] = []
            await client.logs(task_id, lambda out: lines.append(out.data))
            assert "".join(lines) == "secret line\n"
            folder = await client.fetch_results(task_id, tmp_path / f"results-{id(client)}")
            assert (folder / "0" / "out" / "r.txt").read_text() == "alice"
            (mine,) = [t for t in await client.list() if t.id == task_id]
            assert mine.devices == [worker.agent.config.device_id]
            assert [s.device_id for s in await client.shards(task_id)] == [worker.agent.config.device_id]
        assert (await alice.retry(task_id)).id == task_id
        assert (await owner.cancel(task_id)).id == task_id
    finally:
        for link in (alice_link, bob_link, owner_link):
            await link.close()


async def test_a_paired_device_cannot_forget_revoke_approve_or_change_permissions(
    pool: PoolHost, raw_client, tmp_path: Path
) -> None:
    victim = new_member(pool.local_url, tmp_path / "victim")
    running = asyncio.create_task(victim.run())
    await wait_for(lambda: victim.agent.state == AgentState.CONNECTED)
    victim_id = victim.identity.device_id
    await victim.stop()
    await running
    await wait_for(lambda: not pool.coordinator.registry.get(victim_id).online)
    stranger = asyncio.create_task(open_link(pool.local_url, resolve_data_dir(tmp_path / "stranger")))
    await wait_for(lambda: pool.access.pending())
    (waiting,) = pool.access.pending()

    mallory = await device_link(pool, tmp_path / "mallory")
    try:
        for attack in (
            Forget(device_id=victim_id),
            RevokeDevice(device_id=victim_id, reason="mine now"),
            ApproveDevice(device_id=waiting.device_id),
            ListAccess(),
        ):
            await mallory.send(attack)
            error = await refused(mallory.expect(AccessChanged))
            assert error.code == "forbidden" and "owner" in error.message, attack
        from poolnet_desktop.core.protocol import SetPermissions  # new with permissions

        await mallory.send(SetPermissions(device_id=victim_id, permission="submit", allow=False))
        error = await refused(mallory.expect(AccessChanged))
        assert error.code == "forbidden" and "owner" in error.message
        assert pool.coordinator.registry.get(victim_id) is not None  # not forgotten
        assert await pool.access.store.approved(victim_id) is not None  # not revoked
        assert [p.device_id for p in pool.access.pending()] == [waiting.device_id]  # still waiting
    finally:
        await mallory.close()
        pool.access.authenticator.deny(waiting.device_id)
        with pytest.raises(AuthRefused):
            await stranger


def poolnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "poolnet_desktop", *args], capture_output=True, text=True,
                          timeout=60)


async def test_a_device_whose_submit_permission_was_taken_away_cannot_submit(
    pool: PoolHost, worker: Member, tmp_path: Path
) -> None:
    link = await device_link(pool, tmp_path / "carol")
    carol = TaskClient(link)
    carol_id = link.welcome.device_id
    try:
        owner = ["--url", pool.local_url, "--data-dir", str(pool.options.data_dir)]
        listed = await asyncio.to_thread(poolnet, "devices", *owner)
        assert f"{carol_id}" in listed.stdout and "member, observer, submit" in listed.stdout
        taken = await asyncio.to_thread(poolnet, "devices", "withdraw", carol_id, "submit", *owner)
        assert taken.returncode == 0 and "submit taken away" in taken.stdout, taken.stderr
        assert "[member, observer]" in (await asyncio.to_thread(poolnet, "devices", *owner)).stdout

        # Her open link and a fresh one are both refused.
        error = await refused(submit_job(carol, tmp_path / "job1"))
        assert error.code == "forbidden" and "may not submit" in error.message
        async with await device_link(pool, tmp_path / "carol") as again:
            error = await refused(submit_job(TaskClient(again), tmp_path / "job2"))
            assert error.code == "forbidden"
        assert pool.tasks.tasks == {}

        # Her own CLI cannot give it back.
        regrant = await asyncio.to_thread(
            poolnet, "devices", "grant", carol_id, "submit", "--url", pool.local_url,
            "--data-dir", str(resolve_data_dir(tmp_path / "carol")),
        )
        assert regrant.returncode == 1 and "owner" in regrant.stderr and "Traceback" not in regrant.stderr
        assert (await pool.access.store.approved(carol_id)).permissions == {"member", "observer"}
    finally:
        await link.close()


async def test_an_observer_only_device_cannot_join_as_a_member_and_is_given_no_shards(
    pool: PoolHost, tmp_path: Path
) -> None:
    # Dave is let in by the owner's approval (no code): he may run work and watch, not submit.
    dave = new_member(pool.local_url, tmp_path / "dave", code=None)
    running = asyncio.create_task(dave.run())
    await wait_for(lambda: pool.access.pending())
    assert pool.access.authenticator.approve(dave.identity.device_id)
    await wait_for(lambda: dave.agent.state == AgentState.CONNECTED)
    dave_id = dave.identity.device_id
    assert (await pool.access.store.approved(dave_id)).permissions == {"member", "observer"}
    async with await open_link(pool.local_url, resolve_data_dir(tmp_path / "dave")) as link:
        error = await refused(submit_job(TaskClient(link), tmp_path / "job"))
        assert error.code == "forbidden"

    # The owner makes him an observer only: his member link is cut, and his rejoin refused.
    async with await open_link(pool.local_url, pool.options.data_dir) as owner:
        from poolnet_desktop.core.protocol import SetPermissions  # new with permissions

        await owner.send(SetPermissions(device_id=dave_id, permission="member", allow=False))
        assert (await asyncio.wait_for(owner.expect(AccessChanged), 10)).outcome == "member taken away"
    await wait_for(lambda: not pool.coordinator.registry.get(dave_id).online)
    await dave.stop()
    await running

    with pytest.raises(ProtocolError) as caught:
        await open_link(pool.local_url, resolve_data_dir(tmp_path / "dave"), role="member")
    assert caught.value.code == "forbidden" and "member" in caught.value.message
    # His member, started again, is refused for good and says why.
    again = new_member(pool.local_url, tmp_path / "dave", code=None)
    await asyncio.wait_for(again.run(), 20)
    assert again.agent.state == AgentState.REFUSED and "may not join as member" in again.agent.last_error
    assert not pool.coordinator.registry.get(dave_id).online
    assert dave_id not in pool.tasks._members
    # Watching is still his.
    async with await open_link(pool.local_url, resolve_data_dir(tmp_path / "dave")) as watching:
        assert watching.welcome.device_id == dave_id


async def test_after_a_new_identity_an_old_member_is_refused_and_pairs_again_with_the_code(tmp_path: Path) -> None:
    options = dict(bind="127.0.0.1", port=0, pairing_code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False))
    host_dir = resolve_data_dir(tmp_path / "host")
    host = PoolHost(HostOptions(data_dir=host_dir, **options))
    await host.start()
    old_owner = host.identity.device_id
    # A thief's copy of the host's folder (keys, trust store) and a member that paired.
    shutil.copytree(host_dir, tmp_path / "stolen")
    paired = new_member(host.local_url, tmp_path / "m")
    running = asyncio.create_task(paired.run())
    await wait_for(lambda: paired.agent.state == AgentState.CONNECTED)
    await paired.stop()
    await running
    await host.stop()

    rotated = PoolHost(HostOptions(data_dir=host_dir, new_identity=True, **options))
    await rotated.start()
    try:
        assert rotated.coordinator.config.pool_id == host.coordinator.config.pool_id
        assert rotated.identity.cert_fingerprint != host.identity.cert_fingerprint
        assert rotated.identity.device_id != old_owner
        # The old member is not silently accepted: it is told what happened and what to do.
        old = new_member(rotated.local_url, tmp_path / "m", code=None)
        trying = asyncio.create_task(old.run())
        await wait_for(lambda: "the pool's identity changed: pair again with the code" in (old.agent.last_error or ""))
        assert old.agent.state != AgentState.CONNECTED and not trying.done()  # it keeps trying, and says why
        await old.stop()
        await trying
        assert await rotated.access.store.approved(paired.identity.device_id) is None
        # The stolen owner key is worth nothing now.
        with pytest.raises(AuthRefused) as thief:
            await open_link(rotated.local_url, tmp_path / "stolen")
        assert thief.value.code == "revoked"
        # The owner's own CLI goes on; the member pairs again with the code.
        async with await open_link(rotated.local_url, host_dir) as owner:
            assert owner.welcome.device_id == rotated.identity.device_id
        again = new_member(rotated.local_url, tmp_path / "m", forget_pin=True)
        running = asyncio.create_task(again.run())
        await wait_for(lambda: again.agent.state == AgentState.CONNECTED)
        await again.stop()
        await running
    finally:
        await rotated.stop()
