"""The data folder and the work root: where they are and who may read them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from poolnet_desktop.runtime.datadir import resolve_data_dir, work_root
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
