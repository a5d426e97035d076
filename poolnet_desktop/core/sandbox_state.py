"""Whether a member runs tasks, and how contained: decided from plain values.

A member that can make a sandbox runs every shard in it (``"bwrap"``). One that cannot (no
bubblewrap, user namespaces off, Windows, macOS) takes no tasks (``"none"``) unless its owner
opted in to running them without one (``"unsandboxed"``). The member tells the host its state
in its hello, so the host and its observers can show it.
"""

from __future__ import annotations

from typing import Literal

SandboxState = Literal["bwrap", "none", "unsandboxed"]


def sandbox_state(available: bool, allow_unsandboxed: bool) -> SandboxState:
    """The state of a member that can (``available``) or cannot make a sandbox."""
    if available:
        return "bwrap"
    return "unsandboxed" if allow_unsandboxed else "none"


def takes_tasks(state: SandboxState) -> bool:
    """A member with no sandbox takes tasks only if its owner said so."""
    return state != "none"


def describe(state: str, why_not: str = "", as_root: bool = False) -> str:
    """One line for people: the CLI at start, ``poolnet status``, the device card. An empty
    state is an older member that did not say. ``as_root``: the member runs as root, which
    its owner is warned of where it takes tasks (a sandbox drops root's capabilities, not its
    ownership of the files only root may read and of the device files bwrap binds in, nor the
    kernel's exemption of root from the process limit)."""
    if state == "bwrap":
        line = "tasks run in a sandbox (bubblewrap)"
        danger = ("shards can read the files only root may read (/etc/shadow, SSH host keys, saved Wi-Fi "
                  "passwords), change the device files the sandbox shares (/dev/null, the GPUs) and start "
                  "processes past the kernel's limit on them")
    elif state == "unsandboxed":
        line, danger = "runs tasks without a sandbox", "a task can do anything on this machine"
    elif state == "none":
        because = f" ({why_not})" if why_not else ""
        return f"no sandbox here{because}: not taking tasks; --allow-unsandboxed runs them without one"
    else:
        return ""
    return f"{line}; as root, {danger}: run poolnet as an ordinary user" if as_root else line


def short(state: str) -> str:
    """A word or two for a table column or a card."""
    return {"bwrap": "sandboxed", "none": "no sandbox: no tasks",
            "unsandboxed": "no sandbox"}.get(state, "")
