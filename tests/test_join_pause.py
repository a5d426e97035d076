"""``poolnet join`` pauses while someone uses the computer's keyboard or mouse, suspending the
shard it runs, and resumes it once the computer has been idle (issue 15). Real processes: a
private Xvfb whose pointer the test moves through XTest, ``poolnet host``, ``poolnet join``
with ``--pause-when-busy --idle-minutes``, and a sandboxed shard whose state the kernel gives."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.runtime.member.idle import x11_idle_seconds
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.test_idle import display, move_the_pointer
from tests.runtime.test_task_pool import running_with, unique_sleep
from tests.test_cli import POOLNET, environment, read_line_with
from tests.test_task_cli import CODE, Pool, free_port, wait_until, write_manifest

pytestmark = [
    linux_only(f"{SANDBOXED_SHARDS}; X11 and SIGSTOP"),
    pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed"),
    pytest.mark.slow,
]
__all__ = ["display"]  # the fixture, used by name
IDLE_MINUTES = 0.25  # in use: input in the last 15 s


@pytest.fixture
def hosted(tmp_path: Path) -> Iterator[Pool]:
    pool = Pool(free_port(), tmp_path / "host", tmp_path, [])
    host = pool.start_host()
    wait_until(lambda: pool.run("tasks", timeout=20).returncode == 0 or host.poll() is not None, "the host")
    assert host.poll() is None, host.communicate()
    yield pool
    for process in pool.processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_input_pauses_join_and_suspends_its_shard_until_the_computer_is_idle_again(
    hosted: Pool, display: str, tmp_path: Path
) -> None:
    wait_until(lambda: (x11_idle_seconds(display) or 0.0) > IDLE_MINUTES * 60 + 1, "the display to be idle")
    joining = subprocess.Popen(
        [*POOLNET, "join", hosted.url, "--name", "desk", "--no-discovery", "--data-dir", str(tmp_path / "desk"),
         "--pause-when-busy", "90", "--idle-minutes", str(IDLE_MINUTES)],
        env={**environment(hosted.home, code=CODE), "DISPLAY": display},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    hosted.processes.append(joining)
    read_line_with(joining, "stdout", "Sharing this machine", timeout=60)
    token = unique_sleep()
    manifest = write_manifest(tmp_path / "long", "long", f'command = ["sleep", "{token}"]\n')
    wait_until(lambda: hosted.run("submit", str(manifest)).returncode == 0, "the task")
    wait_until(lambda: bool(running_with(token)), "the shard to start")
    shard = running_with(token)[0]

    move_the_pointer(display)
    assert "the computer is in use" in read_line_with(joining, "stdout", "Sharing paused", timeout=30)
    wait_until(lambda: shard.status() == psutil.STATUS_STOPPED, "the shard to be suspended", timeout=10)

    read_line_with(joining, "stdout", "Sharing again", timeout=IDLE_MINUTES * 60 + 30)
    # Woken by SIGCONT it is 'running' for a moment, then its sleep goes on.
    wait_until(lambda: shard.status() == psutil.STATUS_SLEEPING, "the shard to run again", timeout=10)
