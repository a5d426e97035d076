"""The host's own member has its own identity: a shard that steals the member's key gets a
plain member, never the owner (issue 12)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.client.task_files import load_task
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.member.agent import AgentState
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.conftest import SANDBOXED_SHARDS, linux_only

pytestmark = linux_only(SANDBOXED_SHARDS)


async def wait_for(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def poolnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "poolnet_desktop", *args], capture_output=True, text=True,
                          timeout=120, check=False)


async def test_the_hosts_member_joins_as_itself_and_its_key_cannot_act_as_the_owner(
    pool: PoolHost, tmp_path: Path
) -> None:
    folder = await pool.prepare_own_member()
    assert folder != pool.options.data_dir and not (folder / "trust.sqlite3").exists()
    member = Member(MemberOptions(url=pool.local_url, data_dir=folder,
                                  discovery=DiscoverySettings(enabled=False)))
    running = asyncio.create_task(member.run())
    try:
        # No code, no prompt: it is approved and has the host pinned.
        await wait_for(lambda: member.agent.state == AgentState.CONNECTED)
        member_id = member.identity.device_id
        assert member_id != pool.identity.device_id
        assert (await pool.access.store.approved(member_id)).permissions == {"member", "observer"}

        # The attacker holds the member's data folder (its key): the owner's commands refuse it.
        victim = pool.identity.device_id
        stolen = ["--url", pool.local_url, "--data-dir", str(folder)]
        for command in (["devices", "revoke", victim], ["devices", "grant", member_id, "submit"],
                        ["devices", "list"]):
            done = await asyncio.to_thread(poolnet, *command, *stolen)
            assert done.returncode != 0 and "owner" in done.stderr and "Traceback" not in done.stderr, command
        assert not await pool.access.store.is_revoked(victim)
        assert "submit" not in (await pool.access.store.approved(member_id)).permissions

        # The owner's own CLI, with the host's data folder, is still the owner; the member told
        # the host it runs tasks in a sandbox, and status shows it.
        owner_cli = ["--url", pool.local_url, "--data-dir", str(pool.options.data_dir)]
        owner = await asyncio.to_thread(poolnet, "devices", *owner_cli)
        assert owner.returncode == 0 and member_id in owner.stdout, owner.stderr
        assert pool.coordinator.registry.get(member_id).sandbox == "bwrap"
        status = await asyncio.to_thread(poolnet, "status", *owner_cli)
        assert "TASKS RUN" in status.stdout and "sandboxed" in status.stdout, status.stderr
    finally:
        await member.stop()
        await running


async def test_preparing_the_member_again_keeps_its_identity(pool: PoolHost) -> None:
    first = await pool.prepare_own_member()
    key = (first / "identity.key").read_bytes()
    assert await pool.prepare_own_member() == first
    assert (first / "identity.key").read_bytes() == key


async def test_a_shard_on_the_hosts_member_cannot_copy_the_owners_keys_as_outputs(tmp_path: Path) -> None:
    """The host's data folder lies outside the home, /tmp and /run (hidden from shards
    anyway): a shard given its path tries to bring its keys back as outputs and gets nothing."""
    data = Path(tempfile.mkdtemp(prefix="poolnet-test-host-", dir="/var/local"))
    host = PoolHost(HostOptions(data_dir=resolve_data_dir(data), bind="127.0.0.1", port=0,
                                discovery=DiscoverySettings(enabled=False)))
    await host.start()
    member = Member(MemberOptions(url=host.local_url, data_dir=await host.prepare_own_member(),
                                  hidden_from_tasks=(data,),
                                  discovery=DiscoverySettings(enabled=False)))
    running = asyncio.create_task(member.run())
    try:
        await wait_for(lambda: member.identity.device_id in host.tasks._members)
        job = tmp_path / "steal"
        job.mkdir()
        (job / "steal.py").write_text(textwrap.dedent(f"""
            import os, shutil
            os.mkdir("out")
            for root, _, files in os.walk({str(data)!r}):
                for name in files:
                    if name.endswith((".key", ".sqlite3", ".json")):
                        shutil.copy(os.path.join(root, name), os.path.join("out", name))
            print(sorted(os.listdir("out")))
        """))
        (job / "steal.pool.toml").write_text(
            'command = ["{python}", "steal.py"]\nfiles = ["steal.py"]\noutputs = ["out/*"]\nretries = 0\n')
        async with await open_link(host.local_url, data) as link:
            client = TaskClient(link)
            task_id = await client.submit(await asyncio.to_thread(load_task, job))
            assert (await client.wait(task_id)).state == "succeeded"
            results = await client.fetch_results(task_id, tmp_path / "results")
        stolen = list((results / "0").rglob("*.key")) + list((results / "0").rglob("*.sqlite3"))
        assert stolen == []
    finally:
        await member.stop()
        await running
        await host.stop()
        shutil.rmtree(data, ignore_errors=True)
