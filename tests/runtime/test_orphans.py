"""Orphaned shard processes: found by the run id in their environment, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.runtime.member.orphans import RUN_FILE, RUN_VARIABLE, kill_run, reap_and_stamp
from tests.conftest import linux_only

pytestmark = linux_only("orphans are found by the environment in /proc; sh")

SLEEP = [sys.executable, "-c", "import time; time.sleep(300)"]


def gone(pid: int) -> bool:
    """Ended, or ended and waiting to be reaped by a parent other than us."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_kill_run_kills_the_run_and_its_group_but_no_one_else(
    started: list[subprocess.Popen[bytes]],
) -> None:
    ours = subprocess.Popen(
        ["/bin/sh", "-c", f"{' '.join(SLEEP[:2])} '{SLEEP[2]}' & wait"],
        env={**os.environ, RUN_VARIABLE: "old-run"}, start_new_session=True,
    )
    other_run = subprocess.Popen(SLEEP, env={**os.environ, RUN_VARIABLE: "another-run"},
                                 start_new_session=True)
    plain = subprocess.Popen(SLEEP, start_new_session=True)
    started += [ours, other_run, plain]
    deadline = time.monotonic() + 20
    while not (children := psutil.Process(ours.pid).children()):
        assert time.monotonic() < deadline, "the shell never started its child"
    grandchild = children[0].pid

    # The group kill may end the child before the scan reaches it: it is then not listed.
    assert ours.pid in kill_run("old-run")
    ours.wait()
    deadline = time.monotonic() + 20  # SIGKILL is delivered asynchronously
    while not gone(grandchild):
        assert time.monotonic() < deadline, "the shard's child survived"
    assert other_run.poll() is None and plain.poll() is None


def test_reap_and_stamp_gives_each_run_a_new_id(tmp_path: Path) -> None:
    first = reap_and_stamp(tmp_path)
    assert (tmp_path / RUN_FILE).read_text() == first
    second = reap_and_stamp(tmp_path)
    assert second != first and (tmp_path / RUN_FILE).read_text() == second
