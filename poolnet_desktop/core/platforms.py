"""Which members may run a task, by platform: the manifest's ``platform`` list, or the
platforms its command can run on.

A member says its platform in its ``hello`` (``linux``, ``windows``, ``macos``, as
``runtime.net.discovery.platform_name`` names it). A task either lists the platforms it runs on
(``platform = ["linux", "macos"]``), or gets them from its command: a POSIX shell (``sh``,
``bash``, a ``.sh`` script) never runs on Windows, ``cmd``/``.bat`` and Windows PowerShell
(``powershell``/``.ps1``) only there, and anything else (``{python}``, a program on the PATH,
a ``shell = true`` line, which the member gives to its own shell) anywhere. An explicit list
wins over the command: ``sh`` exists on a Windows machine with Git installed, and its owner
knows.

The scheduler never places a shard on a member of another platform (``core.scheduler``);
a task no member of the pool runs is refused at submission as ``unfit``.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PLATFORMS = ("linux", "windows", "macos")
POSIX = frozenset({"linux", "macos"})
WINDOWS = frozenset({"windows"})

_POSIX_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
_WINDOWS_PROGRAMS = frozenset({"cmd", "powershell"})
_POSIX_SUFFIXES = (".sh",)
_WINDOWS_SUFFIXES = (".bat", ".cmd", ".ps1")


@dataclass(frozen=True, slots=True)
class PlatformNeed:
    """Where a task may run: ``platforms`` (None: any member) and why, in words, for the
    ``unfit`` refusal and the window (``"a sh command"``, ``"its manifest"``)."""

    platforms: frozenset[str] | None
    why: str = ""

    def allows(self, platform: str) -> bool:
        return self.platforms is None or platform in self.platforms

    def describe(self) -> str:
        """``"linux or macos (a sh command)"``; empty when any platform will do."""
        if self.platforms is None:
            return ""
        names = " or ".join(name for name in PLATFORMS if name in self.platforms)
        return f"{names} ({self.why})" if self.why else names


ANY_PLATFORM = PlatformNeed(None)


def check_platforms(platforms: Sequence[str]) -> None:
    """A manifest's list: known names, each once, at least one."""
    if not platforms:
        raise ValueError(f"platform lists no platform: name some of {', '.join(PLATFORMS)}")
    for name in platforms:
        if name not in PLATFORMS:
            raise ValueError(f"unknown platform {name!r} (known: {', '.join(PLATFORMS)})")
    if len(set(platforms)) != len(platforms):
        raise ValueError("platform names a platform twice")


def command_platforms(command: Sequence[str], shell: bool) -> PlatformNeed:
    """The platforms that can run ``command`` as written, judged by its program."""
    if shell or not command:
        return ANY_PLATFORM
    program = command[0].replace("\\", "/").rsplit("/", 1)[-1].lower()
    if program.endswith(".exe"):
        program = program[: -len(".exe")]
    if program in _POSIX_SHELLS or program.endswith(_POSIX_SUFFIXES):
        return PlatformNeed(POSIX, f"a {program} command")
    if program in _WINDOWS_PROGRAMS or program.endswith(_WINDOWS_SUFFIXES):
        return PlatformNeed(WINDOWS, f"a {program} command")
    return ANY_PLATFORM


def task_platforms(declared: Sequence[str], command: Sequence[str], shell: bool) -> PlatformNeed:
    """Where a task runs: its manifest's ``platform`` list if it has one, else its command's."""
    if declared:
        return PlatformNeed(frozenset(declared), "its manifest's platform list")
    return command_platforms(command, shell)


def platform_refusal(need: PlatformNeed, member_platforms: Iterable[str]) -> str | None:
    """Why no member of the pool can run the task, or None if one can."""
    present = sorted(set(member_platforms))
    if need.platforms is None or any(need.allows(name) for name in present):
        return None
    members = ", ".join(present) if present else "none"
    return f"it runs on {need.describe()} only, and no member does (members' platforms: {members})"
