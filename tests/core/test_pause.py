"""When sharing pauses, decided from plain readings."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.pause import IN_USE, ON_BATTERY, PAUSED_BY_YOU, PauseRules, why_paused

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
