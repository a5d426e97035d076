"""Where each shard runs: a priority queue of shards and the free share of every member.

Pure and fast: no I/O, no clock. The coordinator drives it:

1. ``set_member`` when a member joins or its share changes (``core.resources.shared_capacity``),
   ``remove_member`` when it leaves: the shards it held come back to be marked lost/requeued.
2. ``check_fits_somewhere`` when a task is submitted (refuse it if it raises ``Unschedulable``),
   then ``submit`` its shards.
3. ``place`` after anything changes: it returns the placements to send to members. Each placed
   shard holds its demand on the member until ``release``.
4. ``requeue`` / ``withdraw`` / ``remove_task`` as ``core.tasks.Change`` says.
5. ``waiting_reason`` to show why a task's shards are not running.

Shards held ahead (``Scheduler(ahead=N)``): a member that must wait for a round trip to the
coordinator after each shard idles for that long, which for a stream of tiny shards costs more
than the shards themselves. Once no free share fits, ``place`` may therefore queue up to
``ahead`` shards behind each running shard of a member (``Placement.after``). The member runs
such a shard only when the one it follows ends, and it inherits that shard's hold: it never
asks more than that shard (every dimension, GPUs a subset of its GPUs), so what a member runs
never exceeds its share. ``release`` of a running shard hands its hold to its successor;
``release`` of a waiting one closes the gap in its chain.

How deep depends on the task (``set_ahead``, ``ahead_for``): deep enough to cover a round
trip for tiny shards, none for long ones, which would only sit on one member while another
frees up or joins.

Order: priority (higher first), then submission order; a retried shard goes to the front of
its task. A task whose next shard fits no free share does not stop the tasks behind it
(backfill), but it reserves the one member where it would fit soonest, so a large shard is not
starved by a stream of small ones behind it.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from poolnet_desktop.core.platforms import ANY_PLATFORM, PlatformNeed, platform_refusal
from poolnet_desktop.core.resources import ResourceVector

_EPS = 1e-9
_ZERO = ResourceVector()

ShardKey = tuple[str, int]


class Unschedulable(ValueError):
    """A shard asks more than any member shares: refused at submission, never queued."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Run shard ``shard`` of ``task_id`` on ``device_id``, pinned to ``gpu_indices``; with
    ``after``, only once that shard (on the same member) has ended."""

    task_id: str
    shard: int
    device_id: str
    gpu_indices: tuple[int, ...]
    after: ShardKey | None = None


@dataclass(slots=True)
class _Member:
    """A member's share and what holds it. ``spare`` and ``load`` are kept up to date by
    ``reshare``/``take``/``give_back``: a placement pass reads them for every member, thousands
    per pass, so they are worked out once per change rather than once per look."""

    id: str
    order: int
    capacity: ResourceVector
    gpu_indices: tuple[int, ...]
    platform: str = ""
    used: ResourceVector = _ZERO
    held_gpus: set[int] = field(default_factory=set)
    shards: set[ShardKey] = field(default_factory=set)
    waiting: set[ShardKey] = field(default_factory=set)
    spare: ResourceVector = _ZERO
    load: float = 1.0

    def __post_init__(self) -> None:
        self._recount()

    def reshare(self, capacity: ResourceVector, gpu_indices: tuple[int, ...]) -> None:
        if capacity != self.capacity or gpu_indices != self.gpu_indices:
            self.capacity, self.gpu_indices = capacity, gpu_indices
            self._recount()

    def take(self, key: ShardKey, demand: ResourceVector, gpus: tuple[int, ...]) -> None:
        self.shards.add(key)
        self.held_gpus.update(gpus)
        self.used = self.used + demand
        self._recount()

    def give_back(self, key: ShardKey, demand: ResourceVector, gpus: tuple[int, ...]) -> None:
        self.shards.discard(key)
        self.held_gpus.difference_update(gpus)
        # Reset to exact zero when idle so float sums cannot drift over millions of shards.
        self.used = self.used - demand if self.shards else _ZERO
        self._recount()

    def free_gpus(self) -> list[int]:
        """Lent GPUs no shard holds, but never more than the share has room for: after the
        share shrank under running shards, a GPU index may be idle yet not lendable."""
        room = max(0, len(self.gpu_indices) - len(self.held_gpus))
        return [index for index in self.gpu_indices if index not in self.held_gpus][:room]

    def fits(self, demand: ResourceVector) -> bool:
        return demand.fits_in(self.spare)

    def _recount(self) -> None:
        """Twice per shard (taken, given back): plain arithmetic, no generator."""
        used, capacity = self.used, self.capacity
        rest = capacity - used
        self.spare = ResourceVector(rest.cpu, rest.memory_mb, rest.storage_mb,
                                    len(self.free_gpus()) if self.gpu_indices else 0)
        # The fullest dimension's share in use: what "least loaded" compares (1 if none is lent).
        load = -math.inf
        if capacity.cpu > 0:
            load = used.cpu / capacity.cpu
        if capacity.memory_mb > 0:
            load = max(load, used.memory_mb / capacity.memory_mb)
        if capacity.storage_mb > 0:
            load = max(load, used.storage_mb / capacity.storage_mb)
        if self.gpu_indices:
            load = max(load, len(self.held_gpus) / len(self.gpu_indices))
        self.load = 1.0 if load == -math.inf else load


@dataclass(slots=True)
class _Queued:
    task_id: str
    demand: ResourceVector
    key: tuple[int, int, str]
    pending: deque[int]
    ahead: int
    need: PlatformNeed = ANY_PLATFORM

    def runs_on(self, member: _Member) -> bool:
        return self.need.allows(member.platform)


@dataclass(frozen=True, slots=True)
class _Hold:
    member_id: str
    demand: ResourceVector
    gpus: tuple[int, ...]


class Scheduler:
    """Shards waiting, shards holding members' resources, and the members' shares.

    ``ahead``: how many shards may wait on a member behind each of its running shards, at
    most (0: none; see the module docstring). A task starts at one (``set_ahead``)."""

    def __init__(self, ahead: int = 0) -> None:
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self.ahead = ahead
        self._members: dict[str, _Member] = {}
        self._tasks: dict[str, _Queued] = {}
        self._order: list[tuple[int, int, str]] = []  # keys of tasks with pending shards
        self._running: dict[ShardKey, _Hold] = {}
        self._waiting: dict[ShardKey, _Hold] = {}  # held ahead on a member, holding nothing
        self._after: dict[ShardKey, ShardKey] = {}  # waiting shard -> the shard it follows
        self._next: dict[ShardKey, ShardKey] = {}  # shard -> the waiting shard behind it
        self._seq = 0
        self._member_seq = 0

    # --- members ---

    def set_member(
        self,
        member_id: str,
        capacity: ResourceVector,
        gpu_indices: Sequence[int] | None = None,
        platform: str = "",
    ) -> None:
        """Add a member or change its share. ``gpu_indices`` (default ``0..gpus-1``) are the
        CUDA indices it lends, one per GPU in ``capacity``; ``platform`` is the one its hello
        named (``core.platforms``). Shards already running stay, even if the new share is
        smaller; nothing new is placed there until it fits again."""
        indices = tuple(range(capacity.gpus) if gpu_indices is None else gpu_indices)
        member = self._members.get(member_id)
        if member is not None and capacity == member.capacity and indices == member.gpu_indices:
            member.platform = platform
            return  # every member report asks: nearly always unchanged
        if min(capacity.cpu, capacity.memory_mb, capacity.storage_mb, capacity.gpus) < 0:
            raise ValueError(f"member {member_id}: negative capacity {capacity}")
        if len(indices) != capacity.gpus or len(set(indices)) != len(indices):
            raise ValueError(
                f"member {member_id}: {capacity.gpus} GPU(s) need as many distinct indices, "
                f"got {list(indices)}"
            )
        if member is None:
            self._member_seq += 1
            self._members[member_id] = _Member(
                member_id, self._member_seq, capacity, indices, platform
            )
        else:
            member.platform = platform
            member.reshare(capacity, indices)

    def remove_member(self, member_id: str) -> list[ShardKey]:
        """Forget a member; returns the ``(task_id, shard)`` it was running or holding ahead,
        now released. The caller marks each lost (``Task.mark_lost``) and requeues it if that
        says so."""
        member = self._members.pop(member_id, None)
        if member is None:
            return []
        for key in member.shards:
            del self._running[key]
        for key in member.waiting:
            del self._waiting[key]
        for key in member.shards | member.waiting:
            self._after.pop(key, None)
            self._next.pop(key, None)
        return sorted(member.shards | member.waiting)

    def member_usage(self, member_id: str) -> tuple[ResourceVector, ResourceVector]:
        """(capacity, in use by its running shards) of a known member."""
        member = self._members[member_id]
        return member.capacity, member.used

    def running_on(self, member_id: str) -> list[ShardKey]:
        """The shards holding the member's share (not those waiting behind them)."""
        member = self._members.get(member_id)
        return sorted(member.shards) if member else []

    def placed_on(self, member_id: str) -> set[ShardKey]:
        """Every shard placed on the member: running, or waiting there behind another."""
        member = self._members.get(member_id)
        return member.shards | member.waiting if member else set()

    # --- tasks ---

    def check_fits_somewhere(
        self, demand: ResourceVector, need: PlatformNeed = ANY_PLATFORM
    ) -> None:
        """Raise ``Unschedulable`` if no member's whole share could ever hold one shard, or
        no member runs a platform the task runs on."""
        _check_demand(demand)
        if not self._members:
            raise Unschedulable(f"no member shares resources; each shard needs {describe(demand)}")
        refusal = platform_refusal(need, (m.platform for m in self._members.values()))
        if refusal is not None:
            raise Unschedulable(refusal)
        able = [m for m in self._members.values() if need.allows(m.platform)]
        if any(demand.fits_in(member.capacity) for member in able):
            return
        closest = min(able, key=lambda m: (len(demand.shortfall(m.capacity)), m.order))
        raise Unschedulable(
            f"each shard needs {describe(demand)}, more than any member shares; the closest, "
            f"{closest.id}, cannot give {', '.join(demand.shortfall(closest.capacity))}"
        )

    def submit(
        self,
        task_id: str,
        demand: ResourceVector,
        shards: Iterable[int],
        priority: int = 0,
        need: PlatformNeed = ANY_PLATFORM,
    ) -> None:
        """Queue a task's shards (all of them, or after a restart those still queued), to be
        placed only on members of a platform in ``need``. Does not check the fit: call
        ``check_fits_somewhere`` first for a new task."""
        _check_demand(demand)
        if task_id in self._tasks:
            raise ValueError(f"task {task_id} is already submitted")
        self._seq += 1
        key = (-priority, self._seq, task_id)
        task = _Queued(task_id, demand, key, deque(shards), min(1, self.ahead), need)
        self._tasks[task_id] = task
        if task.pending:
            bisect.insort(self._order, task.key)

    def set_ahead(self, task_id: str, depth: int) -> None:
        """How many of the task's shards may wait behind each running shard (at most the
        scheduler's ``ahead``); shards already waiting stay."""
        task = self._tasks.get(task_id)
        if task is not None:
            task.ahead = max(0, min(depth, self.ahead))

    def submitted(self, task_id: str) -> bool:
        """Whether the task is queued here (submitted and not removed)."""
        return task_id in self._tasks

    def requeue(self, task_id: str, shard: int) -> None:
        """Put a shard back at the front of its task (a retry). It must not be running."""
        task = self._task(task_id)
        if (task_id, shard) in self._running or (task_id, shard) in self._waiting:
            raise ValueError(f"shard {shard} of task {task_id} is running: release it first")
        if shard in task.pending:
            raise ValueError(f"shard {shard} of task {task_id} is already queued")
        if not task.pending:
            bisect.insort(self._order, task.key)
        task.pending.appendleft(shard)

    def withdraw(self, task_id: str, shard: int) -> bool:
        """Drop a queued shard that no longer needs to run; False if it was not queued."""
        task = self._tasks.get(task_id)
        if task is None or shard not in task.pending:
            return False
        task.pending.remove(shard)
        if not task.pending:
            self._unorder(task)
        return True

    def remove_task(self, task_id: str) -> list[int]:
        """Forget a finished or cancelled task; returns its shards that were still queued.
        Running shards keep their hold until ``release``."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return []
        if task.pending:
            self._unorder(task)
        return list(task.pending)

    def adopt(
        self, task_id: str, shard: int, member_id: str, gpu_indices: Sequence[int] = ()
    ) -> None:
        """Record a shard found running on a member (after a coordinator restart), so its
        resources count as held. May exceed the member's share: it is already running."""
        task = self._task(task_id)
        if member_id not in self._members:
            raise ValueError(f"unknown member {member_id}")
        if (task_id, shard) in self._running or (task_id, shard) in self._waiting:
            raise ValueError(f"shard {shard} of task {task_id} is already running")
        self.withdraw(task_id, shard)
        self._hold(self._members[member_id], task_id, shard, task.demand, tuple(gpu_indices))

    def release(self, task_id: str, shard: int) -> bool:
        """A shard ended (or was lost): its member's share is free again, or handed to the
        shard waiting behind it, which the member starts on its own. False if the scheduler
        held nothing for it, which makes repeated calls harmless."""
        key = (task_id, shard)
        if key in self._waiting:
            self._unchain(key)
            return True
        hold = self._running.pop(key, None)
        if hold is None:
            return False
        member = self._members[hold.member_id]
        member.give_back(key, hold.demand, hold.gpus)
        successor = self._next.pop(key, None)
        if successor is not None:
            del self._after[successor]
            follower = self._waiting.pop(successor)
            member.waiting.discard(successor)
            self._hold(member, *successor, follower.demand, follower.gpus)
        return True

    # --- placing ---

    @property
    def has_queued(self) -> bool:
        """Whether any shard waits to be placed: ``place`` has nothing to do otherwise."""
        return bool(self._order)

    def place(self) -> list[Placement]:
        """Place every queued shard that fits a member's free share, in queue order, each on
        the least-loaded member that fits. Call again after any change."""
        if not self._order:
            return []
        placements: list[Placement] = []
        reserved: set[str] = set()
        members = [m for m in self._members.values() if m.spare.cpu > _EPS]
        # Members that may hold shards ahead; one gains room only when a shard is placed on
        # its free share, so a pass over ``members`` keeps this up to date.
        ahead = {m.id: m for m in self._members.values() if self._has_room_ahead(m)}
        for key in list(self._order):
            if not members and not ahead:
                break
            task = self._tasks[key[2]]
            demand = task.demand
            platforms = task.need.platforms  # looked up once: this loop is the hot path
            heap = [
                (m.load, m.order, m.id)
                for m in members
                if m.id not in reserved and m.fits(demand)
                and (platforms is None or m.platform in platforms)
            ]
            heapq.heapify(heap)
            while task.pending and heap:
                _, order, member_id = heapq.heappop(heap)
                member = self._members[member_id]
                shard = task.pending.popleft()
                gpus = tuple(member.free_gpus()[: demand.gpus])
                self._hold(member, task.task_id, shard, demand, gpus)
                placements.append(Placement(task.task_id, shard, member_id, gpus))
                if member.fits(demand):
                    heapq.heappush(heap, (member.load, order, member_id))
            if task.pending and task.ahead:
                ahead.update((m.id, m) for m in members if self._has_room_ahead(m))
                placements += self._place_ahead(task, ahead.values(), reserved)
                ahead = {i: m for i, m in ahead.items() if self._has_room_ahead(m)}
            if task.pending:
                self._reserve(task, members, reserved)
            else:
                self._unorder(task)
            members = [m for m in members if m.spare.cpu > _EPS]
        return placements

    def _has_room_ahead(self, member: _Member) -> bool:
        return len(member.waiting) < self.ahead * len(member.shards)

    def _place_ahead(
        self, task: _Queued, members: Iterable[_Member], reserved: set[str]
    ) -> list[Placement]:
        """Queue the task's shards behind running shards that ask at least as much, the
        shortest chain first, up to the task's ``ahead`` deep (see the module docstring).
        Never on a member whose share shrank below what its shards hold: a shard waiting
        there would inherit a hold the member no longer lends."""
        heap: list[tuple[int, int, ShardKey, str]] = []
        platforms = task.need.platforms  # looked up once, as in ``place``
        for member in members:
            if (member.id in reserved or not member.used.fits_in(member.capacity)
                    or (platforms is not None and member.platform not in platforms)):
                continue
            for head in member.shards:
                tail, depth = head, 0
                while tail in self._next:
                    tail, depth = self._next[tail], depth + 1
                if depth < task.ahead and task.demand.fits_in(self._hold_of(tail).demand):
                    heap.append((depth, member.order, tail, member.id))
        heapq.heapify(heap)
        placements = []
        while task.pending and heap:
            depth, order, tail, member_id = heapq.heappop(heap)
            shard = task.pending.popleft()
            key = (task.task_id, shard)
            gpus = self._hold_of(tail).gpus[: task.demand.gpus]
            self._waiting[key] = _Hold(member_id, task.demand, gpus)
            self._members[member_id].waiting.add(key)
            self._after[key] = tail
            self._next[tail] = key
            placements.append(Placement(task.task_id, shard, member_id, gpus, after=tail))
            if depth + 1 < task.ahead:
                heapq.heappush(heap, (depth + 1, order, key, member_id))
        return placements

    def _hold_of(self, key: ShardKey) -> _Hold:
        return self._running.get(key) or self._waiting[key]

    def _unchain(self, key: ShardKey) -> None:
        """Drop a waiting shard; the one behind it follows the one before it instead."""
        hold = self._waiting.pop(key)
        self._members[hold.member_id].waiting.discard(key)
        before = self._after.pop(key)
        behind = self._next.pop(key, None)
        if behind is None:
            del self._next[before]
        else:
            self._next[before] = behind
            self._after[behind] = before

    def pending(self, task_id: str) -> int:
        """How many shards of the task are waiting to be placed."""
        task = self._tasks.get(task_id)
        return len(task.pending) if task else 0

    def queued(self, task_id: str) -> tuple[int, ...]:
        """The task's shards waiting to be placed, next first."""
        task = self._tasks.get(task_id)
        return tuple(task.pending) if task else ()

    def waiting_reason(self, task_id: str) -> str | None:
        """Why the task's queued shards are not running, in words; None if none are queued."""
        task = self._tasks.get(task_id)
        if task is None or not task.pending:
            return None
        demand = task.demand
        members = [m for m in self._members.values() if m.capacity.cpu > _EPS]
        if not members:
            return "waiting: no member is sharing resources"
        members = [m for m in members if task.runs_on(m)]
        if not members:
            return f"waiting: runs on {task.need.describe()}, no such member is sharing"
        if not any(demand.fits_in(m.capacity) for m in members):
            return f"waiting: needs {describe(demand)}, more than any member shares now"
        if demand.gpus and not any(len(m.free_gpus()) >= demand.gpus for m in members):
            return f"waiting: needs {_count(demand.gpus, 'GPU')}, none free"
        if any(m.fits(demand) for m in members):
            return "waiting: behind higher-priority work"
        return f"waiting: needs {describe(demand)}, every member's share is in use"

    # --- internals ---

    def _task(self, task_id: str) -> _Queued:
        task = self._tasks.get(task_id)
        if task is None:
            raise ValueError(f"unknown task {task_id}")
        return task

    def _unorder(self, task: _Queued) -> None:
        index = bisect.bisect_left(self._order, task.key)
        if index < len(self._order) and self._order[index] == task.key:
            del self._order[index]

    def _hold(
        self,
        member: _Member,
        task_id: str,
        shard: int,
        demand: ResourceVector,
        gpus: tuple[int, ...],
    ) -> None:
        self._running[(task_id, shard)] = _Hold(member.id, demand, gpus)
        member.take((task_id, shard), demand, gpus)

    def _reserve(self, task: _Queued, members: list[_Member], reserved: set[str]) -> None:
        """Keep later tasks off the member where this blocked task will fit soonest."""
        candidates = [
            m for m in members
            if m.id not in reserved and task.demand.fits_in(m.capacity) and task.runs_on(m)
        ]
        if candidates:
            soonest = min(candidates, key=lambda m: (m.load, m.order))
            reserved.add(soonest.id)


