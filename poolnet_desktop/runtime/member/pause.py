"""Watching what the computer does, to pause sharing by the owner's rules (``core.pause``).

One watcher serves the window and ``poolnet join`` alike: a timer reads the time since the last
keyboard or mouse input (``runtime.member.idle``) or, where the platform does not tell, samples the
other programs' CPU (a walk of PoolNet's own process tree), both off the event loop, and the
battery, and says when the reason to pause changes. A change of rules or of the manual pause re-decides on the
timer's last reading rather than sampling again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psutil

from poolnet_desktop.core.pause import PauseRules, why_paused
from poolnet_desktop.runtime.member.idle import IdleProbe, idle_probe


class OtherProgramsCpu:
    """CPU used by programs other than PoolNet and its shards, in percent of the whole machine.

    BOINC pauses when the user's own programs are busy; counting PoolNet's process tree out
    keeps the pool's own shards from pausing the pool. Blocking: call it off the event loop.
    """

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._tree: dict[int, psutil.Process] = {}
        self._cores = psutil.cpu_count() or 1
        psutil.cpu_percent(None)  # the first reading only sets the reference point

    def sample(self) -> float:
        total = psutil.cpu_percent(None)
        ours = 0.0
        seen: dict[int, psutil.Process] = {}
        for process in [self._me, *self._me.children(recursive=True)]:
            known = self._tree.get(process.pid, process)
            try:
                ours += known.cpu_percent(None)
            except psutil.Error:
                continue
            seen[process.pid] = known
        self._tree = seen
        return max(0.0, total - ours / self._cores)


def on_battery() -> bool:
    """True when the machine runs on battery (False where there is no battery to read)."""
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    return battery is not None and battery.power_plugged is False


class PauseWatcher:
    """Calls ``on_change(reason)`` whenever the reason to pause changes ("" = sharing).

    ``run()`` is the sampling loop (cancel it to stop); ``set_rules`` and ``set_manual`` may
    come at any time and decide again at once, on the last reading.
    """

    def __init__(
        self,
        rules: PauseRules,
        on_change: Callable[[str], object],
        *,
        interval: float = 5.0,
        cpu: Callable[[], float] | None = None,
        battery: Callable[[], bool] | None = None,
        idle: IdleProbe | None = None,
    ) -> None:
        """``idle``, ``cpu`` and ``battery`` read the computer (default: this platform's
        ``idle_probe``, ``OtherProgramsCpu`` made on the first sample that needs it, and
        ``on_battery``)."""
        self.rules = rules
        self.reason = ""
        self._on_change = on_change
        self._interval = interval
        self._cpu = cpu
        self._battery = battery
        self._idle = idle or idle_probe()
        self._manual = False
        self._other_cpu = 0.0
        self._idle_seconds: float | None = None

    async def run(self) -> None:
        while True:
            if self.rules.when_in_use:
                self._idle_seconds = await asyncio.to_thread(self._idle)
                if self._idle_seconds is None:
                    if self._cpu is None:
                        self._cpu = OtherProgramsCpu().sample
                    self._other_cpu = await asyncio.to_thread(self._cpu)
            self.decide()
            await asyncio.sleep(self._interval)

    def set_rules(self, rules: PauseRules) -> None:
        if rules != self.rules:
            self.rules = rules
            self.decide()

    def set_manual(self, paused: bool) -> None:
        self._manual = paused
        self.decide()

    def decide(self) -> None:
        battery = (self._battery or on_battery)()
        reason = why_paused(self.rules, manual=self._manual, on_battery=battery, other_cpu=self._other_cpu,
                            idle_seconds=self._idle_seconds)
        if reason != self.reason:
            self.reason = reason
            self._on_change(reason)
