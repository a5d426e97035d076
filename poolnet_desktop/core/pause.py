"""When a member stops taking work: the owner's rules and what the computer is doing now.

BOINC's rule, kept: a volunteer's computer serves its owner first. Sharing pauses when the
owner pauses it, when it runs on battery, or when the owner is using the computer: someone
touched the keyboard or mouse in the last ``idle_minutes``, where the platform tells; where it
does not (no display, a server), when the owner's own programs keep the CPU busy (PoolNet's
shards are not counted, or the pool's own work would pause the pool). Pure: the readings are
passed in, so the window and ``poolnet join`` decide the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

PAUSED_BY_YOU = "paused by you"
ON_BATTERY = "on battery"
IN_USE = "the computer is in use"


@dataclass(frozen=True, slots=True)
class PauseRules:
    """What the owner asked for: pause while the computer is in use (if ``when_in_use``), and
    while on battery. In use: keyboard or mouse input less than ``idle_minutes`` ago, or, where
    input cannot be read, other programs using more than ``in_use_threshold`` percent of the
    machine's CPU."""

    when_in_use: bool = False
    in_use_threshold: float = 40.0
    on_battery: bool = False
    idle_minutes: float = 3.0


def in_use(rules: PauseRules, *, idle_seconds: float | None, other_cpu: float) -> bool:
    """Whether the owner is using the computer: by the time since the last keyboard or mouse
    input where the platform gives it (``idle_seconds`` not None), else by the CPU load."""
    if idle_seconds is not None:
        return idle_seconds < rules.idle_minutes * 60
    return other_cpu > rules.in_use_threshold


def why_paused(
    rules: PauseRules, *, manual: bool, on_battery: bool, other_cpu: float, idle_seconds: float | None = None
) -> str:
    """The reason sharing is paused now, or "" when it is not."""
    if manual:
        return PAUSED_BY_YOU
    if rules.on_battery and on_battery:
        return ON_BATTERY
    if rules.when_in_use and in_use(rules, idle_seconds=idle_seconds, other_cpu=other_cpu):
        return IN_USE
    return ""


# The rules as the owner writes them (``DATA/sharing.toml``, read by the window and by
# ``poolnet join``): each key, the ``PauseRules`` field it sets, and its type.
RULE_KEYS: dict[str, tuple[str, type]] = {
    "pause_when_in_use": ("when_in_use", bool),
    "idle_minutes": ("idle_minutes", float),
    "busy_percent": ("in_use_threshold", float),
    "pause_on_battery": ("on_battery", bool),
}


def rules_from_settings(values: Mapping[str, object], base: PauseRules = PauseRules()) -> PauseRules:
    """``base`` with the rules ``values`` sets; ``ValueError`` (one line, naming the key) for an
    unknown key, a wrong type or a value out of range."""
    changes: dict[str, object] = {}
    for key, value in values.items():
        if key not in RULE_KEYS:
            raise ValueError(f"unknown setting {key!r} (known: {', '.join(RULE_KEYS)})")
        field_name, kind = RULE_KEYS[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number, got {value!r}")
        changes[field_name] = float(value) if kind is float else value
    rules = replace(base, **changes)  # type: ignore[arg-type]
    if not 0 < rules.idle_minutes <= 24 * 60:
        raise ValueError(f"idle_minutes must be above 0 and at most 1440, got {rules.idle_minutes:g}")
    if not 0 < rules.in_use_threshold <= 100:
        raise ValueError(f"busy_percent must be above 0 and at most 100, got {rules.in_use_threshold:g}")
    return rules


def settings_of(rules: PauseRules) -> dict[str, bool | float]:
    """The rules as ``rules_from_settings`` reads them back."""
    return {key: getattr(rules, field_name) for key, (field_name, _) in RULE_KEYS.items()}
