"""A pool on a private LAN that lets no stranger in: real ``poolnet`` processes on four hosts.

One bridge joins the namespaces h1..h4 (tests/netns.py). h1 runs ``poolnet host`` for the whole
module (starting it is the slow part); each test starts its own members, with fresh identities,
and stops them at its end, so the tests do not depend on each other's order. They cover issue 5,
item 7: real mDNS discovery and joining with the code (h2, h3), a wrong code refused and audited
(h4), a revoked member cut off and kept out, an impostor host with another certificate refused
by a paired member, a replayed handshake refused, and programs that see only their namespace.

Nothing here reaches a real interface: every address is 10.77.0.N inside the namespaces, and
discovery is limited to those addresses. The tests need root and skip with the reason elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from poolnet_desktop.runtime.host.pool_host import OWN_MEMBER_FOLDER
from poolnet_desktop.runtime.security.identity import SIGNING_KEY_FILE, Identity
from tests.netns import JsonLines, NetnsLan, netns_unavailable_reason

PROGRAMS = Path(__file__).with_name("netns_programs")
CODE = "PNTEST-7K3Q"  # as a script would set it; the host shows it as PNTE-ST7K-3Q
WITH_CODE = {"POOLNET_PAIRING_CODE": CODE}  # codes travel in the environment, never argv
PORT = 3000
HOST_ADDRESS = "10.77.0.1"
POOL_URL = f"wss://{HOST_ADDRESS}:{PORT}/ws"
START_TIMEOUT = 60.0  # generous: two cores, and other suites may be running
# Every program names its discovery interface itself; none inherits a developer's settings.
BASE_ENV = {"POOLNET_DISCOVERY": "on", "POOLNET_DISCOVERY_INTERFACES": "", "POOLNET_HOME": ""}

pytestmark = [pytest.mark.netns, pytest.mark.slow]
T = TypeVar("T")


@dataclass(frozen=True)
class Done:
    """A finished ``poolnet`` command."""

    returncode: int
    stdout: str
    stderr: str


@dataclass
class Pool:
    """The LAN, the host running in h1 and what each test started (stopped after it)."""

    lan: NetnsLan
    workdir: Path
    host_dir: Path
    host: subprocess.Popen[str]
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def data_dir(self, name: str) -> Path:
        """A fresh data folder: a new device identity, unknown to the pool."""
        path = self.workdir / name
        assert not path.exists(), f"data folder {name} used twice"
        path.mkdir()
        return path

    def start(self, where: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        """``poolnet ARGS`` left running inside ``where``."""
        proc = self.lan.run(where, [sys.executable, "-m", "poolnet_desktop", *args], {**BASE_ENV, **(env or {})})
        self.started.append(proc)
        return proc

    def poolnet(self, where: str, *args: str, env: Mapping[str, str] | None = None) -> Done:
        """``poolnet ARGS`` run to its end inside ``where``."""
        proc = self.start(where, *args, env=env)
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise AssertionError(f"poolnet {' '.join(args)} did not finish\n{self.lan.stderr_of(proc)}") from None
        return Done(proc.returncode, out, self.lan.stderr_of(proc))

    def status(self) -> list[dict[str, Any]]:
        """The devices the host's own ``poolnet status --json`` lists."""
        done = self.poolnet("h1", "status", POOL_URL, "--json", "--data-dir", str(self.host_dir))
        assert done.returncode == 0, done.stderr
        devices: list[dict[str, Any]] = json.loads(done.stdout)["devices"]
        return devices

    def devices(self, *args: str) -> Done:
        """``poolnet devices ARGS`` as the host's owner (its data folder), from h1."""
        return self.poolnet("h1", "devices", *args, "--url", POOL_URL, "--data-dir", str(self.host_dir))

    def current_code(self) -> str:
        """The code the host accepts now (it rotates on every revoke)."""
        listing = self.devices()
        return next(line.split(": ", 1)[1] for line in listing.stdout.splitlines() if line.startswith("Pairing code:"))

    def join(self, where: str, name: str, data_dir: Path, *args: str, env: Mapping[str, str] | None = None
             ) -> subprocess.Popen[str]:  # fmt: skip
        return self.start(where, "join", *args, "--name", name, "--data-dir", str(data_dir), env=env)

    def online(self, *device_ids: str) -> list[dict[str, Any]]:
        """Poll the host's status until every device in ``device_ids`` is online; its entries."""

        seen: list[list[dict[str, Any]]] = [[]]

        def check() -> list[dict[str, Any]] | None:
            seen[0] = self.status()
            by_id = {d["id"]: d for d in seen[0]}
            found = [by_id.get(device_id) for device_id in device_ids]
            return found if all(d is not None and d["isOnline"] for d in found) else None  # type: ignore[misc]

        try:
            return eventually(check, START_TIMEOUT, f"devices {device_ids} online")
        except AssertionError as exc:
            listed = [(d["id"], d["name"], d["ipAddress"], d["isOnline"]) for d in seen[0]]
            raise AssertionError(f"{exc}; the host lists {listed}\nhost stderr:\n{self.lan.stderr_of(self.host)}"
                                 ) from None  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM a program started in the LAN (its own process group) and wait for its end."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(10)


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.3)


