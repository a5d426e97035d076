"""When sharing pauses, decided from plain readings."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.pause import IN_USE, ON_BATTERY, PAUSED_BY_YOU, PauseRules, in_use, why_paused

BUSY_RULES = PauseRules(when_in_use=True, in_use_threshold=40.0, on_battery=True)


@pytest.mark.parametrize(
    ("rules", "manual", "battery", "cpu", "reason"),
    [
        (BUSY_RULES, False, False, 10.0, ""),
        (BUSY_RULES, False, False, 40.5, IN_USE),
        (BUSY_RULES, False, True, 90.0, ON_BATTERY),
        (BUSY_RULES, True, True, 90.0, PAUSED_BY_YOU),
        (PauseRules(), False, True, 99.0, ""),  # the owner asked for neither rule
    ],
)
def test_the_first_reason_that_holds_is_given(
    rules: PauseRules, manual: bool, battery: bool, cpu: float, reason: str
) -> None:
    assert why_paused(rules, manual=manual, on_battery=battery, other_cpu=cpu) == reason


IDLE_RULES = PauseRules(when_in_use=True, in_use_threshold=40.0, idle_minutes=5.0)


@pytest.mark.parametrize(
    ("idle_seconds", "cpu", "busy"),
    [
        (10.0, 0.0, True),  # someone typed 10 s ago, whatever the CPU does
        (299.0, 0.0, True),
        (300.0, 99.0, False),  # idle for the 5 minutes: the CPU is the pool's to use
        (3600.0, 99.0, False),
        (None, 40.5, True),  # no input to read (no display): other programs' CPU decides
        (None, 39.0, False),
    ],
)
def test_in_use_means_recent_input_where_the_platform_tells_and_cpu_load_elsewhere(
    idle_seconds: float | None, cpu: float, busy: bool
) -> None:
    assert in_use(IDLE_RULES, idle_seconds=idle_seconds, other_cpu=cpu) is busy
    reason = why_paused(IDLE_RULES, manual=False, on_battery=False, other_cpu=cpu, idle_seconds=idle_seconds)
    assert reason == (IN_USE if busy else "")
