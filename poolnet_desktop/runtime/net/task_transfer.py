"""Moving task files over a pool link: send a file as chunk frames, receive announced files.

Used the same way by all three parties: the submitter uploads inputs and receives results,
the coordinator receives inputs and outputs and sends blobs and results, the member receives
blobs and sends outputs. ``core.transfer`` checks every chunk (order, caps, sha256); this
module does the reading and writing, off the event loop.

A receiver only takes files it was told to expect (path, size and sha256 announced in a
control message first), so a peer cannot push anything else, and a file lands under its final
name only once its sha256 matched.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from poolnet_desktop.core.paths import safe_relative_path
from poolnet_desktop.core.transfer import (
    CHUNK_SIZE,
    ChunkHeader,
    FileAssembler,
    TransferError,
    chunk_headers,
    encode_chunk,
)
from poolnet_desktop.core.wire import ErrorCode

SendBytes = Callable[[bytes], Awaitable[object]]
_PART = ".poolnet-part"


@dataclass(frozen=True, slots=True)
class Expected:
    """A file announced before its chunks: its size and sha256."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A file to send: its name on the wire and where its bytes lie here. With ``beneath``
    (a shard's folder), ``path`` is read within that folder without following any link."""

    path: str
    local: Path
    size: int
    sha256: str
    beneath: Path | None = None


async def send_files(send: SendBytes, transfer_id: str, files: Iterable[Outgoing]) -> None:
    """Send each file as chunk frames, in order. Reads happen in a worker thread; each send
    waits for the link's buffer to drain, so memory stays bounded by one chunk."""
    for item in files:
        if item.beneath is not None:
            opened = open_beneath(item.beneath, item.path)
        else:
            opened = os.open(item.local, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        with os.fdopen(opened, "rb") as handle:
            for header in chunk_headers(transfer_id, item.path, item.size, item.sha256):
                size = min(CHUNK_SIZE, header.size - header.offset)
                data = await asyncio.to_thread(handle.read, size) if size else b""
                if len(data) != size:
                    raise OSError(f"{item.local} changed while being sent")
                await send(encode_chunk(header, data))


class FileReceiver:
    """Writes the chunks of one transfer under ``target``; only ``expected`` files are taken.

    ``accept`` returns the path of a file it just completed (or None). ``complete`` is true once
    every expected file has arrived. ``discard`` deletes what arrived (a refused transfer).
    """

    def __init__(
        self,
        transfer_id: str,
        target: Path,
        expected: Mapping[str, Expected],
        *,
        max_file_size: int,
        max_transfer_size: int,
    ) -> None:
        self.transfer_id = transfer_id
        self.target = target
        self.expected = dict(expected)
        self._assembler = FileAssembler(
            transfer_id,
            max_file_size=max_file_size,
            max_transfer_size=max_transfer_size,
            max_files=max(1, len(self.expected)),
        )
        self._written: list[Path] = []

    @property
    def complete(self) -> bool:
        return len(self._assembler.completed) == len(self.expected)

    async def accept(self, header: ChunkHeader, data: bytes) -> PurePosixPath | None:
        """Check and store one chunk; raises ``TransferError`` (the caller then ``discard``s)."""
        announced = self.expected.get(header.path)
        if announced is None or (announced.size, announced.sha256) != (header.size, header.sha256):
            raise TransferError(
                ErrorCode.FORBIDDEN, f"{header.path}: not a file announced for this transfer"
            )
        op = self._assembler.accept(header, data)
        final = self.target / op.path
        part = final.with_name(final.name + _PART)
        if op.offset == 0:
            self._written.append(final)
        await asyncio.to_thread(_write, self.target, part, final, op.offset, op.data, op.complete)
        return op.path if op.complete else None

    async def discard(self) -> None:
        await asyncio.to_thread(_remove, self._written)


def _write(root: Path, part: Path, final: Path, offset: int, data: bytes, complete: bool) -> None:
    if offset == 0:
        part.parent.mkdir(parents=True, exist_ok=True)
        # A folder on the way that is a symlink out of ``root`` must not take the file.
        if not part.parent.resolve().is_relative_to(root.resolve()):
            raise TransferError(ErrorCode.FORBIDDEN, f"{final.name}: its folder leads outside {root}")
    with open(part, "r+b" if offset else "wb") as handle:
        handle.seek(offset)
        handle.write(data)
    if complete:
        os.replace(part, final)


def _remove(paths: list[Path]) -> None:
    for final in paths:
        for path in (final, final.with_name(final.name + _PART)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def expected_files(entries: Iterable[tuple[str, int, str]]) -> dict[str, Expected]:
    """``{path: Expected}`` from ``(path, size, sha256)`` triples, paths checked as safe."""
    return {str(safe_relative_path(path)): Expected(size, sha) for path, size, sha in entries}


def replace_folder(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination``, replacing whatever was there (blocking)."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, destination)

def file_sha256(path: Path | int) -> tuple[int, str]:
    """A file's size and sha256 from one read, so the two agree even if it changes meanwhile
    (a size from ``stat`` could describe other bytes than the ones hashed). ``path`` may be an
    open descriptor (it is closed). Blocking."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return handle.tell(), digest


_WALK_SAFELY = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")


def open_beneath(root: Path, relative: str) -> int:
    """A read-only descriptor of the regular file ``relative`` under ``root``, reached with
    no link followed on the way: each step is opened ``O_NOFOLLOW`` from the one before.

    A shard's folder may have been reached by another sandbox (a descriptor handed over an
    abstract socket where the kernel has no Landlock scopes), which can swap any part of the
    path for a symlink after the outputs were checked: the member must read only what lies in
    the folder. Raises ``OSError``: ``ELOOP``/``ENOTDIR`` for a link on the way, ``EINVAL`` for
    what is no regular file. (Windows, which has no sandbox here, opens the path as it is.)
    """
    parts = safe_relative_path(relative).parts
    if not _WALK_SAFELY:
        return os.open(root.joinpath(*parts), os.O_RDONLY | getattr(os, "O_BINARY", 0))
    folder_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    folder = os.open(root, folder_flags)
    try:
        for part in parts[:-1]:
            inner = os.open(part, folder_flags, dir_fd=folder)
            os.close(folder)
            folder = inner
        opened = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(opened).st_mode):
        os.close(opened)
        raise OSError(errno.EINVAL, f"{relative} is not a regular file")
    return opened
