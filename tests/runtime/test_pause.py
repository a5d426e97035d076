"""The pause watcher: samples on its timer, re-decides on rule changes without sampling."""

from __future__ import annotations

import asyncio

from poolnet_desktop.core.pause import IN_USE, PAUSED_BY_YOU, PauseRules
from poolnet_desktop.runtime.pause import OtherProgramsCpu, PauseWatcher


async def test_reasons_change_with_readings_rules_and_the_manual_pause() -> None:
    readings = [90.0]
    changes: list[str] = []
    watcher = PauseWatcher(PauseRules(when_in_use=True), changes.append, interval=3600,
                           cpu=lambda: readings[0], battery=lambda: False)
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
