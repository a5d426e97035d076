"""The ``poolnet`` command line, started as real subprocesses the way the README says."""

from __future__ import annotations

import fcntl
import json
import os
import select
import pty
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import posix_only

pytestmark = posix_only("signals (SIGTERM, SIGINT) and select on pipes")

POOLNET = [sys.executable, "-m", "poolnet_desktop"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(home: Path, code: str | None = None) -> dict[str, str]:
    """The environment of a ``poolnet`` subprocess; ``code`` goes in POOLNET_PAIRING_CODE,
    since a code is never given on the command line."""
    env = dict(os.environ, POOLNET_HOME=str(home), POOLNET_DISCOVERY="off", PYTHONUNBUFFERED="1")
    env.pop("http_proxy", None)
    env.pop("POOLNET_PAIRING_CODE", None)
    if code is not None:
        env["POOLNET_PAIRING_CODE"] = code
    return env


def poolnet(*args: str, home: Path, timeout: float = 20, code: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POOLNET, *args], env=environment(home, code), capture_output=True, text=True,
                          timeout=timeout)


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
    code_file = tmp_path / "code.txt"
    code_file.write_text("TEST-CODE\n")
    process = subprocess.Popen(
        [*POOLNET, "host", "--port", str(port), "--bind", "127.0.0.1", "--no-discovery", "--data-dir", str(tmp_path / "host"),
         "--code-file", str(code_file)],
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
         "--no-discovery"],
        env=environment(tmp_path / "unused", code="test-code"),
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
    result = poolnet("join", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "intruder"),
                     "--no-discovery", home=tmp_path, timeout=30, code="WRONG-CODE")
    assert result.returncode == 1
    assert "refused" in result.stderr and "code" in result.stderr


def test_a_code_is_never_taken_from_argv_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    """Codes on the command line sit in every local user's process list: the flags are gone,
    and a code with letters outside the code alphabet is one line and exit 2."""
    for command in (["join", "127.0.0.1:1", "--code", "TEST-CODE"], ["host", "--pairing-code", "TEST-CODE"]):
        on_argv = poolnet(*command, "--no-discovery", home=tmp_path)
        assert on_argv.returncode == 2
        assert on_argv.stderr.startswith("poolnet: a pairing code is never given on the command line")
        assert len(on_argv.stderr.splitlines()) == 1
    for command in (["join", "127.0.0.1:1"], ["host", "--port", str(free_port()), "--bind", "127.0.0.1"],
                    ["status", "127.0.0.1:1"]):
        bad = poolnet(*command, "--no-discovery" if command[0] != "status" else "--json", home=tmp_path,
                      code="ABCU-EFGH")
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.strip() == "poolnet: invalid pairing code: a pairing code uses only " \
            "0123456789ABCDEFGHJKMNPQRSTVWXYZ; not 'U'"


@pytest.mark.parametrize("scheme", ["http", "wss"])
def test_status_says_clearly_when_no_pool_answers(tmp_path: Path, scheme: str) -> None:
    result = poolnet("status", f"{scheme}://127.0.0.1:{free_port()}", home=tmp_path)
    assert result.returncode == 1
    assert ("cannot read the pool" if scheme == "http" else "cannot reach the pool") in result.stderr