def read_lines_until(proc: subprocess.Popen[str], lan: NetnsLan, marker: str, timeout: float) -> list[str]:
    """The lines a program prints, up to the first containing ``marker``."""
    assert proc.stdout is not None
    fd, buffer, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while marker.encode() not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no {marker!r} within {timeout} s: {buffer!r}\n{lan.stderr_of(proc)}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"exited ({proc.wait(10)}) before {marker!r}: {buffer!r}\n{lan.stderr_of(proc)}")
        buffer += chunk
    return buffer.decode().splitlines()


def device_id(data_dir: Path) -> str:
    """The device id of the identity a program already made in ``data_dir`` (never a new one)."""
    assert (data_dir / SIGNING_KEY_FILE).exists(), f"no identity in {data_dir}"
    return Identity.load_or_create(data_dir).device_id


def interfaces_of(pid: int) -> set[str]:
    """The network interfaces the process ``pid`` sees (its namespace's, from /proc)."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines}


def audit_lines(devices_output: str) -> list[str]:
    return devices_output.split("Recent events:", 1)[1].splitlines() if "Recent events:" in devices_output else []


def section(devices_output: str, title: str) -> str:
    """One block of ``poolnet devices`` (e.g. "Approved:"), up to the next blank line."""
    match = re.search(rf"^{re.escape(title)}\n(.*?)(?:\n\n|\Z)", devices_output, re.S | re.M)
    return match.group(1) if match else ""


# ---- fixtures


@pytest.fixture(scope="module")
def module_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("netns-pool")
    interfaces_before = socket.if_nameindex()
    lan = NetnsLan.create(4, workdir)
    try:
        host_dir = workdir / "host"
        host_dir.mkdir()
        proc = lan.run("h1", [
            sys.executable, "-m", "poolnet_desktop", "host", "--bind", HOST_ADDRESS, "--port", str(PORT),
            "--name", "Lab pool", "--data-dir", str(host_dir),
            "--discovery-interfaces", HOST_ADDRESS,
        ], {**BASE_ENV, **WITH_CODE})  # fmt: skip
        banner = read_lines_until(proc, lan, "discovery:", START_TIMEOUT)
        assert f"is up at {POOL_URL}" in banner[0], banner
        assert any("pairing code:  PNTE-ST7K-3Q" in line for line in banner), banner
        assert f"announced on {HOST_ADDRESS}" in banner[-1], banner
        yield Pool(lan, workdir, host_dir, proc)
    finally:
        lan.close()
    assert socket.if_nameindex() == interfaces_before


@pytest.fixture
def pool(module_pool: Pool) -> Iterator[Pool]:
    """The module's pool; what the test starts is stopped after it, in reverse order."""
    assert module_pool.host.poll() is None, f"the host died:\n{module_pool.lan.stderr_of(module_pool.host)}"
    yield module_pool
    started, module_pool.started = module_pool.started, []
    for proc in reversed(started):
        stop(proc)


# ---- tests


