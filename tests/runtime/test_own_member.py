"""The host's own member has its own identity: a shard that steals the member's key gets a
plain member, never the owner (issue 12)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from poolnet_desktop.runtime.agent import AgentState
from poolnet_desktop.runtime.discovery import DiscoverySettings
from poolnet_desktop.runtime.node import Member, MemberOptions, PoolHost


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
