"""Where an instance keeps its data: ``--data-dir``, else ``POOLNET_HOME``, else the platform's."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def default_data_dir() -> Path:
    """The per-user data folder: XDG on Linux, Application Support on macOS, APPDATA on Windows."""
    if env := os.environ.get("POOLNET_HOME"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "PoolNet"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "PoolNet"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "poolnet"


def resolve_data_dir(explicit: str | os.PathLike[str] | None) -> Path:
    """The data folder to use, created if missing (mode 0700: it holds keys)."""
    path = Path(explicit).expanduser() if explicit else default_data_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
