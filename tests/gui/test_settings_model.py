"""Preferences are kept in a real INI file through QSettings and read back by a new store."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from poolnet_desktop.core.pause import PauseRules
from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.gui.settings_model import Preferences, SettingsStore
from poolnet_desktop.runtime.member.sharing_config import SHARING_FILE, read_pause_rules


def store_at(path: Path) -> SettingsStore:
    return SettingsStore(QSettings(str(path), QSettings.Format.IniFormat))


def test_a_first_start_has_the_defaults(tmp_path: Path) -> None:
    prefs = store_at(tmp_path / "s.ini").prefs
    assert prefs == Preferences()
    assert prefs.limits == SharingLimits()  # the seed's 80/80/50/GPU on


def test_changes_survive_a_new_store_and_keep_their_types(tmp_path: Path) -> None:
    first = store_at(tmp_path / "s.ini")
    seen: list[Preferences] = []
    first.changed.connect(seen.append)
    first.update(host_pool=True, host_port=4100, cpu_percent=35.0, share_gpu=False, device_name="lab",
                 pause_when_in_use=True, in_use_threshold=25.0, data_dir=str(tmp_path / "data"))
    assert len(seen) == 1 and seen[0].host_pool

    again = store_at(tmp_path / "s.ini").prefs
    assert again == seen[0]
    assert isinstance(again.host_port, int) and isinstance(again.cpu_percent, float)
    assert again.limits == SharingLimits(cpu_percent=35.0, memory_percent=80.0, storage_percent=50.0, gpu=False)


def test_an_update_that_changes_nothing_is_not_signalled(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s.ini")
    seen: list[Preferences] = []
    store.changed.connect(seen.append)
    store.update(accept_tasks=True)
    assert seen == []


def test_a_hand_edited_value_of_the_wrong_kind_falls_back_to_the_default(tmp_path: Path) -> None:
    path = tmp_path / "s.ini"
    path.write_text("[General]\nhost_port=not-a-number\ncpu_percent=55\n")
    prefs = store_at(path).prefs
    assert prefs.host_port == Preferences().host_port
    assert prefs.cpu_percent == 55.0


def test_the_room_for_task_environments_is_kept_and_given_in_bytes(tmp_path: Path) -> None:
    store_at(tmp_path / "s.ini").update(env_cache_gb=2.5)
    prefs = store_at(tmp_path / "s.ini").prefs
    assert prefs.env_cache_gb == 2.5 and prefs.env_cache_limit == 2_500_000_000
    assert Preferences().env_cache_limit == 10 * 1000**3


def test_the_pause_rules_are_shared_with_poolnet_join_through_the_data_folder(tmp_path: Path) -> None:
    """The window writes its pause rules where ``poolnet join`` reads them, and a hand edit of
    that file is what the window shows at its next start."""
    data = tmp_path / "data"
    store = store_at(tmp_path / "s.ini")
    store.update(data_dir=str(data), pause_when_in_use=True, idle_minutes=7.0, in_use_threshold=30.0,
                 pause_on_battery=False)
    assert read_pause_rules(data) == PauseRules(when_in_use=True, in_use_threshold=30.0, on_battery=False,
                                                idle_minutes=7.0)

    (data / SHARING_FILE).write_text("pause_when_in_use = false\nidle_minutes = 12\n")
    prefs = store_at(tmp_path / "s.ini").prefs
    assert (prefs.pause_when_in_use, prefs.idle_minutes, prefs.in_use_threshold) == (False, 12.0, 30.0)


def test_another_data_folder_brings_its_own_rules_and_one_without_gets_the_windows(tmp_path: Path) -> None:
    joined = tmp_path / "joined"
    joined.mkdir()
    (joined / SHARING_FILE).write_text("pause_on_battery = false\nidle_minutes = 9\n")
    store = store_at(tmp_path / "s.ini")
    assert store.update(data_dir=str(joined)).idle_minutes == 9.0  # the folder's file wins
    assert store.prefs.pause_on_battery is False

    fresh = tmp_path / "fresh"  # a window started on a folder that has no rules yet
    (tmp_path / "fresh.ini").write_text(f"[General]\ndata_dir={fresh}\npause_when_in_use=true\n")
    started = store_at(tmp_path / "fresh.ini")
    assert not (fresh / SHARING_FILE).exists()
    started.share_pause_rules()
    assert read_pause_rules(fresh) == started.prefs.pause_rules == PauseRules(True, 40.0, True, 3.0)
