"""Real mDNS between hosts: three network namespaces on one bridge (see tests/netns.py).

Each host runs a program from ``netns_programs/`` that prints JSON lines; the test drives them
through stdin. Every packet stays inside the namespaces this test makes; they need root, and
the tests skip with the reason elsewhere.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.netns import JsonLines, NetnsLan, existing_namespaces, netns_factory, netns_lan

__all__ = ["netns_factory", "netns_lan"]  # fixtures used by the tests below

PROGRAMS = Path(__file__).with_name("netns_programs")
pytestmark = pytest.mark.netns


def _announce(lan: NetnsLan, host: str, *args: str, env: dict[str, str] | None = None) -> JsonLines:
    address = lan.host(host).address
    proc = lan.python(host, PROGRAMS / "announce.py", ["--interface", address, *args], env)
    out = JsonLines(proc, lan)
    out.expect(lambda e: e["event"] == "started", 15)
    return out


def _browse(lan: NetnsLan, host: str) -> JsonLines:
    address = lan.host(host).address
    out = JsonLines(lan.python(host, PROGRAMS / "browse.py", ["--interface", address]), lan)
    out.expect(lambda e: e["event"] == "started", 15)
    return out


def _event(kind: str, pool_id: str) -> Any:
    return lambda e: e["event"] == kind and e["pool"]["pool_id"] == pool_id


def _close_browser(browser: JsonLines) -> None:
    browser.send({"cmd": "close"})
    closed = browser.expect(lambda e: e["event"] == "closed", 10)
    assert closed["leftover_tasks"] == 0
    assert browser.proc.wait(10) == 0


def test_lan_hosts_talk_to_each_other_and_nothing_leaks_out(
    netns_factory: Any, tmp_path: Path
) -> None:
    before = socket.if_nameindex()
    lan: NetnsLan = netns_factory(2)
    assert [(h.name, h.address) for h in lan.hosts] == [("h1", "10.77.0.1"), ("h2", "10.77.0.2")]
    assert socket.if_nameindex() == before  # no interface was added where the tests run
    server = tmp_path / "server.py"
    server.write_text(
        "import socket\n"
        "s = socket.create_server(('10.77.0.2', 0))\n"
        "print(s.getsockname()[1], flush=True)\n"
        "c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close(); s.close()\n"
    )  # fmt: skip
    proc = lan.python("h2", server)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    client = lan.run("h1", [sys.executable, "-c",
        f"import socket; c = socket.create_connection(('10.77.0.2', {port}), timeout=5);"
        "c.sendall(b'ping'); print(c.recv(100).decode())"])  # fmt: skip
    assert client.communicate(timeout=15)[0].strip() == "PING"
    assert proc.wait(10) == 0
    names = lan.namespaces
    lan.close()
    assert not set(names) & set(existing_namespaces())
    assert lan.namespaces == ()


def test_pool_found_across_hosts_then_removed(netns_lan: NetnsLan) -> None:
    browsers = [_browse(netns_lan, "h2"), _browse(netns_lan, "h3")]
    announcer = _announce(
        netns_lan, "h1", "--pool-name", "Lab pool", "--pool-id", "pool-a", "--port", "3000",
        "--tls", "--fingerprint", "0a1b2c3d",
    )  # fmt: skip
    for browser in browsers:
        pool = browser.expect(_event("added", "pool-a"), 15)["pool"]
        assert pool["url"] == "wss://10.77.0.1:3000/ws"
        assert (pool["name"], pool["addresses"], pool["tls"], pool["fingerprint"]) == (
            "Lab pool", ["10.77.0.1"], True, "0a1b2c3d",
        )  # fmt: skip
        assert (pool["version"], pool["platform"], pool["path"]) == ("0.1.0", "linux", "/ws")
    announcer.send({"cmd": "stop"})
    announcer.expect(lambda e: e["event"] == "stopped", 10)
    for browser in browsers:
        browser.expect(_event("removed", "pool-a"), 10)
        _close_browser(browser)


def test_two_pools_of_one_name_stay_apart(netns_lan: NetnsLan) -> None:
    browser = _browse(netns_lan, "h3")
    _announce(netns_lan, "h1", "--pool-name", "Home", "--pool-id", "id-one", "--port", "3000")
    _announce(netns_lan, "h2", "--pool-name", "Home", "--pool-id", "id-two", "--port", "3000")
    one = browser.expect(_event("added", "id-one"), 15)["pool"]
    two = browser.expect(_event("added", "id-two"), 15)["pool"]
    assert one["name"] == two["name"] == "Home" and one["instance"] != two["instance"]
    assert (one["url"], two["url"]) == ("ws://10.77.0.1:3000/ws", "ws://10.77.0.2:3000/ws")
    _close_browser(browser)


def test_member_finds_its_pool_again_after_the_host_moved(netns_lan: NetnsLan) -> None:
    """A PoolNet host announces TLS; a record in plain text is never the member's pool."""
    member = _browse(netns_lan, "h3")
    first = _announce(netns_lan, "h1", "--pool-name", "Lab", "--pool-id", "pool-m", "--port", "3000", "--tls")
    member.send({"cmd": "find", "pool_id": "pool-m", "timeout": 15})
    old_url = member.expect(lambda e: e["event"] == "found", 20)["pool"]["url"]
    assert old_url == "wss://10.77.0.1:3000/ws"
    first.proc.kill()  # a crash: no goodbye, browsers still cache the old address
    first.proc.wait(10)
    _announce(netns_lan, "h2", "--pool-name", "Lab", "--pool-id", "pool-m", "--port", "4100", "--tls")
    member.send({"cmd": "find", "pool_id": "pool-m", "timeout": 20, "exclude_url": old_url})
    found = member.expect(lambda e: e["event"] == "found", 25)["pool"]
    assert found is not None and found["url"] == "wss://10.77.0.2:4100/ws"
    _close_browser(member)


def test_discovery_off_in_the_environment_announces_nothing(netns_lan: NetnsLan) -> None:
    browser = _browse(netns_lan, "h2")
    off = _announce(netns_lan, "h1", "--pool-name", "Quiet", "--pool-id", "quiet", "--port",
                    "3000", env={"POOLNET_DISCOVERY": "off"})  # fmt: skip
    assert off.seen[-1]["announced"] is False
    # A pool announced later from h3 is seen, so the silence about h1 is not a broken LAN.
    _announce(netns_lan, "h3", "--pool-name", "Loud", "--pool-id", "loud", "--port", "3000")
    browser.expect(_event("added", "loud"), 15)
    browser.send({"cmd": "find", "pool_id": "quiet", "timeout": 2})
    assert browser.expect(lambda e: e["event"] == "found", 10)["pool"] is None
    assert not any(e.get("pool") and e["pool"]["pool_id"] == "quiet" for e in browser.seen)
    _close_browser(browser)


def test_namespaces_of_a_killed_run_are_swept(netns_factory: Any) -> None:
    """A run killed mid-test leaves namespaces named after its pid; the next run removes them."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = f"pnt{dead.stdout.strip()}-0000aa-h1"
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=10)
    try:
        netns_factory(1)
        assert stale not in existing_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, timeout=10)
