"""The lane launcher built from C: made by ``./dev setup``, found by the member only when it was
built from the C text beside it, and never a reason for setup to fail. (What it does in a lane
is tested with both launchers: ``test_task_sandbox.py``'s ``launcher`` fixture.)"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from poolnet_desktop.runtime.member import native_launcher
from poolnet_desktop.runtime.member.lane_pool import launcher_command


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


@pytest.fixture
def own_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The C text copied to a folder of this test's, where its builds go too."""
    source = tmp_path / native_launcher.SOURCE.name
    shutil.copyfile(native_launcher.SOURCE, source)
    monkeypatch.setattr(native_launcher, "SOURCE", source)
    monkeypatch.setattr(native_launcher, "BUILDS", tmp_path / "built")
    return source


@pytest.mark.skipif(compiler() is None, reason="no C compiler here: lanes use the Python launcher")
def test_where_a_compiler_is_the_member_runs_the_built_launcher() -> None:
    """``./dev setup`` (CI runs it) builds it; a member then runs lanes on it."""
    assert native_launcher.find() is not None, "run ./dev setup: it builds the lane launcher"
    assert launcher_command().native == native_launcher.find()


@pytest.mark.skipif(compiler() is None, reason="no C compiler here")
def test_a_build_of_an_older_text_is_never_run(own_copy: Path) -> None:
    first = native_launcher.build()
    assert native_launcher.find.__wrapped__() == first and os.access(first, os.X_OK)
    own_copy.write_text(own_copy.read_text() + "\n/* changed */\n")
    assert native_launcher.find.__wrapped__() is None  # the build there is of the text before
    second = native_launcher.build()
    assert second != first and native_launcher.find.__wrapped__() == second
    assert not first.exists()  # the older build went


def test_a_failed_build_says_why_in_one_line_and_leaves_nothing(
    own_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    own_copy.write_text("this is not C\n")
    monkeypatch.setenv("CC", compiler() or "false")
    assert native_launcher.main() == 1
    said = capsys.readouterr().err.strip()
    assert said.startswith("the native lane launcher was not built (") and "lanes will use the Python one" in said
    assert native_launcher.find.__wrapped__() is None
    assert list(native_launcher.BUILDS.iterdir()) == []  # no partial build left behind


def test_without_a_compiler_setup_goes_on_with_the_python_launcher(
    own_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert native_launcher.main() == 1
    assert "no C compiler" in capsys.readouterr().err
    assert native_launcher.find.__wrapped__() is None


def test_a_build_that_does_not_run_here_is_not_used(own_copy: Path) -> None:
    """A build this machine cannot run (here: not a program at all; elsewhere a noexec mount or
    an older C library) would make every lane fail to start, and each shard get a sandbox of
    its own: the member tries it once, and uses the Python launcher instead."""
    build = native_launcher.build_path()
    build.parent.mkdir()
    build.write_text("not a program\n")
    build.chmod(0o755)
    assert native_launcher.find.__wrapped__() is None