def test_members_find_the_pool_by_mdns_and_join_with_the_code(pool: Pool) -> None:
    dirs = {"h2": pool.data_dir("found-h2"), "h3": pool.data_dir("found-h3")}
    # No URL: each browses the bridge for the only pool there. h2 names its interface with the
    # flag, h3 through the environment.
    members = {
        "h2": pool.join("h2", "member-h2", dirs["h2"], "--discovery-interfaces", "10.77.0.2", env=WITH_CODE),
        "h3": pool.join("h3", "member-h3", dirs["h3"],
                        env={"POOLNET_DISCOVERY_INTERFACES": "10.77.0.3", **WITH_CODE}),
    }  # fmt: skip
    for where, proc in members.items():
        line = read_lines_until(proc, pool.lan, "Sharing", START_TIMEOUT)[-1]
        assert f"in the pool at {POOL_URL}" in line, (where, line, pool.lan.stderr_of(proc))
    # The host's own member has an identity of its own, never the owner's.
    own_id = device_id(pool.host_dir / OWN_MEMBER_FOLDER)
    assert own_id != device_id(pool.host_dir)
    h2_id, h3_id = device_id(dirs["h2"]), device_id(dirs["h3"])
    own, h2, h3 = pool.online(own_id, h2_id, h3_id)
    assert (own["ipAddress"], h2["ipAddress"], h3["ipAddress"]) == (HOST_ADDRESS, "10.77.0.2", "10.77.0.3")
    assert (h2["name"], h3["name"]) == ("member-h2", "member-h3")
    # Each member remembers the pool it found and pinned the host's certificate.
    pool_id = json.loads((pool.host_dir / "pool.json").read_text())["poolId"]
    for data_dir in dirs.values():
        assert json.loads((data_dir / "membership.json").read_text()) == {"poolId": pool_id, "url": POOL_URL}
        pins = json.loads((data_dir / "pinned-hosts.json").read_text())["hosts"]
        assert pins == {pool_id: Identity.load_or_create(pool.host_dir).cert_fingerprint}
    approved = section(pool.devices().stdout, "Approved:")
    assert f"{h2_id}  member-h2" in approved and f"{h3_id}  member-h3" in approved
    for proc in members.values():
        assert proc.poll() is None, pool.lan.stderr_of(proc)
        assert stop(proc) == 0  # a member leaves cleanly on SIGTERM


def test_a_wrong_code_gets_nothing_and_the_host_logs_the_refusal(pool: Pool) -> None:
    data_dir = pool.data_dir("intruder-h4")
    intruder = pool.join("h4", "intruder", data_dir, POOL_URL, "--no-discovery",
                         env={"POOLNET_PAIRING_CODE": "WRNG-C0DE-99"})
    assert intruder.wait(START_TIMEOUT) == 1, pool.lan.stderr_of(intruder)
    assert "refused this machine: the host did not prove it knows this pairing code" in pool.lan.stderr_of(intruder)
    intruder_id = device_id(data_dir)
    listing = pool.devices()
    assert listing.returncode == 0, listing.stderr
    refusals = [line for line in audit_lines(listing.stdout) if intruder_id in line]
    assert refusals and all("10.77.0.4" in line for line in refusals), listing.stdout
    assert any("refused: auth_failed: the device left during pairing" in line for line in refusals), listing.stdout
    assert intruder_id not in section(listing.stdout, "Approved:")
    assert intruder_id not in {d["id"] for d in pool.status()}
    # The intruder pinned nothing and remembers no pool.
    assert not (data_dir / "membership.json").exists() and not (data_dir / "pinned-hosts.json").exists()


def test_a_revoked_member_is_cut_off_at_once_and_cannot_rejoin(pool: Pool) -> None:
    data_dir = pool.data_dir("victim-h3")
    victim = pool.join("h3", "victim", data_dir, POOL_URL, "--no-discovery",
                       env={"POOLNET_PAIRING_CODE": pool.current_code()})
    eventually(lambda: (data_dir / "membership.json").exists(), START_TIMEOUT, "the victim paired")
    victim_id = device_id(data_dir)
    pool.online(victim_id)
    revoked = pool.devices("revoke", victim_id, "--reason", "laptop stolen")
    assert (revoked.returncode, revoked.stdout.strip()) == (0, f"{victim_id}: revoked"), revoked.stderr
    # Its live link is closed now, and its reconnection refused for good: the member ends by
    # itself (a member that was not cut off would stay: it heartbeats, so it never times out).
    try:
        assert victim.wait(25) == 1
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still connected after revoke\n{pool.lan.stderr_of(victim)}") from None
    assert "refused this machine: this device has been revoked" in pool.lan.stderr_of(victim)
    assert not {d["id"]: d for d in pool.status()}[victim_id]["isOnline"]
    # A later join from the same machine is refused, the right code notwithstanding.
    again = pool.poolnet("h3", "join", "--name", "victim", "--data-dir", str(data_dir),
                         "--no-discovery", env=WITH_CODE)  # fmt: skip
    assert again.returncode == 1 and "revoked" in again.stderr, again
    listing = pool.devices()
    assert "Pairing code: PNTE-ST7K-3Q" not in listing.stdout  # the revoke replaced the code
    assert victim_id in section(listing.stdout, "Revoked:")
    assert victim_id not in section(listing.stdout, "Approved:")
    events = [line for line in audit_lines(listing.stdout) if victim_id in line]
    assert any("revoke: laptop stolen" in line for line in events), listing.stdout
    assert any("refused: revoked:" in line and "10.77.0.3" in line for line in events), listing.stdout


