"""A member's spool of finished shard results, kept on disk until the coordinator has them.

A member that finishes a shard while cut off from the coordinator (or that is restarted
before it could deliver) must not lose the result. The agent ``put``s every finished shard
here first, delivers what ``pending()`` lists whenever it is connected, and ``remove``s an
entry once the coordinator acknowledges it. Delivery is therefore at least once; the
coordinator records each shard's result exactly once by its key.

Layout: ``ROOT/KEY/entry.json`` (the outcome and the caller's metadata) and
``ROOT/KEY/files/...`` (copies of the output files). An entry is built in ``ROOT/.tmp-*`` and
renamed into place as a whole, so a crash or a full disk never leaves something that looks
complete: a folder named ``KEY`` is always a whole entry. Leftover temporary folders are
deleted when a ``Spool`` opens.

Blocking file I/O: from the event loop, call the methods through ``asyncio.to_thread``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec

from poolnet_desktop.core.paths import safe_relative_path
from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.runtime.net.task_transfer import open_beneath

_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_RECORD = "entry.json"
_FILES = "files"
_COPY_BLOCK = 1024 * 1024


class SpoolError(Exception):
    """A spool operation failed; nothing half-written was left behind."""


class _Record(msgspec.Struct, kw_only=True):
    version: int = 1
    key: str
    created: float
    meta: dict[str, str]
    outcome: ShardResult


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One finished shard waiting for delivery. Output ``outcome.outputs[i].path`` lies at
    ``files_dir / path``."""

    key: str
    created: float
    meta: dict[str, str]
    outcome: ShardResult
    files_dir: Path


class Spool:
    """The spool folder at ``root`` (created if missing). Safe to reopen after a crash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool folder {root}: {exc}") from exc
        for leftover in root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in root.glob(".trash-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def put(
        self,
        key: str,
        outcome: ShardResult,
        workdir: Path,
        meta: dict[str, str] | None = None,
        now: float | None = None,
    ) -> SpoolEntry:
        """Store ``outcome`` and copies of its output files (read from ``workdir``), durably.

        ``key`` names the shard attempt (letters, digits, ``._-``; the agent might use
        ``TASK-SHARD-ATTEMPT``). Each output is copied and checked against the sha256 in
        ``outcome``, so a file that changed after the shard ended is refused. Raises
        ``SpoolError`` (the disk is full, an output is missing or changed, the key exists);
        then nothing of the entry remains.
        """
        _check_key(key)
        final = self.root / key
        if final.exists():
            raise SpoolError(f"spool entry {key!r} already exists; remove it first")
        record = _Record(
            key=key,
            created=time.time() if now is None else now,
            meta=dict(meta or {}),
            outcome=outcome,
        )
        temp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            files = temp / _FILES
            files.mkdir(parents=True)
            root = workdir.resolve()
            for output in outcome.outputs:
                _copy_output(root, files, output.path, output.sha256)
            _write_durably(temp / _RECORD, msgspec.json.encode(record))
            _fsync_dir(temp)
            os.rename(temp, final)
            _fsync_dir(self.root)
        except BaseException as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise SpoolError(_describe(key, self.root, exc)) from exc
            raise
        return SpoolEntry(key, record.created, record.meta, outcome, final / _FILES)

    def pending(self) -> list[SpoolEntry]:
        """Every complete entry, oldest first. An unreadable one is moved aside to
        ``.corrupt-KEY`` (kept for a person to look at) and not returned."""
        entries = []
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                record = msgspec.json.decode((folder / _RECORD).read_bytes(), type=_Record)
            except (OSError, msgspec.DecodeError):
                os.replace(folder, self.root / f".corrupt-{folder.name}-{uuid.uuid4().hex[:8]}")
                continue
            entries.append(
                SpoolEntry(record.key, record.created, record.meta, record.outcome, folder / _FILES)
            )
        entries.sort(key=lambda e: (e.created, e.key))
        return entries

    def remove(self, key: str) -> bool:
        """Forget a delivered entry; False if there was none. The entry disappears at once
        (a rename); its files are deleted after, so a crash midway leaves only trash."""
        _check_key(key)
        folder = self.root / key
        trash = self.root / f".trash-{key}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise SpoolError(
            f"bad spool key {key!r}: use 1-128 letters, digits, '.', '_' or '-', not starting "
            "with '.'"
        )


def _copy_output(workdir: Path, files: Path, relative: str, sha256: str) -> None:
    """Copy one output into the entry, refusing escapes and files that changed since hashed."""
    rel = safe_relative_path(relative)
    target = files / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        source = open_beneath(workdir, relative)  # no link followed: see open_beneath
    except FileNotFoundError as exc:
        raise SpoolError(f"output {relative} is missing from {workdir}") from exc
    except OSError as exc:
        raise SpoolError(f"output {relative} is no file in the working folder: {exc}") from exc
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            while block := src.read(_COPY_BLOCK):
                digest.update(block)
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError as exc:
        raise SpoolError(f"output {relative} is missing from {workdir}") from exc
    if digest.hexdigest() != sha256:
        raise SpoolError(f"output {relative} changed after the shard ended (sha256 differs)")


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX; Windows has no directory handles)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(key: str, root: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"cannot spool {key!r}: the disk holding {root} is full"
    return f"cannot spool {key!r} in {root}: {exc}"
