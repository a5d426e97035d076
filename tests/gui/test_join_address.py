"""Joining from the window: an address that names no pool is said at once and changes nothing,
and a pool that speaks plain text is shown but cannot be joined."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QPushButton

from poolnet_desktop.gui.autostart import Autostart
from poolnet_desktop.gui.bridge import DiscoverySettings, PoolBridge
from poolnet_desktop.gui.settings_model import SettingsStore
from poolnet_desktop.gui.settings_page import SettingsPage
from poolnet_desktop.runtime.net.discovery import FoundPool


def store_in(tmp_path: Path) -> SettingsStore:
    return SettingsStore(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


def test_an_address_that_names_no_pool_is_said_and_nothing_changes(qtbot, tmp_path: Path) -> None:
    """Before, the address was stored as given and the member failed deep in its connection
    ("internal error: Port out of range")."""
    store = store_in(tmp_path)
    store.update(discovery=False, data_dir=str(tmp_path / "data"), pool_address="wss://10.0.0.5:3000/ws")
    bridge = PoolBridge(store, bind="127.0.0.1", discovery=DiscoverySettings(enabled=False))
    said: list[tuple[str, str]] = []
    bridge.member_changed.connect(lambda state, detail: said.append((state, detail)))

    bridge.join("10.0.0.7:99999", "ABCD-EFGH")

    assert said == [("none", "'10.0.0.7:99999' is not a pool address: Port out of range 0-65535")]
    assert store.prefs.pool_address == "wss://10.0.0.5:3000/ws"


def test_a_plain_text_pool_on_the_network_cannot_be_joined(qtbot, tmp_path: Path) -> None:
    page = SettingsPage(store_in(tmp_path), Autostart(platform="linux"))
    qtbot.addWidget(page)
    seed = FoundPool("old", "Old seed server", None, ("10.0.0.9",), 3000, tls=False, version="1", platform="linux")
    ours = FoundPool("new", "Studio pool", "p-1", ("10.0.0.8",), 3000, tls=True, version="1", platform="linux")
    page.show_pools([seed, ours])

    seed_button, ours_button = (b for b in page.findChildren(QPushButton) if b.text() == "Join" and b is not page.join_button)
    assert not seed_button.isEnabled() and "only over TLS" in seed_button.toolTip()
    assert ours_button.isEnabled()
