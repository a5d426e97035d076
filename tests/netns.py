"""A private LAN of network namespaces for tests that need several hosts (mDNS, pairing).

``netns_lan`` (pytest fixture, three hosts) or ``netns_factory`` (``make(n)``) builds namespaces
``h1..hN``, each with a veth ``eth0`` at ``10.77.0.N/24`` whose peer is created directly inside
a bridge namespace, so nothing is ever added to the namespace the tests run in and no packet can
reach a real interface. Names carry this process's id and a random tag, so runs never collide,
and namespaces left by a run that was killed are removed by the next one.

Use it from a test module with ``from tests.netns import netns_lan  # noqa: F401``; then
``lan.python(host, script, args)`` starts a program inside a host and ``JsonLines(proc)``
reads the JSON lines it prints. Everything is torn down at the end, even on failure. Tests
skip with the reason when this machine cannot make namespaces (not root, no ``ip``).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBNET = "10.77.0"
_PREFIX = "pnt"
_IP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Host:
    """One machine of the test LAN: ``name`` (h1..), its namespace, its address on the bridge."""

    name: str
    netns: str
    address: str


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_IP_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def existing_namespaces() -> list[str]:
    done = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=True
    )
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _namespace_pids(netns: str) -> list[int]:
    done = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=_IP_TIMEOUT
    )
    return [int(pid) for pid in done.stdout.split() if pid.isdigit()]


def _delete_namespace(netns: str) -> None:
    """Kill what still runs inside (only our programs can be in it), then delete it."""
    for pid in _namespace_pids(netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=_IP_TIMEOUT)


def _remove_stale() -> None:
    """Delete namespaces of earlier runs whose process is gone (a run killed mid-test)."""
    for netns in existing_namespaces():
        parts = netns.split("-")
        if len(parts) == 3 and parts[0].startswith(_PREFIX) and parts[0][len(_PREFIX) :].isdigit():
            if not Path(f"/proc/{parts[0][len(_PREFIX):]}").exists():
                _delete_namespace(netns)


_unavailable: list[str | None] = []


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can (tried once per process)."""
    if not _unavailable:
        _unavailable.append(_probe())
    return _unavailable[0]


def _probe() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root, e.g. inside `unshare -n`)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    probe = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    _delete_namespace(probe)
    return None


