"""Shard processes an earlier run of this member left behind: found and killed at start.

A member runs each shard in a session of its own (``runtime.member.runner``) so that a cancel can
kill the whole tree; the price is that when the member itself dies by SIGKILL, its shards do
not: they keep running, holding cores, GPUs and memory that the restarted member lends again.

So every run of a member stamps its shards' environment with a random run id
(``RUN_VARIABLE``), kept in the member's data folder. The next run finds each process that
carries the previous id (the shard, and whatever it started: children inherit the
environment) and kills it with its process group. A random id matches no one else's process,
however pids are reused, and costs nothing per shard. A descendant that both scrubbed its
environment and left the shard's group escapes, as it escapes the runner's group kill.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from pathlib import Path

import psutil

from poolnet_desktop.runtime.security.identity import write_private_file

log = logging.getLogger(__name__)

RUN_VARIABLE = "POOLNET_MEMBER_RUN"
RUN_FILE = "member-run"


def reap_and_stamp(data_dir: Path) -> str:
    """Kill what the previous run of the member in ``data_dir`` left running, then record
    and return this run's id (put it in every shard's environment). Blocking: call once at
    start, before any shard runs."""
    path = data_dir / RUN_FILE
    try:
        previous = path.read_text().strip()
    except FileNotFoundError:
        previous = ""
    if previous:
        killed = kill_run(previous)
        if killed:
            log.warning("killed %d shard process(es) left by this member's last run: %s",
                        len(killed), killed)
    run_id = uuid.uuid4().hex
    write_private_file(path, run_id.encode())
    return run_id


def kill_run(run_id: str) -> list[int]:
    """Kill every process whose environment carries ``run_id`` (and its process group, if
    not ours); returns their pids. Processes of other users cannot be read and are skipped."""
    own_group = os.getpgid(0) if hasattr(os, "getpgid") else None
    killed = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(RUN_VARIABLE) != run_id:
                continue
            if own_group is not None:
                group = os.getpgid(process.pid)
                if group != own_group:
                    os.killpg(group, signal.SIGKILL)
            process.kill()
            killed.append(process.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, a zombie, or not ours to read
    return killed