def test_a_command_for_tasks_where_no_pool_runs_says_how_to_start_one(tmp_path: Path) -> None:
    result = poolnet("tasks", "--url", f"wss://127.0.0.1:{free_port()}/ws", home=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot reach the pool" in result.stderr and "start one: poolnet host" in result.stderr


def _to(address: str, command: str) -> list[str]:
    return [command, address] if command == "status" else [command, "--url", address]


@pytest.mark.parametrize("command", ["tasks", "devices", "status", "logs"])
@pytest.mark.parametrize("address", ["ws://127.0.0.1:9/ws", "http://127.0.0.1:9", "127.0.0.1:99999", "wss://[::1:9/ws"])
def test_an_address_that_names_no_pool_is_one_line_and_exit_2(tmp_path: Path, command: str, address: str) -> None:
    """Before, the task commands printed a traceback for each of these."""
    if command == "status" and address.startswith("http://"):
        pytest.skip("status reads an http:// address through the seed's REST paths")
    args = _to(address, command) + (["some-task"] if command == "logs" else [])
    result = poolnet(*args, home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"poolnet: {address!r} is not a pool address: ")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_server_that_is_no_pool_is_named_by_its_answer(hosted, tmp_path: Path) -> None:
    """The pool's own port with a wrong path: its server answers 404, and every command says
    so in one line (the task commands printed a traceback)."""
    _, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    wrong = f"wss://127.0.0.1:{port}/not-the-pool"
    for command in ("tasks", "devices", "status"):
        result = poolnet(*_to(wrong, command), home=tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stderr == f"poolnet: no pool answers at {wrong}: the server there answered HTTP 404 " \
            "(a pool's address is HOST:PORT, or wss://HOST:PORT/ws)\n"


def test_join_where_nothing_listens_says_so_once_and_keeps_trying(tmp_path: Path) -> None:
    """It used to print only 'Joining the pool at ...' and then nothing at all: the reason
    went to the log file alone."""
    port = free_port()
    joiner = subprocess.Popen([*POOLNET, "join", f"127.0.0.1:{port}", "--no-discovery", "--data-dir",
                               str(tmp_path / "m")], env=environment(tmp_path, code="TEST-CODE"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line_with(joiner, "stdout", "Cannot reach the pool")
        assert line.startswith(f"Cannot reach the pool at wss://127.0.0.1:{port}/ws yet: ")
        assert "trying again (Ctrl-C to stop)." in line
        time.sleep(3)  # retries meanwhile say nothing more
        assert joiner.poll() is None
    finally:
        joiner.send_signal(signal.SIGINT)
        stdout, _ = joiner.communicate(timeout=20)
    assert "Cannot reach" not in stdout


def test_a_reader_that_stops_early_gets_no_traceback(hosted, tmp_path: Path) -> None:
    """``poolnet status | head -1``: the pipe closes before everything is written."""
    _, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the command prints anything
    result = subprocess.run(
        [*POOLNET, "status", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "host")],
        env=environment(tmp_path), stdout=writer, stderr=subprocess.PIPE, text=True, timeout=20,
    )
    os.close(writer)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode == 1


def test_the_host_keeps_a_log_file_in_its_data_folder(hosted, tmp_path: Path) -> None:
    process, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    log = tmp_path / "host" / "logs" / "poolnet.log"
    assert "poolnet host" in log.read_text() and f"(process {process.pid})" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0 or (tmp_path / "host" / "logs").stat().st_mode & 0o077 == 0


def test_commands_find_the_pool_their_data_folder_hosts_or_joined_without_a_url(hosted, tmp_path: Path) -> None:
    """The host listens on a free port, not 3000: a command without a URL still finds it."""
    _, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    as_owner = poolnet("status", "--json", "--data-dir", str(tmp_path / "host"), home=tmp_path)
    assert as_owner.returncode == 0, as_owner.stderr
    member = subprocess.Popen(
        [*POOLNET, "join", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "member"),
         "--no-discovery", "--name", "second"],
        env=environment(tmp_path, code="TEST-CODE"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_status(port, tmp_path, devices=2)
        as_member = poolnet("tasks", "--json", "--data-dir", str(tmp_path / "member"), home=tmp_path)
        assert as_member.returncode == 0, as_member.stderr
        assert poolnet("status", "--url", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "host"),
                       home=tmp_path).returncode == 0
    finally:
        member.send_signal(signal.SIGINT)
        member.communicate(timeout=20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["host", "--port", "70000"], "a port is 0 to 65535, not 70000"),
        (["host", "--port", "web"], "not a port number: 'web'"),
        (["status", "--data-dir", "{file}"], "cannot use the data folder {file}"),
        (["join", "127.0.0.1:1", "--data-dir", "{file}/sub"], "cannot use the data folder {file}/sub"),
    ],
)
def test_an_invalid_option_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a file, not a folder")
    result = poolnet(*(a.format(file=not_a_folder) for a in args), home=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message.format(file=not_a_folder) in result.stderr.strip().splitlines()[-1]  # after argparse's usage


def start_host(port: int, data_dir: Path, home: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*POOLNET, "host", "--port", str(port), "--bind", "127.0.0.1", "--no-discovery", "--data-dir", str(data_dir),
         *extra],
        env=environment(home, code="TEST-CODE"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_host_new_identity_makes_old_members_pair_again_with_the_code(tmp_path: Path) -> None:
    port, host_dir, member_dir = free_port(), tmp_path / "host", tmp_path / "member"
    join = ["join", f"127.0.0.1:{port}", "--name", "old-box", "--data-dir", str(member_dir), "--no-discovery"]
    host = start_host(port, host_dir, tmp_path)
    joiner = subprocess.Popen([*POOLNET, *join], env=environment(tmp_path, code="TEST-CODE"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_status(port, tmp_path, devices=2)
    finally:
        for process in (joiner, host):
            process.send_signal(signal.SIGINT if process is joiner else signal.SIGTERM)
            process.communicate(timeout=20)
    old_fingerprint = (host_dir / "tls.crt").read_bytes()

    host = start_host(port, host_dir, tmp_path, "--new-identity")
    rejoin = None
    try:
        # The host's own member follows the new identity; the owner's CLI still reads the pool.
        wait_for_status(port, tmp_path, devices=1)
        assert (host_dir / "tls.crt").read_bytes() != old_fingerprint
        # The old member keeps looking for its pool (the real host may come back) and says why.
        refused = subprocess.Popen([*POOLNET, *join], env=environment(tmp_path), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            read_line_with(refused, "stderr", "the pool's identity changed: pair again with the code")
            assert refused.poll() is None
        finally:
            refused.kill()
            refused.communicate()
        rejoin = subprocess.Popen([*POOLNET, *join, "--forget-pin"], env=environment(tmp_path, code="TEST-CODE"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "old-box" in {d["name"] for d in wait_for_status(port, tmp_path, devices=2)["devices"]}
    finally:
        if rejoin is not None:
            rejoin.kill()
            rejoin.communicate()
        host.send_signal(signal.SIGTERM)
        stdout, _ = host.communicate(timeout=20)
    assert "new identity:" in stdout and "pair" in stdout


def test_hosting_on_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = poolnet("host", "--port", str(port), "--bind", "127.0.0.1", "--no-discovery",
                         "--data-dir", str(tmp_path / "host"), home=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"poolnet: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert result.stdout == ""


def test_devices_new_code_replaces_the_code_the_host_accepts(hosted, tmp_path: Path) -> None:
    _, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    owner = ["--url", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "host")]
    made = poolnet("devices", "new-code", *owner, home=tmp_path)
    assert made.returncode == 0, made.stderr
    new_code = made.stdout.split("New pairing code: ")[1].split()[0]
    assert new_code != "TEST-C0DE" and len(new_code) == 9
    listing = poolnet("devices", *owner, home=tmp_path)
    assert f"Pairing code: {new_code}" in listing.stdout
    approved = listing.stdout.split("Approved:\n")[1].split("\n\n")[0].splitlines()
    # Both are named after this machine: the one the command runs as says so.
    assert [line for line in approved if " (you)  [" in line] == [approved[0]]
    assert "(host's member)" in approved[1]
    old = poolnet("join", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "late"), "--no-discovery",
                  home=tmp_path, timeout=30, code="TEST-CODE")
    assert old.returncode == 1 and "pairing code" in old.stderr


def test_join_on_a_terminal_asks_for_the_code_without_echo(hosted, tmp_path: Path) -> None:
    """The code is typed at a no-echo prompt on the terminal, never put on the command line."""
    _, port = hosted
    master, slave = pty.openpty()

    def own_terminal() -> None:  # the pty becomes the child's controlling terminal (/dev/tty)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    joiner = subprocess.Popen(
        [*POOLNET, "join", f"127.0.0.1:{port}", "--name", "typed-box", "--data-dir", str(tmp_path / "typed"),
         "--no-discovery"],
        env=environment(tmp_path / "unused"), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=own_terminal,
    )
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while b"Pairing code" not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 1024)
        os.write(master, b"test-code\n")
        status = wait_for_status(port, tmp_path, devices=2)
        assert "typed-box" in {d["name"] for d in status["devices"]}
        while select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 1024)
        assert b"test-code" not in seen.lower()  # not echoed
        assert "test-code" not in " ".join(psutil.Process(joiner.pid).cmdline()).lower()
    finally:
        joiner.kill()
        joiner.communicate()
        os.close(master)


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


def read_line_with(process: subprocess.Popen[str], stream: str, needle: str, timeout: float = 20) -> str:
    """The first line of ``stream`` holding ``needle``; fails if none comes within ``timeout``."""
    pipe = getattr(process, stream)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 0.2)
        if ready and needle in (line := pipe.readline()):
            return line
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"no line with {needle!r} on {stream}: {out} {err}")


def test_a_device_the_owner_has_not_approved_is_told_so_at_once(hosted, tmp_path: Path) -> None:
    """``status``, and ``join`` without a code, used to print nothing for two minutes."""
    _, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    asking = subprocess.Popen([*POOLNET, "status", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "stranger")],
                              env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line_with(asking, "stderr", "to approve this device")
        assert line.startswith("poolnet: waiting for the host's owner to approve this device pn-")
        assert "Ctrl-C" in line
    finally:
        asking.kill()
        asking.communicate()
    joining = subprocess.Popen([*POOLNET, "join", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "newcomer"),
                                "--no-discovery", "--name", "newcomer"],
                               env=environment(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert "Waiting for the owner" in read_line_with(joining, "stdout", "Waiting for the owner")
        pending = poolnet("devices", "--data-dir", str(tmp_path / "host"), home=tmp_path)
        newcomer = next(line.split()[0] for line in pending.stdout.splitlines() if "newcomer" in line)
        assert poolnet("devices", "approve", newcomer, "--data-dir", str(tmp_path / "host"), home=tmp_path).returncode == 0
        assert "Sharing this machine as 'newcomer'" in read_line_with(joining, "stdout", "Sharing this machine")
    finally:
        joining.kill()
        joining.communicate()


def test_a_strangers_name_cannot_drive_the_owners_terminal_and_a_headless_host_says_who_waits(
    hosted, tmp_path: Path
) -> None:
    """An attacker on the LAN, with no code and no approval, names itself in its hello: an
    escape sequence that retitles and clears the owner's terminal, and a line break that pushes
    its real address out of the line. ``poolnet devices`` printed the name as it came; and a
    headless host said nothing of a device waiting for approval (it was refused two minutes
    later, unseen)."""
    process, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    hostile = "\x1b]0;owned\x07\x1b[2Jtrusted-laptop\n(you, 127.0.0.1) "
    joining = subprocess.Popen([*POOLNET, "join", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "stranger"),
                                "--no-discovery", "--name", hostile],
                               env=environment(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        read_line_with(joining, "stdout", "Waiting for the owner")
        listed = poolnet("devices", "--data-dir", str(tmp_path / "host"), home=tmp_path)
        assert listed.returncode == 0 and "\x1b" not in listed.stdout and "\x07" not in listed.stdout
        (line,) = [line for line in listed.stdout.splitlines() if "trusted-laptop" in line]
        device_id = line.split()[0]
        assert line.rstrip().endswith(f"from 127.0.0.1   (poolnet devices approve {device_id})")
    finally:
        joining.kill()
        joining.communicate()
    process.terminate()
    out, _ = process.communicate(timeout=30)
    (notice,) = [line for line in out.splitlines() if "waiting:" in line]
    assert "\x1b" not in notice and "\\x1b]0;owned\\x07\\x1b[2Jtrusted-laptop\\n(you, 127.0.0.1)" in notice
    assert notice.endswith(f"from 127.0.0.1 asks to join as a member: poolnet devices approve {device_id} (or deny)")


def test_status_shows_what_members_say_of_themselves_printable() -> None:
    """A member names itself, its platform and its GPU: ``poolnet status`` printed them as
    they came, to whoever reads the pool."""
    from poolnet_desktop.commands.status import render_table

    resources = {"cpuCores": 4, "cpuUsage": 1.0, "memoryUsage": 1.0, "memoryTotal": 2.0, "storageAvailable": 3.0,
                 "hasGPU": True, "gpuName": "\x1b[31mRTX\x1b[0m"}
    device = {"name": "box\x1b]0;owned\x07", "platform": "linux\u202e", "ipAddress": "10.0.0.2", "isOnline": True,
              "resources": resources}
    pool = {"devices": 1, "totalCpuCores": 4, "totalMemoryAvailable": 1.0, "totalStorageAvailable": 3.0,
            "totalGPUs": 1}
    shown = render_table([device], pool)
    assert "\x1b" not in shown and "\u202e" not in shown
    assert "box\\x1b]0;owned\\x07" in shown and "\\x1b[31mRTX" in shown and "linux\\u202e" in shown


def test_join_pauses_while_other_programs_keep_the_cpu_busy(hosted, tmp_path: Path) -> None:
    """The window's pause rules, for a headless member (``poolnet join`` could not pause)."""
    _, port = hosted
    wait_for_status(port, tmp_path, devices=1)
    # Busy for longer than the test can take on a loaded machine (it is killed at the end).
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"])
    joining = subprocess.Popen(
        [*POOLNET, "join", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "laptop"), "--no-discovery",
         "--name", "laptop", "--pause-when-busy", "10"],
        # No display: "in use" is read from the CPU (with one, keyboard and mouse would decide).
        env={k: v for k, v in environment(tmp_path, code="TEST-CODE").items() if k != "DISPLAY"},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "in use" in read_line_with(joining, "stdout", "Sharing paused", timeout=30)
        laptop = next(d for d in wait_for_status(port, tmp_path, devices=2)["devices"] if d["name"] == "laptop")
        deadline = time.monotonic() + 10
        while laptop["acceptTasks"] and time.monotonic() < deadline:
            time.sleep(0.3)
            laptop = next(d for d in wait_for_status(port, tmp_path, devices=2)["devices"] if d["name"] == "laptop")
        assert laptop["acceptTasks"] is False
    finally:
        for process in (busy, joining):
            process.kill()
            process.communicate()
