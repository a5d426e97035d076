"""Discovery: settings, TXT parsing and argument checks anywhere; real mDNS on loopback only.

The ``test_loopback_*`` tests run zeroconf in this process, so they run only where the process
sees no interface but ``lo`` (the CI runs the suite inside ``unshare -n``). Anywhere else,
``test_loopback_tests_in_private_namespace`` runs them in a fresh ``unshare -n`` instead: mDNS
must never reach a real interface.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from zeroconf.asyncio import AsyncServiceInfo

from poolnet_desktop import __version__
from poolnet_desktop.runtime.net import discovery
from poolnet_desktop.runtime.net.discovery import (
    SERVICE_TYPE,
    DiscoveryDisabledError,
    DiscoveryError,
    DiscoverySettings,
    FoundPool,
    PoolAnnouncer,
    PoolBrowser,
)
from tests.conftest import linux_only

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = DiscoverySettings(interfaces=("127.0.0.1",))


# ---- settings ---------------------------------------------------------------------------------


def test_from_env_reads_switch_and_interfaces() -> None:
    env = {"POOLNET_DISCOVERY": " OFF ", "POOLNET_DISCOVERY_INTERFACES": "eth0, 10.0.0.2 ,"}
    assert DiscoverySettings.from_env(env) == DiscoverySettings(False, ("eth0", "10.0.0.2"))
    assert DiscoverySettings.from_env({"POOLNET_DISCOVERY": "on"}).enabled is True


def test_from_env_keeps_base_where_unset_or_empty() -> None:
    base = DiscoverySettings(enabled=False, interfaces=("lo",))
    assert DiscoverySettings.from_env({}, base=base) == base
    env = {"POOLNET_DISCOVERY": "", "POOLNET_DISCOVERY_INTERFACES": " "}
    assert DiscoverySettings.from_env(env, base=base) == base


def test_from_env_refuses_unknown_switch() -> None:
    with pytest.raises(DiscoveryError, match='"on" or "off"'):
        DiscoverySettings.from_env({"POOLNET_DISCOVERY": "maybe"})


def test_overrides_replace_only_given_values() -> None:
    base = DiscoverySettings(enabled=True, interfaces=("lo",))
    assert base.with_overrides() == base
    assert base.with_overrides(enabled=False) == DiscoverySettings(False, ("lo",))
    assert base.with_overrides(interfaces=[]) == DiscoverySettings(True, ())


def test_blank_interface_is_refused() -> None:
    with pytest.raises(DiscoveryError, match="address or a name"):
        DiscoverySettings(interfaces=(" ",))


def test_resolve_names_and_addresses() -> None:
    assert DiscoverySettings().resolve_addresses() == []
    both = DiscoverySettings(interfaces=("lo", "127.0.0.1"))
    assert both.resolve_addresses() == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("no-such-nic0", "no network interface named 'no-such-nic0'"),
        ("::1", "only IPv4"),
        ("192.0.2.77", "not an address of this host"),
    ],
)
def test_resolve_refuses_what_cannot_work(entry: str, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        DiscoverySettings(interfaces=(entry,)).resolve_addresses()


# ---- what is announced and what is found ------------------------------------------------------


def _pool(**changes: object) -> FoundPool:
    fields: dict[str, object] = dict(
        instance="Lab." + SERVICE_TYPE, name="Lab", pool_id="p1", addresses=("10.0.0.1",),
        port=3000, tls=True, version="0.1.0", platform="linux",
    )  # fmt: skip
    fields.update(changes)
    return FoundPool(**fields)  # type: ignore[arg-type]


def test_url_follows_tls_path_and_address_family() -> None:
    assert _pool().url == "wss://10.0.0.1:3000/ws"
    assert _pool(tls=False, path="/pool").url == "ws://10.0.0.1:3000/pool"
    assert _pool(addresses=("fe80::1", "10.0.0.1")).url == "wss://[fe80::1]:3000/ws"


def _info(properties: dict[str, str], addresses: list[str] | None = None) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        "Some pool." + SERVICE_TYPE,
        port=3000,
        properties=properties,
        server="x.local.",
        parsed_addresses=["10.0.0.9"] if addresses is None else addresses,
    )


def test_found_pool_from_poolnet_txt() -> None:
    txt = {"version": "0.1.0", "platform": "linux", "pool": "Lab pool", "poolid": "abc",
           "path": "/ws", "tls": "1", "fp": "ab:cd:ef"}  # fmt: skip
    found = discovery._found_from_info(_info(txt))
    assert found == FoundPool(
        instance="Some pool." + SERVICE_TYPE, name="Lab pool", pool_id="abc",
        addresses=("10.0.0.9",), port=3000, tls=True, version="0.1.0", platform="linux",
        path="/ws", fingerprint="ab:cd:ef",
    )  # fmt: skip


def test_seed_server_without_pool_id_is_listed_by_instance_name() -> None:
    found = discovery._found_from_info(_info({"version": "1.0.0", "platform": "linux"}))
    assert found is not None
    assert (found.name, found.pool_id, found.tls, found.url) == (
        "Some pool", None, False, "ws://10.0.0.9:3000/ws",
    )  # fmt: skip


def test_hostile_txt_is_tamed() -> None:
    txt = {"pool": "evil\x1b[2J" + "x" * 240, "tls": "yes", "path": "ws x", "fp": "zz;rm"}
    found = discovery._found_from_info(_info(txt))
    assert found is not None
    assert "\x1b" not in found.name and len(found.name) == 200
    assert (found.tls, found.path, found.fingerprint) == (False, "/ws", None)


def test_answer_without_ipv4_address_is_ignored() -> None:
    assert discovery._found_from_info(_info({"poolid": "a"}, addresses=[])) is None


def test_instance_label_is_a_valid_dns_sd_label() -> None:
    assert discovery._instance_label("a.b.c", "0123456789") == "a b c [01234567]"
    long = discovery._instance_label("é" * 40, "f00d")
    assert long == "é" * 28 + " [f00d]" and len(long.encode()) <= 63
    assert discovery._instance_label("\x00\x01", "x.y") == "PoolNet [x y]"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pool_name": " "}, "pool name"),
        ({"pool_id": ""}, "pool id"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"fingerprint": "not hex"}, "fingerprint"),
        ({"path": "ws"}, "path"),
        ({"addresses": ["10.0.0.1", "host.example"]}, "not an IPv4 address"),
        ({"addresses": []}, "non-empty"),
    ],
)
def test_announcer_refuses_bad_arguments(changes: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = dict(pool_name="Lab", pool_id="p1", port=3000, tls=True)
    kwargs.update(changes)
    with pytest.raises(ValueError, match=message):
        PoolAnnouncer(LOOPBACK, **kwargs)  # type: ignore[arg-type]


# ---- discovery turned off (opens no socket, so it runs anywhere) ------------------------------


@pytest.mark.asyncio
async def test_off_announces_nothing_and_browser_refuses_find() -> None:
    off = DiscoverySettings.from_env({"POOLNET_DISCOVERY": "off"}, base=LOOPBACK)
    announcer = PoolAnnouncer(off, pool_name="Lab", pool_id="p1", port=3000, tls=True)
    await announcer.start()
    assert not announcer.announced
    await announcer.update(port=3001)
    await announcer.stop()
    browser = PoolBrowser(off)
    await browser.start()
    with pytest.raises(DiscoveryDisabledError):
        await browser.find_pool("p1", 1.0)
    assert dict(browser.pools) == {}
    await browser.close()


@pytest.mark.asyncio
async def test_find_pool_before_start_and_bad_timeout_are_errors() -> None:
    browser = PoolBrowser(LOOPBACK)
    with pytest.raises(RuntimeError, match="start"):
        await browser.find_pool("p1", 1.0)
    with pytest.raises(ValueError, match="resolve_timeout"):
        PoolBrowser(LOOPBACK, resolve_timeout=0)
    await browser.close()


# ---- real mDNS on loopback, in a namespace of its own ------------------------------------------


def _isolated() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.fixture
def loopback_only() -> None:
    """Skip unless this process sees only ``lo``; bring it up (a fresh namespace has it down)."""
    if not _isolated():
        pytest.skip("needs a private network namespace; run under `unshare -n` "
                    "(test_loopback_tests_in_private_namespace does that here)")  # fmt: skip
    if os.geteuid() == 0:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)


@linux_only("unshare -n makes the private network namespace")
def test_loopback_tests_in_private_namespace() -> None:
    """Run the ``loopback`` tests of this file in a fresh ``unshare -n`` (and so prove they pass)."""
    if _isolated():
        pytest.skip("this process is already isolated: the loopback tests ran directly")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, `unshare` and `ip` to make a private network namespace")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"{__file__}", "-k", "loopback and not private_namespace"]  # fmt: skip
    script = 'ip link set lo up && exec "$@"'
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout


class Recorder:
    """Collects callbacks and lets a test wait for the next one of a kind."""

    def __init__(self) -> None:
        self.events: list[tuple[str, FoundPool]] = []
        self._changed = asyncio.Event()

    def callbacks(self) -> dict[str, discovery.PoolCallback]:
        return {f"on_{kind}": self._recorder(kind) for kind in ("added", "updated", "removed")}

    def _recorder(self, kind: str) -> discovery.PoolCallback:
        def record(pool: FoundPool) -> None:
            self.events.append((kind, pool))
            self._changed.set()

        return record

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> FoundPool:
        async with asyncio.timeout(timeout):
            while True:
                of_kind = [pool for k, pool in self.events if k == kind]
                if len(of_kind) >= count:
                    return of_kind[count - 1]
                self._changed.clear()
                await self._changed.wait()


@pytest_asyncio.fixture
async def closer(loopback_only: None) -> AsyncIterator[AsyncExitStack]:
    """Closes what a loopback test opened even when it fails, so no socket outlives it."""
    async with AsyncExitStack() as stack:
        yield stack


async def _started(stack: AsyncExitStack, thing: PoolAnnouncer | PoolBrowser) -> None:
    stack.push_async_callback(thing.stop if isinstance(thing, PoolAnnouncer) else thing.close)
    await thing.start()


def _announcer(**changes: object) -> PoolAnnouncer:
    kwargs: dict[str, object] = dict(pool_name="Lab pool", pool_id="pool-1", port=3000, tls=True,
                                     fingerprint="a1b2c3d4")  # fmt: skip
    kwargs.update(changes)
    return PoolAnnouncer(LOOPBACK, **kwargs)  # type: ignore[arg-type]


def _other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


@pytest.mark.asyncio
async def test_loopback_announce_update_and_withdraw(closer: AsyncExitStack) -> None:
    seen = Recorder()
    browser = PoolBrowser(LOOPBACK, **seen.callbacks())
    await _started(closer, browser)
    announcer = _announcer()
    await _started(closer, announcer)
    added = await seen.wait_for("added")
    assert added == FoundPool(
        instance="Lab pool [pool-1]." + SERVICE_TYPE, name="Lab pool", pool_id="pool-1",
        addresses=("127.0.0.1",), port=3000, tls=True, version=__version__,
        platform=discovery.platform_name(), path="/ws", fingerprint="a1b2c3d4",
    )  # fmt: skip
    assert added.url == "wss://127.0.0.1:3000/ws"
    await announcer.update(port=3001)
    updated = await seen.wait_for("updated")
    assert updated.url == "wss://127.0.0.1:3001/ws"
    assert dict(browser.pools) == {added.instance: updated}
    await announcer.update(addresses=["127.0.0.2"])
    # The announcer moves to a new host name, so the old address drops out at once.
    async with asyncio.timeout(10):
        while browser.pools[added.instance].addresses != ("127.0.0.2",):
            await asyncio.sleep(0.05)
    assert browser.pools[added.instance].url == "wss://127.0.0.2:3001/ws"
    assert seen.events[-1] == ("updated", browser.pools[added.instance])
    await announcer.stop()
    removed = await seen.wait_for("removed")
    assert removed.pool_id == "pool-1" and dict(browser.pools) == {}
    await announcer.stop()  # twice is harmless
    await browser.close()
    await browser.close()
    assert _other_tasks() == set()


@pytest.mark.asyncio
async def test_loopback_find_pool_waits_for_a_late_host_and_times_out(
    closer: AsyncExitStack,
) -> None:
    browser = PoolBrowser(LOOPBACK)
    await _started(closer, browser)
    waiting = asyncio.ensure_future(browser.find_pool("pool-1", 15.0))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    # Anyone on the LAN can announce the pool's public id; in plain text it is never the pool.
    await _started(closer, _announcer(tls=False, pool_name="Spoof"))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    await _started(closer, _announcer(port=3100))
    found = await waiting
    assert found is not None and found.url == "wss://127.0.0.1:3100/ws"
    assert await browser.find_pool("pool-1", 1.0, exclude_url=found.url) is None
    assert await browser.find_pool("no-such-pool", 0.3) is None


@pytest.mark.asyncio
async def test_loopback_failing_callback_does_not_stop_discovery(
    closer: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(pool: FoundPool) -> None:
        raise RuntimeError("view went away")

    seen = Recorder()
    browser = PoolBrowser(LOOPBACK, on_added=broken, on_removed=seen.callbacks()["on_removed"])
    await _started(closer, browser)
    announcer = _announcer()
    with caplog.at_level(logging.ERROR, logger="poolnet_desktop.runtime.net.discovery"):
        await _started(closer, announcer)
        assert await browser.find_pool("pool-1", 10.0) is not None
        await announcer.stop()
        await seen.wait_for("removed")
    assert "view went away" in caplog.text


@pytest.mark.asyncio
async def test_loopback_close_wakes_a_waiting_find(closer: AsyncExitStack) -> None:
    browser = PoolBrowser(LOOPBACK)
    await _started(closer, browser)
    waiting = asyncio.ensure_future(browser.find_pool("pool-1", 60.0))
    await asyncio.sleep(0.1)
    await browser.close()
    async with asyncio.timeout(5):
        assert await waiting is None
