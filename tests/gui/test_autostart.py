"""Start at login: the entry each desktop reads, written and removed from the Settings page."""

from __future__ import annotations

import configparser
import plistlib
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from poolnet_desktop.gui.autostart import Autostart, desktop_entry
from poolnet_desktop.gui.settings_model import SettingsStore
from poolnet_desktop.gui.settings_page import SettingsPage


def test_the_checkbox_writes_and_removes_the_xdg_autostart_entry(qtbot, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    store = SettingsStore(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    page = SettingsPage(store, Autostart(platform="linux"))
    qtbot.addWidget(page)
    entry = tmp_path / "config" / "autostart" / "poolnet.desktop"
    assert not page.login_check.isChecked()

    page.login_check.setChecked(True)
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.read(entry)
    assert desktop["Desktop Entry"]["Type"] == "Application"
    assert desktop["Desktop Entry"]["Exec"].endswith("--minimised")

    assert SettingsPage(store, Autostart(platform="linux")).login_check.isChecked()  # read back from the file
    page.login_check.setChecked(False)
    assert not entry.exists()


def test_an_unwritable_place_leaves_the_box_as_it_really_is(qtbot, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config").write_text("a file where the folder should be")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    page = SettingsPage(SettingsStore(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)),
                        Autostart(platform="linux"))
    qtbot.addWidget(page)
    page.login_check.setChecked(True)
    assert not page.login_check.isChecked()
    assert "Cannot change it" in page.login_check.toolTip()


def test_a_mac_gets_a_launch_agent_that_runs_at_load(tmp_path: Path) -> None:
    autostart = Autostart(platform="darwin", home=tmp_path)
    autostart.set(True)
    assert autostart.entry is not None
    agent = plistlib.loads(autostart.entry.read_bytes())
    assert agent["RunAtLoad"] is True and agent["ProgramArguments"][-1] == "--minimised"
    autostart.set(False)
    assert not autostart.enabled()


@pytest.mark.parametrize(("arg", "quoted"), [("/opt/poolnet/poolnet", "/opt/poolnet/poolnet"),
                                             ("/home/a b/bin", '"/home/a b/bin"'),
                                             ('x"$`\\', '"x\\"\\$\\`\\\\"'), ("50%", "50%%")])
def test_exec_arguments_are_quoted_as_the_desktop_entry_spec_says(arg: str, quoted: str) -> None:
    assert f"Exec={quoted}\n" in desktop_entry([arg])


@pytest.mark.skipif(sys.platform != "win32", reason="the Run key exists on Windows only")
def test_windows_uses_the_run_key() -> None:
    autostart = Autostart()
    before = autostart.enabled()
    autostart.set(True)
    assert autostart.enabled()
    autostart.set(before)
