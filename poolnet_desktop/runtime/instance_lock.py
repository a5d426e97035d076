"""One PoolNet per data folder, held for the life of the process that shares this computer.

Two instances on one data folder share one identity: the host sees one device connect twice
and each replaces the other, and at its start each cleans the work folder the other's shards
are running in. So ``poolnet host``, ``poolnet join`` and the window take this lock before they
start anything, and a second one is refused with the name and process id of the first (kept
beside the lock). The lock is an OS file lock: it goes with its process, however that ends.
Commands that only talk to a pool (``status``, ``submit``, ``devices``) take no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import filelock

from poolnet_desktop.runtime.security.identity import write_private_file

log = logging.getLogger(__name__)

LOCK_FILE = "instance.lock"
HOLDER_FILE = "instance.json"
# Where a running window listens for a second one asking it to come to the front. A Unix
# socket inside the 0700 data folder: only this user reaches it.
SHOW_SOCKET = "window.sock"
_SHOW = b"show\n"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a data folder: a process id and what it is (``"poolnet join"``, ...)."""

    pid: int
    program: str


class AlreadyRunning(Exception):
    """Another PoolNet process holds this data folder; ``holder`` says which, when known."""

    def __init__(self, data_dir: Path, holder: Holder | None) -> None:
        self.data_dir = data_dir
        self.holder = holder
        who = f"{holder.program} (process {holder.pid})" if holder else "another PoolNet process"
        super().__init__(f"{who} is already sharing this computer from {data_dir}")


class InstanceLock:
    """The data folder's lock; ``acquire`` raises ``AlreadyRunning``, ``release`` is idempotent."""

    def __init__(self, data_dir: Path, program: str) -> None:
        self.data_dir = data_dir
        self.program = program
        self._lock = filelock.FileLock(data_dir / LOCK_FILE, timeout=0, thread_local=False)

    def acquire(self) -> InstanceLock:
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise AlreadyRunning(self.data_dir, read_holder(self.data_dir)) from None
        holder = {"pid": os.getpid(), "program": self.program}
        write_private_file(self.data_dir / HOLDER_FILE, json.dumps(holder).encode())
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            (self.data_dir / HOLDER_FILE).unlink(missing_ok=True)
            self._lock.release()


def read_holder(data_dir: Path) -> Holder | None:
    """Who wrote the holder file last; None if it is missing or unreadable (being written)."""
    try:
        data = json.loads((data_dir / HOLDER_FILE).read_text())
        return Holder(pid=int(data["pid"]), program=str(data["program"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _show_socket(data_dir: Path) -> str | None:
    """The socket's path, or None where there is none (Windows; a path too long for AF_UNIX)."""
    path = str(data_dir / SHOW_SOCKET)
    if sys.platform == "win32" or len(os.fsencode(path)) >= 104:  # sun_path: 104 on macOS
        return None
    return path


async def listen_for_show(data_dir: Path, show: Callable[[], None]) -> asyncio.AbstractServer | None:
    """Call ``show`` whenever a second window on this data folder asks; the caller must hold
    the lock (so a socket file left by a killed window is stale and may be replaced)."""
    path = _show_socket(data_dir)
    if path is None:
        return None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            async with asyncio.timeout(2):
                if await reader.readexactly(len(_SHOW)) == _SHOW:
                    show()
        writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        return await asyncio.start_unix_server(answer, path)
    except OSError as exc:
        log.warning("a second window cannot bring this one to the front: %s", exc)
        return None


async def ask_to_show(data_dir: Path) -> bool:
    """Ask the window holding ``data_dir`` to come to the front; False if none answered."""
    path = _show_socket(data_dir)
    if path is None:
        return False
    try:
        async with asyncio.timeout(2):
            _, writer = await asyncio.open_unix_connection(path)
            writer.write(_SHOW)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return True
