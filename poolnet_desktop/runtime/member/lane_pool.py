"""The lanes a member keeps: made when a task's shards first need one (or ahead, as a spare
for the next task), lent to one shard at a time, renewed between shards, and closed once idle
(``runtime/member/task_sandbox.py`` is one lane)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from poolnet_desktop.runtime.member import native_launcher
from poolnet_desktop.runtime.member.folders import remove_tree
from poolnet_desktop.runtime.member.runner import python_command
from poolnet_desktop.runtime.member.sandbox import (
    PRIVATE_TEMP,
    Sandbox,
    listening_sockets,
    resolver_state,
    socket_masks,
)
from poolnet_desktop.runtime.member.task_sandbox import LauncherCommand, SandboxEnded, TaskSandbox

log = logging.getLogger(__name__)

# After a lane could not be made, shards get a sandbox each for this long before another try.
RETRY_AFTER = 60.0
# A task with no shard in a lane for this long gives the lane back.
IDLE_CLOSE_AFTER = 10.0
# How often what a lane hides and shows is looked at again: the sockets bound on this machine
# (one read of /proc/net/unix; a lane made before a socket was bound does not hide it) and the
# resolver configuration (a lane keeps the file it was made with). A lane made before a
# change is not lent again once it is seen.
RECHECK = 1.0
# A spare lane is made once the lanes were left alone this long (a task that goes on wants the
# core more), and waits, bound to no task and having run nothing, for the next task's first
# shard.
SPARE_AFTER = 1.0
# How long a member's stop waits for its lanes' sandboxes to end (a process stuck in the
# kernel can hold one; a window's quit must not hang on it): then it goes on, and says so.
CLOSE_WAIT = 5.0

SandboxKey = tuple[object, ...]


def launcher_command() -> LauncherCommand:
    """How this member runs its lanes' launchers: the build of the C one where it has one."""
    native = native_launcher.find()
    if native is None:
        log.info("lanes run the launcher in Python: no build of %s that runs here", native_launcher.SOURCE.name)
    return LauncherCommand(tuple(python_command()), native)


