"""Where an instance keeps its data: ``--data-dir``, else ``POOLNET_HOME``, else the platform's."""

from __future__ import annotations

import hashlib
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


# Files PoolNet creates are readable by this user only (set once at each entry point).
PRIVATE_UMASK = 0o077


class DataDirError(Exception):
    """The data folder cannot be made or used; the message says which folder and why."""


def resolve_data_dir(explicit: str | os.PathLike[str] | None) -> Path:
    """The data folder to use, created if missing, and made 0700 at every start (it holds
    keys; one created 0755 by an older version or by hand is closed). Raises
    ``DataDirError`` when it cannot be created or is not a folder this user can use."""
    path = Path(explicit).expanduser() if explicit else default_data_dir()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise DataDirError(f"cannot use the data folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise DataDirError(f"cannot use the data folder {path}: permission denied")
    return path


def work_root(data_dir: Path) -> Path:
    """Where a member with this data folder runs its shards: a folder of the user's cache,
    outside the data folder (a shard must never be a sibling of the keys), one per data
    folder (two instances on one machine do not share it). The member creates it 0700."""
    return user_cache() / f"work-{_folder_digest(data_dir)}"


def environments_root(data_dir: Path) -> Path:
    """Where a member with this data folder keeps the Python environments it built for tasks
    (issue 16): beside its work root, outside the data folder, one per data folder."""
    return user_cache() / f"envs-{_folder_digest(data_dir)}"


def user_cache() -> Path:
    """PoolNet's folder in the user's cache (XDG, Caches on macOS, LOCALAPPDATA on Windows)."""
    if sys.platform == "win32":
        cache = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        cache = Path.home() / "Library" / "Caches"
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "poolnet"


def _folder_digest(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
