"""The ``poolnet`` command line, started as real subprocesses the way the README says."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

POOLNET = [sys.executable, "-m", "poolnet_desktop"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(home: Path) -> dict[str, str]:
    env = dict(os.environ, POOLNET_HOME=str(home), POOLNET_DISCOVERY="off", PYTHONUNBUFFERED="1")
    env.pop("http_proxy", None)
    return env


def poolnet(*args: str, home: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POOLNET, *args], env=environment(home), capture_output=True, text=True, timeout=timeout)


def wait_for_status(port: int, home: Path, devices: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = poolnet("status", f"127.0.0.1:{port}", "--json", "--data-dir", str(home / "host"), home=home)
        if result.returncode == 0:
            status = json.loads(result.stdout)
            online = [d for d in status["devices"] if d["isOnline"] and d["resources"]["cpuCores"] > 0]
            if len(online) >= devices:
                return status
        if time.monotonic() > deadline:
            pytest.fail(f"pool never showed {devices} devices: {result.stdout} {result.stderr}")
        time.sleep(0.3)


@pytest.fixture
def hosted(tmp_path: Path):
    """``poolnet host`` on a free loopback port; stopped with SIGTERM at the end."""
    port = free_port()
    process = subprocess.Popen(
        [*POOLNET, "host", "--port", str(port), "--bind", "127.0.0.1", "--no-discovery", "--data-dir", str(tmp_path / "host"),
         "--pairing-code", "TEST-CODE"],
        env=environment(tmp_path / "unused"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process, port
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_host_shows_this_machine_and_stops_cleanly_on_sigterm(hosted, tmp_path: Path) -> None:
    process, port = hosted
    status = wait_for_status(port, tmp_path, devices=1)
    (device,) = status["devices"]
    assert device["resources"]["cpuCores"] == psutil.cpu_count(logical=True)
    assert abs(device["resources"]["memoryTotal"] - psutil.virtual_memory().total / 2**20) < 1
    assert status["pool"]["totalCpuCores"] == psutil.cpu_count(logical=True)

    table = poolnet("status", f"wss://127.0.0.1:{port}/ws", "--data-dir", str(tmp_path / "host"), home=tmp_path)
    assert table.returncode == 0
    assert "DEVICE" in table.stdout and "online" in table.stdout and "Pool: 1 online" in table.stdout

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert f"wss://127.0.0.1:{port}/ws" in stdout
    assert "TEST-C0DE" in stdout  # the pairing code, as the host shows it
    assert "stopped" in stdout
    assert f"joined with {psutil.cpu_count(logical=True)} cores" in stdout


def test_join_adds_a_second_member_and_ctrl_c_leaves(hosted, tmp_path: Path) -> None:
    _, port = hosted
    joiner = subprocess.Popen(
        [*POOLNET, "join", f"127.0.0.1:{port}", "--name", "second-box", "--data-dir", str(tmp_path / "member"),
         "--code", "test-code", "--no-discovery"],
        env=environment(tmp_path / "unused"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = wait_for_status(port, tmp_path, devices=2)
        assert "second-box" in {d["name"] for d in status["devices"]}
        joiner.send_signal(signal.SIGINT)
        stdout, stderr = joiner.communicate(timeout=20)
        assert joiner.returncode == 0, stderr
        assert "Left the pool" in stdout
    finally:
        if joiner.poll() is None:
            joiner.kill()
            joiner.communicate()


def test_join_with_a_wrong_code_is_refused_and_exits_1(hosted, tmp_path: Path) -> None:
    _, port = hosted
    result = poolnet("join", f"127.0.0.1:{port}", "--code", "WRONG-CODE", "--data-dir", str(tmp_path / "intruder"),
                     "--no-discovery", home=tmp_path, timeout=30)
    assert result.returncode == 1
    assert "refused" in result.stderr and "code" in result.stderr


@pytest.mark.parametrize("scheme", ["http", "wss"])
def test_status_says_clearly_when_no_pool_answers(tmp_path: Path, scheme: str) -> None:
    result = poolnet("status", f"{scheme}://127.0.0.1:{free_port()}", home=tmp_path)
    assert result.returncode == 1
    assert "cannot read the pool" in result.stderr


def _low_fd_limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@pytest.mark.parametrize("legacy_tasks", [False, True])
def test_the_banner_says_what_the_seed_port_allows_and_the_fd_limit_is_raised(tmp_path: Path, legacy_tasks: bool) -> None:
    port, legacy_port = free_port(), free_port()
    process = subprocess.Popen(
        [*POOLNET, "host", "--port", str(port), "--bind", "127.0.0.1", "--no-discovery", "--no-member",
         "--data-dir", str(tmp_path / "host"), "--allow-legacy", "--legacy-port", str(legacy_port),
         *(["--legacy-tasks"] if legacy_tasks else [])],
        env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_low_fd_limit,
    )  # fmt: skip
    try:
        banner = []
        assert process.stdout is not None
        while not (line := process.stdout.readline()).lstrip().startswith("discovery:"):
            assert line, process.stderr.read() if process.stderr else ""
            banner.append(line)
        (seed_line,) = [line for line in banner if "seed clients:" in line]
        assert f"ws://127.0.0.1:{legacy_port}/ws" in seed_line
        if legacy_tasks:
            assert "WARNING" in seed_line and "anyone on this network can run commands" in seed_line
        else:
            assert "anyone on this network can see the pool" in seed_line and "cannot run tasks" in seed_line
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        (files,) = [line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")]
        assert files[0] == files[1] != "256"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
