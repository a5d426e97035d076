"""Fixtures every test folder may use."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest

# The CI runs the suite on Windows and macOS too: tests that need what only Linux has (the bwrap
# sandbox every shard runs in, namespaces, /proc, SIGSTOP) or only POSIX (sh, signals such as
# SIGKILL, file modes, select on pipes) mark themselves with these and skip there, saying why.
SANDBOXED_SHARDS = "members run shards only in the bwrap sandbox"


def linux_only(why: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(sys.platform != "linux", reason=f"needs Linux: {why}")


def posix_only(why: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.name != "posix", reason=f"needs POSIX: {why}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The window's tests run last. Once one has made the QApplication, pytest-qt processes
    Qt's events after every test of the run, and a CI run segfaulted there, in a discovery
    test long after the window's tests (what a window test's qasync loop left, meeting a
    descriptor number used again: the runtime conftest notes the same). No other test needs
    Qt, so none runs after them."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/gui/"))


@pytest.fixture(scope="session", autouse=True)
def users_cache_of_this_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user's cache is a folder of this run's own (Linux: ``XDG_CACHE_HOME``), for this
    process and the ``poolnet`` processes tests start. A member keeps its work root and its
    Python environments there, named after its data folder (``runtime/datadir.py``), and a
    data folder's path comes again once pytest's numbered folders do: an environment left in
    ``~/.cache/poolnet`` by an earlier run was taken as built, and no test removed them. uv
    keeps its own cache where it was (the offline wheel builds need what it holds)."""
    if sys.platform != "linux":
        yield
        return
    saved = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "UV_CACHE_DIR")}
    os.environ.setdefault("UV_CACHE_DIR", str(platformdirs.user_cache_path("uv", appauthor=False)))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("users-cache"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def visible_to_shards() -> Iterator[Path]:
    """A folder the test writes and sandboxed shards can read: not under /tmp (each shard
    has a private one), the home or /run (hidden). Removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="poolnet-test-", dir="/var/local"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
