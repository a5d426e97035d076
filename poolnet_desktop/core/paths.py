"""Relative paths that cannot escape the folder they are joined to.

Every file shipped to a member and every output brought back names a path inside a working
folder. Those names come from manifests and from the network, so they are untrusted: one
``../../.ssh/authorized_keys`` or ``C:\\Windows\\...`` must never reach ``open()``.
``safe_relative_path`` is the single gate; callers join its result to their root folder.

Pure: it inspects text only. Symlinks that point outside a folder are the runtime's check,
because only the file system knows where a link leads.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# Long enough for any real project tree; a longer name is a bug or an attack.
MAX_PATH_LENGTH = 4096
MAX_COMPONENT_LENGTH = 255

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A path that is empty, absolute, names a drive, or leaves its folder."""


def safe_relative_path(text: str) -> PurePosixPath:
    """Return ``text`` as a normalised relative POSIX path, or raise ``UnsafePathError``.

    Backslashes count as separators (a manifest written on Windows says ``data\\a.csv``), so
    ``..\\..\\x`` is caught like ``../../x``. ``.`` parts and inner ``..`` that stay inside
    are folded away: ``a/./b/../c`` becomes ``a/c``. Refused: empty text or a path that folds
    to nothing, NUL, absolute paths (``/x``, ``\\\\server\\share``), drive letters
    (``C:x``, ``C:\\x``), any ``..`` that climbs above the start, and over-long names.
    """
    if not isinstance(text, str):
        raise UnsafePathError(f"a path must be text, not {type(text).__name__}")
    if not text:
        raise UnsafePathError("empty path")
    if "\x00" in text:
        raise UnsafePathError(f"path contains a NUL character: {text!r}")
    if len(text) > MAX_PATH_LENGTH:
        raise UnsafePathError(f"path longer than {MAX_PATH_LENGTH} characters: {text[:80]!r}...")
    unified = text.replace("\\", "/")
    if unified.startswith("/"):
        raise UnsafePathError(f"absolute path not allowed: {text!r}")
    if _DRIVE.match(unified):
        raise UnsafePathError(f"drive letter not allowed: {text!r}")
    parts: list[str] = []
    for part in unified.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafePathError(f"path escapes its folder: {text!r}")
            parts.pop()
            continue
        if len(part) > MAX_COMPONENT_LENGTH:
            raise UnsafePathError(
                f"path component longer than {MAX_COMPONENT_LENGTH} characters: {part[:40]!r}..."
            )
        parts.append(part)
    if not parts:
        raise UnsafePathError(f"path names no file: {text!r}")
    if _DRIVE.match(parts[0]):  # ``./C:x`` folds to ``C:x``
        raise UnsafePathError(f"drive letter not allowed: {text!r}")
    return PurePosixPath(*parts)
