"""When a member stops taking work: the owner's rules and what the computer is doing now.

BOINC's rule, kept: a volunteer's computer serves its owner first. Sharing pauses when the
owner pauses it, when it runs on battery, or when the owner's own programs are busy (PoolNet's
shards are not counted, or the pool's own work would pause the pool). Pure: the readings are
passed in, so the window and ``poolnet join`` decide the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

PAUSED_BY_YOU = "paused by you"
ON_BATTERY = "on battery"
IN_USE = "the computer is in use"


@dataclass(frozen=True, slots=True)
class PauseRules:
    """What the owner asked for: pause while other programs use more than ``in_use_threshold``
    percent of the machine's CPU (if ``when_in_use``), and while on battery."""

    when_in_use: bool = False
    in_use_threshold: float = 40.0
    on_battery: bool = False


def why_paused(rules: PauseRules, *, manual: bool, on_battery: bool, other_cpu: float) -> str:
    """The reason sharing is paused now, or "" when it is not."""
    if manual:
        return PAUSED_BY_YOU
    if rules.on_battery and on_battery:
        return ON_BATTERY
    if rules.when_in_use and other_cpu > rules.in_use_threshold:
        return IN_USE
    return ""
