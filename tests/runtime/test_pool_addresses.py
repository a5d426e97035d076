"""The command line's links remember the pool at each address, and a code pairs anew."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolnet_desktop.core.protocol import ErrorCode
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from poolnet_desktop.runtime.security.auth import AuthRefused
from poolnet_desktop.runtime.security.pool_addresses import PoolAddresses, address_of


def host_at(data_dir: Path, port: int, code: str) -> PoolHost:
    return PoolHost(HostOptions(data_dir=resolve_data_dir(data_dir), bind="127.0.0.1", port=port, pairing_code=code,
                                discovery=DiscoverySettings(enabled=False)))


async def test_a_rebuilt_pool_at_a_known_address_needs_its_code(tmp_path: Path) -> None:
    cli = tmp_path / "cli"
    first = host_at(tmp_path / "first", 0, "AAAA-BBBB")
    await first.start()
    port = first.server.port
    url = f"wss://127.0.0.1:{port}/ws"
    try:
        async with await open_link(url, cli, code="AAAA-BBBB") as link:
            first_pool = link.welcome.pool_id
    finally:
        await first.stop()
    assert PoolAddresses.load(cli / "pool-addresses.json").get(url) == first_pool

    second = host_at(tmp_path / "second", port, "CCCC-DDDD")  # a new pool id, same address
    await second.start()
    try:
        with pytest.raises(AuthRefused) as refused:
            await open_link(url, cli)
        assert refused.value.code == ErrorCode.HOST_CHANGED
        assert first_pool in refused.value.message and "impostor" in refused.value.message
        async with await open_link(url, cli, code="CCCC-DDDD") as link:  # the owner's code: pair anew
            second_pool = link.welcome.pool_id
        async with await open_link(f"127.0.0.1:{port}", cli) as link:  # and from now on, by key
            assert link.welcome.pool_id == second_pool != first_pool
    finally:
        await second.stop()
    assert PoolAddresses.load(cli / "pool-addresses.json").get(url) == second_pool


def test_addresses_are_keyed_by_host_and_port_and_a_corrupt_file_is_an_error(tmp_path: Path) -> None:
    assert address_of("wss://Pool.lan:3000/ws") == address_of("wss://pool.lan:3000/other") == "pool.lan:3000"
    path = tmp_path / "pool-addresses.json"
    known = PoolAddresses.load(path)
    known.remember("wss://10.0.0.2:3000/ws", "pool-a")
    assert PoolAddresses.load(path).get("wss://10.0.0.2:3000/ws") == "pool-a"
    assert PoolAddresses.load(path).get("wss://10.0.0.2:3001/ws") is None
    assert path.stat().st_mode & 0o077 == 0
    path.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        PoolAddresses.load(path)
