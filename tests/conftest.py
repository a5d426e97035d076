"""Fixtures every test folder may use."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The CI runs the suite on Windows and macOS too: tests that need what only Linux has (the bwrap
# sandbox every shard runs in, namespaces, /proc, SIGSTOP) or only POSIX (sh, signals such as
# SIGKILL, file modes, select on pipes) mark themselves with these and skip there, saying why.
SANDBOXED_SHARDS = "members run shards only in the bwrap sandbox"


def linux_only(why: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(sys.platform != "linux", reason=f"needs Linux: {why}")


def posix_only(why: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.name != "posix", reason=f"needs POSIX: {why}")


@pytest.fixture
def visible_to_shards() -> Iterator[Path]:
    """A folder the test writes and sandboxed shards can read: not under /tmp (each shard
    has a private one) nor the home. Removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="poolnet-test-", dir="/run"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
