"""The data folder and the work root: where they are and who may read them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import platformdirs
import platformdirs.windows
import pytest
from platformdirs.unix import Unix
from platformdirs.windows import Windows

from poolnet_desktop.runtime.datadir import (
    legacy_data_dirs,
    migrate_data_dir,
    platform_data_dir,
    resolve_data_dir,
    work_root,
    work_root_in,
)
from tests.conftest import posix_only


def test_the_work_root_is_in_the_cache_outside_the_data_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data"
    root = work_root(data)
    assert root.parent == tmp_path / "cache" / "poolnet"
    assert not root.is_relative_to(data)
    assert root == work_root(data)
    assert root != work_root(tmp_path / "other-data")


@posix_only("POSIX file modes")
def test_a_world_readable_data_folder_is_closed_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "identity.key").write_text("secret")
    assert resolve_data_dir(data) == data
    assert data.stat().st_mode & 0o777 == 0o700


@posix_only("POSIX file modes")
def test_the_cli_creates_files_for_its_user_only(tmp_path: Path) -> None:
    """A real ``poolnet`` process: whatever it writes in a fresh data folder is private."""
    data = tmp_path / "fresh"
    done = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.umask(0o022); "
         "from poolnet_desktop.cli import main; sys.exit(main(sys.argv[1:]))",
         "devices", "--data-dir", str(data), "--url", "wss://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    files = [p for p in data.rglob("*") if p.is_file()]
    assert files, done.stderr
    assert [p for p in files if p.stat().st_mode & 0o077] == []


@pytest.fixture
def windows_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """platformdirs' Windows folders, read from APPDATA and LOCALAPPDATA under ``tmp_path``
    (Windows asks the shell for them: not here)."""
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    monkeypatch.setattr(platformdirs.windows, "_RESOLVE_WIN_FOLDER", platformdirs.windows.get_win_folder_from_env_vars)
    return tmp_path


def test_linux_folders_follow_xdg_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert platform_data_dir(Unix) == tmp_path / "xdg" / "poolnet"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert platform_data_dir(Unix) == tmp_path / "home" / ".local" / "share" / "poolnet"
    assert legacy_data_dirs(Unix) == []  # where every version kept it


def test_windows_data_is_local_and_its_work_root_outside_it(windows_folders: Path) -> None:
    data = platform_data_dir(Windows)
    assert data == windows_folders / "Local" / "PoolNet"
    assert legacy_data_dirs(Windows) == [windows_folders / "Roaming" / "PoolNet"]
    root = work_root_in(data, Windows)
    assert root.is_relative_to(windows_folders / "Local") and not root.is_relative_to(data)


def test_a_first_start_moves_the_roaming_data_folder_to_the_local_one_once(
    windows_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOLNET_HOME", raising=False)
    monkeypatch.setattr(platformdirs, "PlatformDirs", Windows)
    old = windows_folders / "Roaming" / "PoolNet"
    old.mkdir(parents=True)
    (old / "identity.key").write_text("the device's key")

    data = resolve_data_dir(None)
    assert data == windows_folders / "Local" / "PoolNet"
    assert (data / "identity.key").read_text() == "the device's key"
    assert not old.exists()

    old.mkdir()  # an old version run again: the local folder, now there, is kept as it is
    (old / "identity.key").write_text("another key")
    assert resolve_data_dir(None) == data
    assert (data / "identity.key").read_text() == "the device's key"
    assert migrate_data_dir(data, [old]) is None