class LanePool:
    """The member's lanes, by key (a task, and what its shards need bound in); one idle for
    ``idle_after`` seconds is closed.

    A lane is ready some 15 ms after it is asked for with the C launcher, 60-100 ms with the
    Python one (``benchmarks/bench_launcher.py``): ``ready`` never waits for one. Until a lane
    is free, a task's shards run in sandboxes of their own (some 30 ms each), as do the shards
    of one-shard tasks, which would never reuse one. On a busy core a task's first lane took
    100-150 ms to come with the Python launcher, almost a tenth of a 2,000-shard task of
    ``true``: so, once asked to (``keep_spare``), the pool keeps one lane made ahead for the
    next task whose shards need nothing bound in (no GPU, no environment). It is as new as one
    made then: it has run nothing, and what the machine changed since is looked at as for any
    free lane (``_outdated``)."""

    def __init__(self, sandbox: Sandbox, root: Path, launcher: LauncherCommand,
                 take_folder: Callable[[], Path], idle_after: float = IDLE_CLOSE_AFTER,
                 spare_after: float = SPARE_AFTER) -> None:
        self.sandbox = sandbox
        self.root = root
        self.launcher = launcher
        self.take_folder = take_folder
        self.idle_after = idle_after
        self.spare_after = spare_after
        self.close_wait = CLOSE_WAIT
        self._free: dict[SandboxKey, list[TaskSandbox]] = {}
        self._closers: dict[TaskSandbox, asyncio.TimerHandle] = {}
        self._opening: dict[SandboxKey, asyncio.Task[None]] = {}
        self._busy: set[TaskSandbox] = set()
        self.broken = ""  # why the last lane could not be made; none is tried for a while
        self._retry_at = 0.0
        self.recheck = RECHECK
        self._sockets: frozenset[Path] = frozenset()
        self._resolver: tuple[object, ...] = ()
        self._read_at = float("-inf")
        self._keep_spare = False
        self._spare: TaskSandbox | None = None
        self._spare_opening: asyncio.Task[None] | None = None
        self._spare_timer: asyncio.TimerHandle | None = None
        self._lent = 0  # lanes asked for so far: the spare waits for a while with none
        self._lent_when_armed = 0
        self._removals: set[asyncio.Future[None]] = set()  # closed lanes, until gone and removed

    def ready(self, key: SandboxKey, gpus: Sequence[int], visible: Sequence[Path]) -> TaskSandbox | None:
        """A free lane for ``key``, held until ``release``; else None, and one is being made."""
        self._lent += 1
        if self._spare_timer is None:
            self._arm_spare()
        free = self._free.get(key, [])
        while free:
            lane = free.pop()
            self._closers.pop(lane).cancel()
            if not lane.ended and not self._outdated(lane):
                self._busy.add(lane)
                return lane
            self._discard(lane)
        if self._spare is not None and not gpus and not visible:
            lane, self._spare = self._spare, None
            if not lane.ended and not self._outdated(lane):
                self._busy.add(lane)
                return lane
            self._discard(lane)
        if key not in self._opening and asyncio.get_running_loop().time() >= self._retry_at:
            self._opening[key] = asyncio.ensure_future(self._open(key, gpus, visible))
        return None

    def _outdated(self, lane: TaskSandbox) -> bool:
        """Whether the machine changed since ``lane`` was made in a way its sandbox does not
        follow: a socket bound where no sandbox hides it (its folder, or itself, is hidden
        only in sandboxes made from now on), or a new resolver configuration."""
        now = asyncio.get_running_loop().time()
        if now - self._read_at >= self.recheck:
            self._sockets, self._resolver, self._read_at = frozenset(listening_sockets()), resolver_state(), now
        if self._resolver != lane.resolver_seen:
            log.info("a lane is made anew: the resolver configuration changed since it was made")
            return True
        folders, files = socket_masks(sorted(self._sockets - lane.sockets_seen), [*self.sandbox.hidden, *PRIVATE_TEMP], ())
        if folders or files:
            log.info("a lane is made anew: a socket was bound since it was made (in %s)", (folders or files)[0])
        return bool(folders or files)

    async def acquire(self, key: SandboxKey, gpus: Sequence[int], visible: Sequence[Path]) -> TaskSandbox:
        """A free lane for ``key``, waited for; raises ``SandboxEnded`` if none can be made."""
        while (lane := self.ready(key, gpus, visible)) is None:
            opening = self._opening.get(key)
            if opening is None:  # the last try failed, and the next is not due yet
                raise SandboxEnded(errno.ENOENT, f"no task sandbox can be made here: {self.broken}")
            await asyncio.shield(opening)
        return lane

    async def _open(self, key: SandboxKey, gpus: Sequence[int], visible: Sequence[Path]) -> None:
        try:
            lane = await self._make(gpus, visible)
        finally:
            self._opening.pop(key, None)
        if lane is not None:
            self._park(key, lane)

    async def _make(self, gpus: Sequence[int], visible: Sequence[Path]) -> TaskSandbox | None:
        """A new lane; None if it could not be made (then none is tried for ``RETRY_AFTER``)."""
        folder: Path | None = None
        try:  # a name no lane had: one that is gone may have left its folder behind
            folder = Path(tempfile.mkdtemp(prefix="lane-", dir=self.root))
            lane = await TaskSandbox.open(self.sandbox, folder, self.launcher, gpus, visible, self.take_folder)
        except (OSError, TimeoutError) as exc:
            self.broken = str(exc) or type(exc).__name__
            self._retry_at = asyncio.get_running_loop().time() + RETRY_AFTER
            log.warning("each shard gets a sandbox of its own: no sandbox for a task's shards can be made (%s)",
                        self.broken)
            if folder is not None:
                await asyncio.to_thread(remove_tree, folder)
            return None
        self.broken = ""
        return lane

    # ---- the spare -----------------------------------------------------------------------

    def keep_spare(self) -> None:
        """From now on keep a lane made ahead for the next task, once the lanes are left alone
        for ``spare_after`` seconds (and again after each is taken)."""
        self._keep_spare = True
        if self._spare_timer is None:
            self._arm_spare()

    def _arm_spare(self) -> None:
        if self._keep_spare:
            self._lent_when_armed = self._lent
            self._spare_timer = asyncio.get_running_loop().call_later(self.spare_after, self._spare_due)

    def _spare_due(self) -> None:
        """Make the spare if none is, and no lane was asked for since the timer was set; while
        shards come, look again later (a timer per ``spare_after``, not per shard). A member at
        rest wakes for this once, and not again until a shard comes."""
        self._spare_timer = None
        if self._spare is not None and self._spare.ended:  # its sandbox died while it waited
            self._discard(self._spare)
            self._spare = None
        if self._spare is not None or self._spare_opening is not None:
            return
        if self._lent != self._lent_when_armed or self._opening:
            self._arm_spare()
        elif asyncio.get_running_loop().time() >= self._retry_at:
            self._spare_opening = asyncio.ensure_future(self._open_spare())

    async def _open_spare(self) -> None:
        try:
            lane = await self._make((), ())
        finally:
            self._spare_opening = None
        if lane is None:
            return
        if self._keep_spare:
            self._spare = lane
        else:  # the pool closed meanwhile
            self._discard(lane)

    async def release(self, key: SandboxKey, lane: TaskSandbox) -> None:
        """The lane's shard ended and its folder was sealed: renew the lane for the next one."""
        self._busy.discard(lane)
        if not lane.ended:
            try:
                await lane.renew()
            except OSError as exc:
                lane.fail(f"it could not be renewed: {exc}")
            except BaseException:  # cancelled meanwhile: the lane is no one's, so it goes
                lane.fail("its renewal was cancelled", quiet=True)
                self._discard(lane)
                raise
        if lane.ended:
            self._discard(lane)
        else:
            self._park(key, lane)

    def _park(self, key: SandboxKey, lane: TaskSandbox) -> None:
        self._free.setdefault(key, []).append(lane)
        self._closers[lane] = asyncio.get_running_loop().call_later(self.idle_after, self._close_idle, key, lane)

    def _close_idle(self, key: SandboxKey, lane: TaskSandbox) -> None:
        free = self._free.get(key, [])
        if lane in free:
            free.remove(lane)
            if not free:
                del self._free[key]
            del self._closers[lane]
            self._discard(lane)

    def _discard(self, lane: TaskSandbox, why: str = "no shard of its task is left here") -> None:
        lane.close(why)
        removal = asyncio.ensure_future(self._remove_when_gone(lane))
        self._removals.add(removal)
        removal.add_done_callback(self._removals.discard)

    @staticmethod
    async def _remove_when_gone(lane: TaskSandbox) -> None:
        with contextlib.suppress(TimeoutError):
            await lane.gone()
        await asyncio.to_thread(remove_tree, lane.folder)

    async def close_all(self) -> None:
        """Close every lane, the spare and those being made, and wait (``close_wait`` at most)
        until each sandbox is gone and its folder removed: a lane still closing when the loop
        stops leaves its watch on a descriptor behind (under Qt's loop, a notifier that outlives
        it)."""
        self._keep_spare = False
        if self._spare_timer is not None:
            self._spare_timer.cancel()
            self._spare_timer = None
        openings = [*self._opening.values(), *([self._spare_opening] if self._spare_opening else [])]
        for opening in openings:
            opening.cancel()
        lanes = [lane for free in self._free.values() for lane in free] + list(self._busy)
        if self._spare is not None:
            lanes.append(self._spare)
            self._spare = None
        for closer in self._closers.values():
            closer.cancel()
        self._closers.clear()
        self._free.clear()
        self._busy.clear()
        for lane in lanes:
            self._discard(lane, "the member stops")
        try:
            async with asyncio.timeout(self.close_wait):
                await asyncio.gather(*openings, *self._removals, return_exceptions=True)
        except TimeoutError:
            log.warning("%d task sandbox(es) had not ended %.0f s after the member stopped them",
                        len(self._removals), self.close_wait)
