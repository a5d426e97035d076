"""Each sandbox in a Landlock domain of its own, scoped: no abstract Unix socket and no signal
across its edge.

While tasks may use the network, every sandbox shares the member's network namespace, and so
the abstract Unix socket namespace: shard A could pass a descriptor of its own folder to shard
B, in another sandbox, of another task, over an abstract socket, and B could then swap what
the member reads and writes there for symlinks (an attacker's review did it), or a shard could
reach the desktop's X server. Landlock's scopes (Linux 6.12, ABI 6) close that: a process in a
scoped domain connects to no abstract socket made outside its domain, and signals no process
outside it. ``spawn_scoped`` starts a process from a new thread that first restricts itself
(Landlock and ``no_new_privs`` are per thread and inherited), so each sandbox gets a domain of
its own, and the member itself stays unrestricted; the thread lives as long as its process.
Nothing of the file system is restricted: bubblewrap does that.

Where the kernel has no scopes, ``scopes_supported`` is False and the member says so.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

P = TypeVar("P", bound="subprocess.Popen[Any]")

_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1
_LANDLOCK_SCOPE_SIGNAL = 2
_SCOPES_ABI = 6
_PR_SET_NO_NEW_PRIVS = 38


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def scopes_supported() -> bool:
    """True where this kernel has Landlock with scopes (ABI 6 or later) and it is enabled."""
    if not sys.platform.startswith("linux"):
        return False
    abi = _libc().syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    return bool(abi >= _SCOPES_ABI)


def restrict_this_thread() -> None:
    """Put the calling thread (and all it starts from now on) in a new scoped domain."""
    libc = _libc()
    attr = _RulesetAttr(0, 0, _LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | _LANDLOCK_SCOPE_SIGNAL)
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def _wait_for_end(pid: int) -> None:
    """Block until process ``pid`` has ended (it may stay unreaped: the member reaps it)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no descriptor to be had: look now and then instead
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(1.0)
    try:
        poller = select.poll()  # not select(): a descriptor past 1023 is common in a host
        poller.register(pidfd, select.POLLIN)
        while not poller.poll():
            pass
    finally:
        os.close(pidfd)


def spawn_scoped(start: Callable[[], P]) -> P:
    """Run ``start`` (it starts a process: a ``Popen``) in a new thread in a new scoped
    domain; return its process, or raise what it raised. Blocking for as long as ``start``
    is, plus a thread's start: call it where a ``Popen`` would be called.

    The thread stays, asleep on a pidfd, until that process ends: a process's parent, for
    ``PR_SET_PDEATHSIG`` (bwrap's ``--die-with-parent``), is the thread that started it, and
    the sandbox would be killed the moment its thread ended.
    """
    handed: queue.SimpleQueue[P | BaseException] = queue.SimpleQueue()

    def run() -> None:
        try:
            restrict_this_thread()
            process = start()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            handed.put(exc)
            return
        handed.put(process)
        _wait_for_end(process.pid)

    threading.Thread(target=run, name="poolnet-sandbox-parent", daemon=True).start()
    outcome = handed.get()
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
