"""Fixtures every test folder may use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def visible_to_shards() -> Iterator[Path]:
    """A folder the test writes and sandboxed shards can read: not under /tmp (each shard
    has a private one) nor the home. Removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="poolnet-test-", dir="/run"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
