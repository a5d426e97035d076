"""Load a task from disk: a ``*.pool.toml`` manifest, a plain script, or a folder with one
manifest; read its declared files and hash them, ready to submit.

Blocking (it reads and hashes every file): from the event loop call it as
``await asyncio.to_thread(load_task, path)``.

What may ship: regular files inside the manifest's folder, found directly or by walking a
listed folder. Refused, with a ``TaskFileError`` naming file, key and problem: a missing path,
a path or symlink that leads outside the folder, a symlinked folder met while walking (it could
loop or duplicate), and anything that is not a regular file (sockets, devices, pipes).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from poolnet_desktop.core.environment import EnvironmentFailure, EnvironmentSpec, targets_to_resolve
from poolnet_desktop.core.manifest import (
    FileEntry,
    ManifestError,
    ManifestSpec,
    TaskSpec,
    canonical_path,
    folder_manifest,
    is_manifest_name,
    parse_manifest,
    script_task,
)
from poolnet_desktop.runtime.client.env_resolve import ResolveOptions, for_members_if_possible, resolve_environment
from poolnet_desktop.runtime.net.task_transfer import file_sha256

# A task folder with more files than this is almost surely a mistake (a home folder listed).
MAX_FILES = 100_000


class TaskFileError(ManifestError):
    """A task file or one of its listed files that cannot be loaded (same shape as
    ``ManifestError``, which ``load_task`` re-raises as this)."""


@dataclass(frozen=True, slots=True)
class LoadedTask:
    """A task ready to submit: the wire spec (files with size and sha256), the manifest or
    script it came from, the folder its paths are relative to, and where each file lies here.
    """

    spec: TaskSpec
    source: Path
    root: Path
    local_files: Mapping[str, Path]

    def local_path(self, entry: FileEntry) -> Path:
        """The absolute local path holding ``entry``'s bytes (to stream them to a member)."""
        return self.local_files[entry.path]


def load_task(path: Path, resolve: ResolveOptions | None = None) -> LoadedTask:
    """Load ``path``: a ``NAME.pool.toml``, a ``.py``/``.sh``/``.bat``/``.ps1`` script, or a
    folder holding exactly one ``*.pool.toml``. A manifest's ``requirements`` are resolved
    here (``resolve``: where wheels come from) and their wheels join the files to ship.
    Raises ``TaskFileError``."""
    manifest_path = _find_manifest(path) if path.is_dir() else path
    source = str(manifest_path)
    try:
        if is_manifest_name(manifest_path.name):
            manifest = parse_manifest(_read(manifest_path, source), source)
        else:
            if not manifest_path.is_file():
                raise TaskFileError(source, None, "no such file")
            manifest = script_task(manifest_path.name)
    except TaskFileError:
        raise
    except ManifestError as exc:
        raise TaskFileError(source, exc.key, exc.message) from None
    root = manifest_path.parent.resolve()
    local_files = _collect(manifest, root, source)
    environment: EnvironmentSpec | None = None
    if manifest.environment is not None:
        try:
            resolved = resolve_environment(manifest.environment, root, resolve or ResolveOptions())
        except EnvironmentFailure as exc:
            raise TaskFileError(source, "requirements", str(exc)) from None
        environment = resolved.spec
        local_files.update(resolved.local_wheels)
    entries = [_entry(rel, local, source) for rel, local in local_files.items()]
    try:
        spec = manifest.with_files(entries, environment)
    except ValueError as exc:
        raise TaskFileError(source, "files", str(exc)) from None
    return LoadedTask(spec, manifest_path, root, local_files)


def for_platforms(task: LoadedTask, options: ResolveOptions, members: Sequence[str]) -> LoadedTask:
    """``task`` with its requirements resolved also for the ``members``' platforms that the
    wheels it has do not serve (``core.environment.targets_to_resolve``) and that can be had
    (``for_members_if_possible``); the same task when there is nothing to add. Blocking."""
    environment = task.spec.environment
    if environment is None:
        return task
    resolved = tuple(entry.target for entry in environment.platforms)
    extra = targets_to_resolve(resolved, members)[len(resolved):]
    return for_members_if_possible(
        lambda targets: load_task(task.source, dataclasses.replace(options, targets=targets)),
        resolved, extra, TaskFileError, lambda: task,
    )


def _find_manifest(folder: Path) -> Path:
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError as exc:
        raise TaskFileError(str(folder), None, f"cannot read the folder: {exc.strerror or exc}") from None
    try:
        return folder / folder_manifest(str(folder), names)
    except ManifestError as exc:
        raise TaskFileError(exc.source, None, exc.message) from None


def _read(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TaskFileError(source, None, f"cannot read: {exc.strerror or exc}") from None


def _collect(manifest: ManifestSpec, root: Path, source: str) -> dict[str, Path]:
    """Every file to ship, by its path relative to ``root``, in declaration then walk order."""
    files: dict[str, Path] = {}
    for declared in manifest.declared_files:
        local = root / declared
        if not os.path.lexists(local):
            raise TaskFileError(source, "files", f"{declared!r} does not exist")
        real = _inside(local, root, source, declared)
        if real.is_dir():
            if local.is_symlink():
                raise _symlinked_folder(source, declared)
            for rel in _walk(local, root, source):
                files.setdefault(rel, root / rel)
        else:
            _check_regular(real, source, declared)
            files.setdefault(declared, local)
        if len(files) > MAX_FILES:
            raise TaskFileError(source, "files", f"more than {MAX_FILES} files; list fewer")
    return files


def _walk(folder: Path, root: Path, source: str) -> Iterator[str]:
    """Relative paths of the files under ``folder``, sorted, refusing unsafe entries."""
    for current, dirs, names in os.walk(folder, followlinks=False):
        base = Path(current)
        dirs.sort()
        for name in dirs:
            if (base / name).is_symlink():
                raise _symlinked_folder(source, (base / name).relative_to(root).as_posix())
        for name in sorted(names):
            local = base / name
            rel = local.relative_to(root).as_posix()
            if _canonical_or_none(rel) != rel:
                raise TaskFileError(source, "files", f"{rel!r}: this name cannot be shipped")
            _check_regular(_inside(local, root, source, rel), source, rel)
            yield rel


def _inside(local: Path, root: Path, source: str, rel: str) -> Path:
    """Where ``local`` really leads, if that is inside ``root``."""
    try:
        real = local.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise TaskFileError(source, "files", f"{rel!r} cannot be resolved: {exc}") from None
    if not real.is_relative_to(root):
        raise TaskFileError(
            source, "files", f"{rel!r} leads outside the task folder (to {real}); not shipped"
        )
    return real


def _check_regular(real: Path, source: str, rel: str) -> None:
    if not stat.S_ISREG(real.stat().st_mode):
        raise TaskFileError(source, "files", f"{rel!r} is not a regular file")


def _canonical_or_none(rel: str) -> str | None:
    try:
        return canonical_path(rel)
    except ValueError:
        return None


def _symlinked_folder(source: str, rel: str) -> TaskFileError:
    return TaskFileError(
        source, "files", f"{rel!r} is a symlinked folder; list the folder it points to instead"
    )



def _entry(rel: str, local: Path, source: str) -> FileEntry:
    try:
        size, digest = file_sha256(local)
    except OSError as exc:
        raise TaskFileError(source, "files", f"{rel!r} cannot be read: {exc.strerror}") from None
    return FileEntry(path=rel, size=size, sha256=digest)
