"""The pause watcher: samples on its timer, re-decides on rule changes without sampling."""

from __future__ import annotations

import asyncio

from poolnet_desktop.core.pause import IN_USE, PAUSED_BY_YOU, PauseRules
from poolnet_desktop.runtime.member.pause import OtherProgramsCpu, PauseWatcher


async def test_reasons_change_with_readings_rules_and_the_manual_pause() -> None:
    readings = [90.0]
    changes: list[str] = []
    watcher = PauseWatcher(PauseRules(when_in_use=True), changes.append, interval=3600,
                           cpu=lambda: readings[0], battery=lambda: False, idle=lambda: None)
    running = asyncio.ensure_future(watcher.run())
    await asyncio.sleep(0.05)
    assert changes == [IN_USE]
    watcher.set_rules(PauseRules(when_in_use=True, in_use_threshold=95.0))  # decided on the last reading
    watcher.set_manual(True)
    watcher.set_manual(False)
    assert changes == [IN_USE, "", PAUSED_BY_YOU, ""]
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


def test_other_programs_cpu_is_a_percentage_of_the_machine() -> None:
    sampler = OtherProgramsCpu()
    assert 0.0 <= sampler.sample() <= 100.0


async def test_recent_input_decides_where_the_platform_tells_and_the_cpu_is_not_read() -> None:
    idle: list[float | None] = [30.0]
    cpu_reads: list[float] = []

    def cpu() -> float:
        cpu_reads.append(0.0)
        return 0.0

    changes: list[str] = []
    watcher = PauseWatcher(PauseRules(when_in_use=True, idle_minutes=1.0), changes.append, interval=0.01,
                           cpu=cpu, battery=lambda: False, idle=lambda: idle[0])
    running = asyncio.ensure_future(watcher.run())
    try:
        async with asyncio.timeout(10):
            while changes != [IN_USE]:  # typed 30 s ago: in use, though the CPU is idle
                await asyncio.sleep(0.01)
            assert cpu_reads == []
            idle[0] = 61.0
            while changes != [IN_USE, ""]:
                await asyncio.sleep(0.01)
            idle[0] = None  # the display went away: the CPU decides from now on
            while not cpu_reads:
                await asyncio.sleep(0.01)
        assert changes == [IN_USE, ""]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