# Shards held ahead should cover this much of a member's work per slot: a round trip to the
# coordinator and the batching of results, with room for a loaded machine's wake-up delays.
AHEAD_WINDOW = 0.05
# Shards that run at least this long gain nothing from waiting on a member (a round trip is
# a rounding error), and waiting there would keep them from a member that frees up sooner.
LONG_SHARD = 1.0


def ahead_for(mean_seconds: float | None) -> int:
    """How many shards should wait behind each running one, given how long the task's
    shards take (None: not known yet); ``Scheduler.set_ahead`` caps it."""
    if mean_seconds is None:
        return 1
    if mean_seconds >= LONG_SHARD:
        return 0
    return max(1, math.ceil(AHEAD_WINDOW / max(mean_seconds, 1e-6)))


def describe(demand: ResourceVector) -> str:
    """A shard's demand in words: "1 CPU core, 512 MB memory, 1 GPU"."""
    parts = [f"{demand.cpu:g} CPU core{'s' if demand.cpu != 1 else ''}"]
    if demand.memory_mb > 0:
        parts.append(f"{demand.memory_mb:.0f} MB memory")
    if demand.storage_mb > 0:
        parts.append(f"{demand.storage_mb:.0f} MB storage")
    if demand.gpus:
        parts.append(_count(demand.gpus, "GPU"))
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _check_demand(demand: ResourceVector) -> None:
    if demand.cpu <= 0:
        raise ValueError("a shard must ask for some CPU: it bounds how many run at once")
    if min(demand.memory_mb, demand.storage_mb, demand.gpus) < 0:
        raise ValueError(f"negative demand {demand}")
