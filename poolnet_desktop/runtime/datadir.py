"""Where an instance keeps its data: ``--data-dir``, else ``POOLNET_HOME``, else the platform's.

The platform's folders come from ``platformdirs``: XDG on Linux, Application Support on macOS,
and on Windows the local AppData, never the roaming profile (a device key that follows a user
to every PC would give them all one identity). A data folder an older version kept in the
roaming profile is moved to the local one on the first start that finds only the old one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import platformdirs
from platformdirs.api import PlatformDirsABC
from platformdirs.unix import Unix

log = logging.getLogger(__name__)
Dirs = type[PlatformDirsABC]


def _app_name(dirs: Dirs) -> str:
    """Linux's folders are lower case (~/.local/share/poolnet); the others' are PoolNet."""
    return "poolnet" if issubclass(dirs, Unix) else "PoolNet"


def platform_data_dir(dirs: Dirs | None = None) -> Path:
    """This user's PoolNet folder on this platform (local, not roaming, on Windows)."""
    dirs = dirs or platformdirs.PlatformDirs
    return dirs(_app_name(dirs), appauthor=False, roaming=False).user_data_path


def legacy_data_dirs(dirs: Dirs | None = None) -> list[Path]:
    """Where older versions kept it instead: Windows' roaming AppData (elsewhere, nowhere)."""
    dirs = dirs or platformdirs.PlatformDirs
    roaming = dirs(_app_name(dirs), appauthor=False, roaming=True).user_data_path
    return [roaming] if roaming != platform_data_dir(dirs) else []


def migrate_data_dir(new: Path, legacy: list[Path]) -> Path | None:
    """Move the first old folder that exists to ``new`` when ``new`` does not exist yet (one
    identity, its pool memberships and tasks, kept); returns the folder moved, if any."""
    if new.exists():
        return None
    for old in legacy:
        if old.is_dir():
            new.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(old, new)
            log.info("moved the data folder from %s to %s", old, new)
            return old
    return None


def default_data_dir() -> Path:
    """The per-user data folder: ``POOLNET_HOME``, else the platform's."""
    if env := os.environ.get("POOLNET_HOME"):
        return Path(env).expanduser()
    return platform_data_dir()


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
        if path == platform_data_dir():
            migrate_data_dir(path, legacy_data_dirs())
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
    return work_root_in(data_dir, platformdirs.PlatformDirs)


def work_root_in(data_dir: Path, dirs: Dirs) -> Path:
    """``work_root`` for the folders of ``dirs``."""
    return cache_root(dirs, data_dir) / f"work-{_folder_digest(data_dir)}"


def environments_root(data_dir: Path) -> Path:
    """Where a member with this data folder keeps the Python environments it built for tasks
    (issue 16): beside its work root, outside the data folder, one per data folder."""
    return cache_root(platformdirs.PlatformDirs, data_dir) / f"envs-{_folder_digest(data_dir)}"


def user_cache() -> Path:
    """PoolNet's folder in the user's cache (what is kept for any data folder: wheels)."""
    return cache_root(platformdirs.PlatformDirs)


def cache_root(dirs: Dirs, data_dir: Path | None = None) -> Path:
    """PoolNet's folder in the user's cache. Windows keeps an app's cache inside its data
    folder (LOCALAPPDATA\\PoolNet\\Cache): there it is a folder of its own beside it, so that
    no shard's folder is ever a sibling of the keys."""
    name = _app_name(dirs)
    cache = dirs(name, appauthor=False).user_cache_path
    if (data_dir is not None and cache.is_relative_to(data_dir)) or cache.is_relative_to(platform_data_dir(dirs)):
        cache = dirs(f"{name} work", appauthor=False).user_cache_path
    return cache


def _folder_digest(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
