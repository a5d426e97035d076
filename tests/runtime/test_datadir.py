"""The data folder and the work root: where they are and who may read them."""

from __future__ import annotations

from pathlib import Path

from poolnet_desktop.runtime.datadir import work_root


def test_the_work_root_is_in_the_cache_outside_the_data_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data"
    root = work_root(data)
    assert root.parent == tmp_path / "cache" / "poolnet"
    assert not root.is_relative_to(data)
    assert root == work_root(data)
    assert root != work_root(tmp_path / "other-data")
