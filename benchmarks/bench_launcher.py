"""What a lane's launcher costs per shard, alone: the C build and the Python launcher, side by side.

``bench_cpu_split.py`` gives the launchers' share of a whole pool's CPU; this drives one launcher
with nothing else around it, so that the two can be compared call for call. Each runs as it
does in a lane (PID 2 of a PID namespace of its own, under an init, with private temporary
folders: ``unshare`` and tmpfs mounts instead of bubblewrap) and is asked to start N shards of
``true`` one after another; how long it took to be ready, and its own CPU per shard (user and
system) and its shards', are read from the kernel. The two launchers take turns, ``--rounds`` times each.

    sudo .venv/bin/python benchmarks/bench_launcher.py [--shards 5000] [--rounds 2]

Needs root (mount and PID namespaces) and the C build (``./dev setup``). Runs nothing on the
network; every process started here ends with its launcher.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from poolnet_desktop.runtime.member import native_launcher  # noqa: E402
from poolnet_desktop.runtime.member import sandbox_launcher as launcher  # noqa: E402
from poolnet_desktop.runtime.member.task_sandbox import LauncherCommand  # noqa: E402

ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
               "POOLNET_SHARD": "1", "POOLNET_SHARDS": "2"}


def drive(command: LauncherCommand, shards: int) -> tuple[float, float, float, float]:
    """Start one launcher, then ``shards`` shards of ``true`` through it: the milliseconds until
    it was ready (the namespaces and mounts included), then its user and system CPU and its
    shards' CPU, in microseconds per shard."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
    fds = [theirs.fileno(), out_write, err_write]
    started = time.perf_counter()
    with command.prepared(fds) as (argv, program_fds):
        # Private /tmp, /var/tmp and /dev/shm, then a PID namespace whose init runs the launcher
        # as its only child: PID 2, as in a lane.
        script = ("mount -t tmpfs none /tmp && mount -t tmpfs none /var/tmp && mount -t tmpfs none /dev/shm && "
                  'exec unshare --pid --fork --mount-proc sh -c \'"$@"; true\' sh "$@"')
        wrapper = subprocess.Popen(["unshare", "--mount", "--ipc", "--propagation", "private", "sh", "-c", script,
                                    "sh", *argv], pass_fds=[*fds, *program_fds])
    theirs.close()
    for fd in (out_write, err_write):
        os.close(fd)
    try:
        data, received, _, _ = socket.recv_fds(ours, 4096, 4)
        for fd in received:
            os.close(fd)
        if launcher.decode(data) != {"op": launcher.READY}:
            raise SystemExit(f"the launcher did not start: {data!r}")
        ready_ms = (time.perf_counter() - started) * 1000
        served = next(p for p in psutil.Process(wrapper.pid).children(recursive=True)
                      if p.ppid() != wrapper.pid and p.name() != "sh")
        before = served.cpu_times()
        for request_id in range(1, shards + 1):
            ours.send(launcher.encode_start(request_id, ["true"], "/tmp", ENVIRONMENT, None))
            while (answer := launcher.decode(ours.recv(4096)))["op"] != launcher.EXITED:  # type: ignore[index]
                pass
            if answer.get("code") != 0:  # type: ignore[union-attr]
                raise SystemExit(f"a shard failed: {answer}")
        after = served.cpu_times()
    finally:
        ours.close()
        wrapper.wait(timeout=30)
        for fd in (out_read, err_read):
            os.close(fd)
    per = 1e6 / shards
    return (ready_ms, (after.user - before.user) * per, (after.system - before.system) * per,
            (after.children_user + after.children_system - before.children_user - before.children_system) * per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    native = native_launcher.find()
    if native is None:
        raise SystemExit("no build of the C launcher here: ./dev setup makes it")
    python = (sys.executable,)
    commands = {"C": LauncherCommand(python, native), "Python": LauncherCommand(python)}
    print(f"{'launcher':>8} {'ready ms':>8} {'user us':>8} {'system us':>9} {'true us':>8}"
          f"   (CPU per shard, {args.shards} shards of true)")
    for _ in range(args.rounds):
        for name, command in commands.items():
            ready, user, system, shards = drive(command, args.shards)
            print(f"{name:>8} {ready:8.1f} {user:8.0f} {system:9.0f} {shards:8.0f}")


if __name__ == "__main__":
    main()
