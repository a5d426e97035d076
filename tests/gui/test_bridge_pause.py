"""When the bridge decides whether sharing is paused, and what it reads to decide."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from poolnet_desktop.gui.bridge import DiscoverySettings, PoolBridge
from poolnet_desktop.gui.settings_model import SettingsStore
from poolnet_desktop.runtime.member import pause as pause_module


class BusyCpu:
    """Other programs at 90 % of the machine, counting how often it is sampled."""

    def __init__(self) -> None:
        self.samples = 0

    def sample(self) -> float:
        self.samples += 1
        return 90.0


async def settle() -> None:
    """Let the tasks a settings change spawned run to their end."""
    for _ in range(5):
        await asyncio.sleep(0.01)


async def test_only_pause_settings_reapply_the_pause_on_the_timers_last_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = BusyCpu()
    battery_reads: list[bool] = []

    def on_mains() -> bool:
        battery_reads.append(False)
        return False

    monkeypatch.setattr(pause_module, "OtherProgramsCpu", lambda: cpu)
    monkeypatch.setattr(pause_module, "on_battery", on_mains)
    monkeypatch.setattr(pause_module, "idle_probe", lambda: lambda: None)  # no display: the CPU decides
    store = SettingsStore(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    store.update(discovery=False, data_dir=str(tmp_path / "data"), pause_when_in_use=True, in_use_threshold=40.0)
    bridge = PoolBridge(store, bind="127.0.0.1", discovery=DiscoverySettings(enabled=False), activity_interval=3600)
    reasons: list[str] = []
    bridge.paused_changed.connect(reasons.append)
    await bridge.start()
    try:
        await settle()
        assert reasons == ["the computer is in use"]
        assert cpu.samples == 1 and len(battery_reads) == 1

        store.update(cpu_percent=50.0)  # a sharing limit: nothing to re-decide
        await settle()
        assert len(battery_reads) == 1

        store.update(in_use_threshold=95.0)  # decided again, on the timer's reading
        await settle()
        assert reasons == ["the computer is in use", ""]
        assert cpu.samples == 1 and len(battery_reads) == 2
    finally:
        await bridge.stop()