class NetnsLan:
    """Hosts ``h1..hN`` on one bridge. Build with ``create``; always ``close`` (the fixtures do)."""

    def __init__(self, tag: str, workdir: Path) -> None:
        self._tag = tag
        self._workdir = workdir
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []
        self._stderr: dict[int, Path] = {}
        self.hosts: tuple[Host, ...] = ()

    @classmethod
    def create(cls, count: int, workdir: Path) -> NetnsLan:
        """Make ``count`` hosts (1..200) on a fresh bridge; on any failure remove what was made."""
        if not 1 <= count <= 200:
            raise ValueError(f"host count must be 1 to 200, got {count}")
        _remove_stale()
        lan = cls(f"{_PREFIX}{os.getpid()}-{secrets.token_hex(3)}", workdir)
        try:
            lan._build(count)
        except BaseException:
            lan.close()
            raise
        return lan

    def _build(self, count: int) -> None:
        switch = self._add_namespace("sw")
        _ip("link", "set", "lo", "up", netns=switch)
        # Snooping off: the bridge floods multicast to every port, as a small office switch does.
        _ip("link", "add", "br0", "type", "bridge", "mcast_snooping", "0", netns=switch)
        _ip("link", "set", "br0", "up", netns=switch)
        hosts = []
        for n in range(1, count + 1):
            netns = self._add_namespace(f"h{n}")
            # Both ends are created inside namespaces: nothing appears where the tests run.
            _ip("link", "add", "eth0", "netns", netns, "type", "veth",
                "peer", "name", f"p{n}", "netns", switch)  # fmt: skip
            _ip("link", "set", f"p{n}", "master", "br0", "up", netns=switch)
            address = f"{SUBNET}.{n}"
            _ip("link", "set", "lo", "up", netns=netns)
            _ip("addr", "add", f"{address}/24", "dev", "eth0", netns=netns)
            _ip("link", "set", "eth0", "up", netns=netns)
            # Lets programs that pick the default multicast interface work too.
            _ip("route", "add", "224.0.0.0/4", "dev", "eth0", netns=netns)
            hosts.append(Host(f"h{n}", netns, address))
        self.hosts = tuple(hosts)

    def _add_namespace(self, suffix: str) -> str:
        netns = f"{self._tag}-{suffix}"
        _ip("netns", "add", netns)
        self._namespaces.append(netns)
        return netns

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r}; hosts are {[h.name for h in self.hosts]}")

    def run(
        self,
        host: Host | str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` inside ``host``: text pipes on stdin and stdout, stderr to a file
        (``stderr_of``). ``env`` adds to this process's environment, with the repository on
        ``PYTHONPATH``. The process is killed at ``close`` if still running."""
        target = self.host(host) if isinstance(host, str) else host
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p
        )
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        err_path = self._workdir / f"{target.name}-{len(self._processes)}.stderr"
        with err_path.open("w") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", target.netns, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=full_env,
                text=True,
                cwd=REPO_ROOT,
                start_new_session=True,  # its own group, so close() can stop its children too
            )
        self._processes.append(proc)
        self._stderr[proc.pid] = err_path
        return proc

    def python(
        self,
        host: Host | str,
        script_path: str | os.PathLike[str],
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Run a Python script inside ``host`` with this interpreter (see ``run``)."""
        return self.run(host, [sys.executable, str(script_path), *args], env)

    def stderr_of(self, proc: subprocess.Popen[str]) -> str:
        """What the process wrote to stderr so far (for assertion messages)."""
        path = self._stderr.get(proc.pid)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def close(self) -> None:
        """Stop every process started here, then delete every namespace; safe to call twice."""
        for proc in self._processes:
            _stop_group(proc)
        self._processes.clear()
        for netns in reversed(self._namespaces):
            _delete_namespace(netns)
        self._namespaces.clear()

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self._namespaces)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, SIGKILL it after 3 s, close the pipes."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except BrokenPipeError:
                pass
    if proc.returncode is None:
        proc.wait(5.0)


class JsonLines:
    """Reads the JSON objects a program prints one per line, and writes commands to it."""

    def __init__(self, proc: subprocess.Popen[str], lan: NetnsLan | None = None) -> None:
        if proc.stdout is None:
            raise ValueError("the process needs stdout=PIPE")
        self.proc = proc
        self._lan = lan
        self.seen: list[dict[str, Any]] = []
        # Read the descriptor directly: a buffered readline would hide lines from select().
        self._fd = proc.stdout.fileno()
        self._buffer = b""

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def next(self, timeout: float) -> dict[str, Any]:
        """The next object, or AssertionError after ``timeout`` s or when the program exits."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                raise AssertionError(f"no output within {timeout} s\n{self._stderr()}")
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self.proc.wait(5.0)
                raise AssertionError(f"program exited ({self.proc.returncode})\n{self._stderr()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n{self._stderr()}") from None
        if not isinstance(obj, dict):
            raise AssertionError(f"not a JSON object: {line!r}")
        self.seen.append(obj)
        return obj

    def expect(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Skip lines until one matches; AssertionError with everything seen on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout} s; seen: {self.seen}\n"
                                     f"{self._stderr()}")  # fmt: skip
            obj = self.next(remaining)
            if match(obj):
                return obj

    def _stderr(self) -> str:
        return f"stderr:\n{self._lan.stderr_of(self.proc)}" if self._lan else ""


def _require_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def netns_factory(tmp_path: Path) -> Iterator[Callable[[int], NetnsLan]]:
    """``make(n)`` builds a LAN of ``n`` hosts; every LAN made is removed after the test."""
    _require_netns()
    made: list[NetnsLan] = []

    def make(count: int) -> NetnsLan:
        workdir = tmp_path / f"lan{len(made)}"
        workdir.mkdir()
        lan = NetnsLan.create(count, workdir)
        made.append(lan)
        return lan

    try:
        yield make
    finally:
        for lan in made:
            lan.close()


@pytest.fixture
def netns_lan(netns_factory: Callable[[int], NetnsLan]) -> NetnsLan:
    """Three hosts, h1..h3 at 10.77.0.1..3, on one bridge."""
    return netns_factory(3)
