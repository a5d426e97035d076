"""Removing what a shard left in a folder, whatever it made there.

A shard owns its folder for its whole run and may leave anything in it: symlinks (which are
removed as links, never followed), folders it made unreadable (mode 000, given back to the
owner first), a tree nested deeper than Python's recursion allows. Used off the event loop:
a shard's tree may be huge.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def empty_folder(folder: Path) -> None:
    """Remove everything in ``folder`` (symlinks as links: nothing is followed)."""
    with os.scandir(folder) as entries:
        for entry in list(entries):
            if entry.is_dir(follow_symlinks=False):
                remove_tree(Path(entry.path))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    with os.scandir(folder) as entries:
        if next(entries, None) is not None:
            raise OSError(errno.ENOTEMPTY, f"what a shard left in {folder} could not be removed")


def remove_tree(folder: Path) -> None:
    """``rmtree`` that never raises, and gets past folders a shard made unreadable (mode
    000) by making them the owner's again; a tree nested deeper than Python's recursion allows
    (a shard can make one) is left, with a warning, for the next start's clean-up."""

    def unlock_and_retry(function: Callable[..., object], path: str, error: tuple[object, ...]) -> None:
        if isinstance(error[1], FileNotFoundError):
            return  # gone already: removed meanwhile (a member's stop empties its work root too)
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, ignore_errors=True)
            elif function in (os.unlink, os.rmdir):  # not a listing or an opening: a removal to retry
                function(path)

    try:
        shutil.rmtree(folder, onerror=unlock_and_retry)
    except RecursionError:
        log.warning("a shard's folder too deep to remove is left at %s", folder)
    except OSError as exc:
        log.warning("a shard's folder could not be removed: %s", exc)
