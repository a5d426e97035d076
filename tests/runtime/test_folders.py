"""Removing what a shard left: ``remove_tree`` never raises, whatever is in the tree and
whatever else removes it meanwhile."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from poolnet_desktop.runtime.member.folders import remove_tree


def test_a_tree_with_links_and_locked_folders_is_removed_and_nothing_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("the member's")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    (tree / "link").symlink_to(outside)
    (tree / "a").chmod(0)
    remove_tree(tree)
    assert not tree.exists() and (outside / "keep.txt").read_text() == "the member's"


def test_a_folder_removed_meanwhile_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's stop empties its work root while the removal of a shard's folder in it runs
    (seen in CI: ``rmtree``'s error handler then retried ``os.open`` without its flags, and the
    TypeError escaped into the member's stop). The race is made certain here: the folder is
    removed, for real, the moment ``rmtree`` opens it."""
    tree = tmp_path / "slot-1"
    (tree / "cloudpickle" / "deep").mkdir(parents=True)
    real_open = os.open

    def removed_first(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if path == "cloudpickle" and (tree / "cloudpickle").exists():
            shutil.rmtree(tree / "cloudpickle")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", removed_first)
    remove_tree(tree)
    assert not tree.exists()