def _pair(pool: Pool, where: str, name: str) -> Path:
    """A member of ``where`` pairs with the real host by its code, then stops: its data folder."""
    data_dir = pool.data_dir(name)
    member = pool.join(where, name, data_dir, POOL_URL, "--no-discovery",
                       env={"POOLNET_PAIRING_CODE": pool.current_code()})
    eventually(lambda: (data_dir / "membership.json").exists(), START_TIMEOUT, f"{name} paired")
    assert stop(member) == 0, pool.lan.stderr_of(member)
    return data_dir


def test_a_paired_member_refuses_an_impostor_with_another_certificate(pool: Pool) -> None:
    data_dir = _pair(pool, "h2", "loyal-h2")
    pins = (data_dir / "pinned-hosts.json").read_text()
    pool_id = json.loads((pool.host_dir / "pool.json").read_text())["poolId"]
    real_pin = json.loads(pins)["hosts"][pool_id]
    # h4 runs a coordinator of its own that claims the same pool id and even knows the code.
    fake_dir = pool.data_dir("impostor")
    shutil.copy(pool.host_dir / "pool.json", fake_dir / "pool.json")
    impostor = pool.start("h4", "host", "--bind", "10.77.0.4", "--port", str(PORT), "--data-dir", str(fake_dir),
                          "--no-member", "--no-discovery", env=WITH_CODE)  # fmt: skip
    assert "wss://10.77.0.4" in read_lines_until(impostor, pool.lan, "discovery:", START_TIMEOUT)[0]
    fooled = pool.start("h2", "join", "wss://10.77.0.4:3000/ws", "--name", "loyal-h2",
                        "--data-dir", str(data_dir), "--no-discovery", env=WITH_CODE)  # fmt: skip
    # It never joins the impostor; it keeps looking for its own pool and says why it is out.
    said = eventually(lambda: "impostor" in (err := pool.lan.stderr_of(fooled)) and err, START_TIMEOUT,
                      "the member saying it met an impostor")
    assert f"not the pinned {real_pin[:16]}" in said, said
    assert fooled.poll() is None
    stop(fooled)
    # The member still trusts only the real host, which it still calls home.
    assert (data_dir / "pinned-hosts.json").read_text() == pins
    assert json.loads((data_dir / "membership.json").read_text())["url"] == POOL_URL
    assert impostor.poll() is None  # it was refused by the member, not gone


def test_a_replayed_handshake_is_refused_and_logged(pool: Pool) -> None:
    data_dir = _pair(pool, "h2", "witness-h2")
    witness_id = device_id(data_dir)
    capture = pool.workdir / "captured-handshake.json"
    # The frames of one routine reconnection of an approved member, as an eavesdropper holds them.
    recorder = JsonLines(pool.lan.python("h2", PROGRAMS / "handshake.py", ["record", POOL_URL, str(data_dir),
                                                                          str(capture)]), pool.lan)  # fmt: skip
    recorded = recorder.expect(lambda e: e["event"] == "recorded", START_TIMEOUT)
    assert recorded["method"] == "key" and recorded["frames"] == 2
    # h4 sends them again on a connection of its own.
    replayer = JsonLines(pool.lan.python("h4", PROGRAMS / "handshake.py", ["replay", POOL_URL, str(capture)]),
                         pool.lan)  # fmt: skip
    replayed = replayer.expect(lambda e: e["event"] == "replayed", START_TIMEOUT)
    assert replayed["challenge"]["nonce"] != recorded["challenge"]["nonce"]  # the host asks afresh
    assert replayed["answer"]["type"] == "error" and replayed["answer"]["code"] == "auth_failed", replayed
    assert "replayed" in replayed["answer"]["message"] and replayed["close_code"] == 1008
    events = [line for line in audit_lines(pool.devices().stdout) if witness_id in line]
    assert any("refused: auth_failed:" in line and "replayed" in line and "10.77.0.4" in line for line in events)


def test_pool_programs_see_only_their_own_namespace(pool: Pool) -> None:
    """Every program of these tests runs inside a namespace whose only interfaces are lo and
    the veth on the bridge, so nothing it sends (mDNS included) can reach a real interface."""
    assert interfaces_of(pool.host.pid) == {"lo", "eth0"}
    observers = {where: pool.lan.run(where, [sys.executable, "-c",
        "import socket; print(sorted(n for _, n in socket.if_nameindex()))"])  # fmt: skip
        for where in ("h2", "h3", "h4")}
    for where, proc in observers.items():
        out, _ = proc.communicate(timeout=START_TIMEOUT)
        assert out.strip() == "['eth0', 'lo']", (where, out, pool.lan.stderr_of(proc))
    # ...which is not the namespace the tests run in (nor, through it, the machine's).
    assert os.stat(f"/proc/{pool.host.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
