"""One read of /proc for every shard's tree: real processes and threads, counted as the
kernel has them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poolnet_desktop.runtime.member.process_table import ProcessTable
from tests.conftest import linux_only

pytestmark = linux_only("/proc")

# A process of 4 threads whose two children run 3 threads each: 10 in the tree.
TREE = r"""
import os, threading, time
def threads(n):
    for _ in range(n):
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
for _ in range(2):
    if os.fork() == 0:
        threads(2)
        os.write(1, b"child\n")
        time.sleep(60)
        os._exit(0)
threads(3)
os.write(1, b"parent\n")
time.sleep(60)
"""


@pytest.fixture
def tree():
    process = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert sorted(process.stdout.readline().strip() for _ in range(3)) == ["child", "child", "parent"]
        yield process
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(process.pid)], check=False)
        process.kill()
        process.wait()
        process.stdout.close()


def test_a_tree_counts_every_thread_of_every_process_under_its_root(tree) -> None:
    table = ProcessTable.read()
    assert table.tree_threads(tree.pid) == 10
    assert table.tree_threads(tree.pid, with_root=False) == 6  # its children's
    assert len(table.children[tree.pid]) == 2
    assert table.tree_threads(os.getpid()) >= 10 + 1  # this test is its grandparent


def test_a_process_gone_counts_nothing() -> None:
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    gone = max(ProcessTable.read().threads) + 100_000
    assert ProcessTable.read().tree_threads(gone) == 0


def test_a_name_with_spaces_and_parentheses_is_read_past(tmp_path: Path) -> None:
    """The name in /proc/PID/stat is the program's, in parentheses: a shard chooses it."""
    odd = tmp_path / "x) (9 9 ) Z"
    shutil.copy("/bin/sleep", odd)
    process = subprocess.Popen([str(odd), "30"])
    try:
        time.sleep(0.2)
        table = ProcessTable.read()
        assert table.threads[process.pid] == 1
        assert process.pid in table.children[os.getpid()]
    finally:
        process.kill()
        process.wait()


def test_parents_that_loop_when_pids_were_reused_during_the_read_end_the_count() -> None:
    """/proc is not read at one instant: in a fork bomb a pid read as a parent can be reused
    by a descendant read later."""
    table = ProcessTable(children={10: [20], 20: [30], 30: [10]}, threads={10: 1, 20: 2, 30: 4})
    assert table.tree_threads(10) == 7
