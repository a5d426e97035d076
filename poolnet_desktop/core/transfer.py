"""Files over the WebSocket: the binary chunk frame and the receiver's bookkeeping.

Control messages are JSON text frames capped at ``MAX_CONTROL_MESSAGE``; file bytes travel as
binary frames so that nothing is base64-encoded and no frame comes near that cap. One frame is::

    magic b"PNFC" | version (1 byte) | header length (4 bytes, big-endian)
    | JSON header (ChunkHeader) | raw chunk bytes

Every chunk names its transfer, the file's safe relative path, where the chunk starts, the
file's total size and the sha256 of the whole file, so that a receiver can refuse a file before
storing a byte of it and can verify it when the last chunk lands.

Pure: ``FileAssembler`` says what to write where; the runtime does the writing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated

import msgspec

from poolnet_desktop.core.paths import UnsafePathError, safe_relative_path
from poolnet_desktop.core.units import BYTES_PER_MB
from poolnet_desktop.core.wire import (
    MAX_CONTROL_MESSAGE,
    ErrorCode,
    ProtocolError,
    Sha256Hex,
)

MAGIC = b"PNFC"
VERSION = 1
CHUNK_SIZE = 256 * 1024
# A JSON header holds a path of at most 4096 characters plus a few numbers.
MAX_HEADER_SIZE = 16 * 1024
MAX_FRAME_SIZE = MAX_CONTROL_MESSAGE
_PREFIX = struct.Struct(">4sBI")
# JSON numbers above 2**53 lose precision in JavaScript peers; no real file is that big.
_MAX_OFFSET = 2**53

TransferId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ByteCount = Annotated[int, msgspec.Meta(ge=0, le=_MAX_OFFSET)]


class TransferErrorCode:
    """Codes beyond ``ErrorCode`` that only file transfers raise."""

    CHECKSUM_MISMATCH = "checksum_mismatch"
    OUT_OF_ORDER = "out_of_order"


class TransferError(ProtocolError):
    """A chunk or file that the receiver refuses; ``path`` names the file when one is known."""

    def __init__(self, code: str, message: str, path: PurePosixPath | None = None) -> None:
        super().__init__(code, message)
        self.path = path


class ChunkHeader(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """What one binary frame carries besides its bytes. ``path`` is validated on decode."""

    transfer_id: TransferId
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    offset: ByteCount
    size: ByteCount
    sha256: Sha256Hex
    last: bool


_header_encoder = msgspec.json.Encoder()
_header_decoder = msgspec.json.Decoder(ChunkHeader)


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message)


def encode_chunk(header: ChunkHeader, data: bytes) -> bytes:
    """Build one binary frame. Raises ``ValueError`` when header and data disagree."""
    problem = _extent_problem(header, len(data))
    if problem:
        raise ValueError(problem)
    head = _header_encoder.encode(header)
    if len(head) > MAX_HEADER_SIZE:
        raise ValueError(f"chunk header of {len(head)} bytes exceeds {MAX_HEADER_SIZE}")
    frame = b"".join((_PREFIX.pack(MAGIC, VERSION, len(head)), head, data))
    if len(frame) > MAX_FRAME_SIZE:
        raise ValueError(f"chunk frame of {len(frame)} bytes exceeds {MAX_FRAME_SIZE}")
    return frame


def decode_chunk(frame: bytes) -> tuple[ChunkHeader, bytes]:
    """Split a binary frame into its validated header and its bytes, or raise ProtocolError.

    The header's path is checked with ``safe_relative_path`` and its extent against its size;
    a receiver still has to check order, caps and checksums (``FileAssembler`` does).
    """
    if len(frame) > MAX_FRAME_SIZE:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"chunk frame exceeds {MAX_FRAME_SIZE} bytes")
    if len(frame) < _PREFIX.size:
        raise _bad(f"chunk frame of {len(frame)} bytes is shorter than its fixed header")
    magic, version, head_len = _PREFIX.unpack_from(frame)
    if magic != MAGIC:
        raise _bad(f"not a PoolNet file chunk (magic {magic!r})")
    if version != VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_PROTOCOL, f"chunk format version {version}, expected {VERSION}"
        )
    if head_len > MAX_HEADER_SIZE or _PREFIX.size + head_len > len(frame):
        raise _bad(f"chunk header length {head_len} does not fit the frame")
    start = _PREFIX.size
    try:
        header = _header_decoder.decode(frame[start : start + head_len])
    except msgspec.ValidationError as exc:
        raise _bad(f"bad chunk header: {exc}") from None
    except msgspec.DecodeError as exc:
        raise _bad(f"malformed chunk header: {exc}") from None
    try:
        safe_relative_path(header.path)
    except UnsafePathError as exc:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"refused chunk path: {exc}") from None
    data = frame[start + head_len :]
    problem = _extent_problem(header, len(data))
    if problem:
        raise _bad(problem)
    return header, data


def _extent_problem(header: ChunkHeader, length: int) -> str | None:
    """Why a chunk of ``length`` bytes cannot sit where its header says, or None if it can."""
    end = header.offset + length
    if end > header.size:
        return f"chunk at {header.offset}+{length} runs past the file size {header.size}"
    if header.last != (end == header.size):
        return f"chunk ending at {end} of {header.size} has last={header.last}"
    if length == 0 and header.size != 0:
        return "empty chunk in a non-empty file"
    return None


def chunk_headers(
    transfer_id: str, path: str, size: int, sha256: str, chunk_size: int = CHUNK_SIZE
) -> Iterator[ChunkHeader]:
    """The headers a sender emits for one file, in order; read ``size`` bytes at each offset.

    The sender hashes the file first (the hash goes in every header). An empty file is one
    empty, last chunk.
    """
    if chunk_size <= 0 or chunk_size > MAX_FRAME_SIZE - MAX_HEADER_SIZE - _PREFIX.size:
        raise ValueError(f"chunk size {chunk_size} outside 1..{MAX_FRAME_SIZE - MAX_HEADER_SIZE}")
    safe_relative_path(path)  # refuse before the first byte is read
    offset = 0
    while True:
        end = min(offset + chunk_size, size)
        yield ChunkHeader(
            transfer_id=transfer_id,
            path=path,
            offset=offset,
            size=size,
            sha256=sha256,
            last=end == size,
        )
        if end == size:
            return
        offset = end


@dataclass(frozen=True, slots=True)
class WriteOp:
    """What the runtime must do with one accepted chunk.

    Write ``data`` at ``offset`` of ``path`` (relative to the receiving folder; keep it in a
    temporary file until ``complete``). When ``complete`` is true the file's size and sha256
    were verified: move it into place.
    """

    path: PurePosixPath
    offset: int
    data: bytes
    complete: bool


@dataclass(slots=True)
class _OpenFile:
    size: int
    sha256: str
    received: int
    hasher: "hashlib._Hash"


class FileAssembler:
    """Receiver state for one transfer: chunks in order per file, caps, sha256 as they come.

    Files may interleave; each file's chunks must arrive in order. A declared size over
    ``max_file_size``, or declared sizes summing past ``max_transfer_size``, is refused at the
    file's first chunk, before any byte is written. A wrong sha256 raises ``TransferError``
    with code ``checksum_mismatch`` on the last chunk: the runtime deletes that file's
    temporary copy; that path cannot be sent again in this transfer, so the sender starts a
    new one. Every other ``TransferError`` leaves this object unchanged.
    """

    def __init__(
        self,
        transfer_id: str,
        *,
        max_file_size: int,
        max_transfer_size: int,
        max_files: int = 100_000,
    ) -> None:
        if max_file_size < 0 or max_transfer_size < 0 or max_files < 1:
            raise ValueError("transfer caps must be non-negative (and max_files at least 1)")
        self.transfer_id = transfer_id
        self.max_file_size = max_file_size
        self.max_transfer_size = max_transfer_size
        self.max_files = max_files
        self.declared_bytes = 0
        self.received_bytes = 0
        self.completed: list[PurePosixPath] = []
        self._open: dict[PurePosixPath, _OpenFile] = {}
        self._seen: set[PurePosixPath] = set()

    def accept(self, header: ChunkHeader, data: bytes) -> WriteOp:
        """Check one decoded chunk and say what to write, or raise ``TransferError``."""
        path = safe_relative_path(header.path)
        if header.transfer_id != self.transfer_id:
            raise TransferError(
                ErrorCode.BAD_MESSAGE,
                f"chunk of transfer {header.transfer_id!r} sent to transfer {self.transfer_id!r}",
                path,
            )
        problem = _extent_problem(header, len(data))
        if problem:
            raise TransferError(ErrorCode.BAD_MESSAGE, f"{path}: {problem}", path)
        entry = self._open.get(path)
        if entry is not None and (header.size != entry.size or header.sha256 != entry.sha256):
            raise TransferError(
                ErrorCode.BAD_MESSAGE, f"{path}: size or sha256 changed mid-file", path
            )
        expected = entry.received if entry is not None else 0
        if header.offset != expected:
            raise TransferError(
                TransferErrorCode.OUT_OF_ORDER,
                f"{path}: chunk at offset {header.offset}, expected {expected}",
                path,
            )
        if entry is None:
            entry = self._start(path, header)
        entry.hasher.update(data)
        entry.received += len(data)
        self.received_bytes += len(data)
        if not header.last:
            return WriteOp(path, header.offset, data, complete=False)
        del self._open[path]
        digest = entry.hasher.hexdigest()
        if digest != entry.sha256:
            raise TransferError(
                TransferErrorCode.CHECKSUM_MISMATCH,
                f"{path}: sha256 {digest} does not match the announced {entry.sha256}",
                path,
            )
        self.completed.append(path)
        return WriteOp(path, header.offset, data, complete=True)

    def _start(self, path: PurePosixPath, header: ChunkHeader) -> _OpenFile:
        if path in self._seen:
            raise TransferError(ErrorCode.BAD_MESSAGE, f"{path}: sent twice", path)
        if len(self._seen) >= self.max_files:
            raise TransferError(
                ErrorCode.TOO_LARGE, f"more than {self.max_files} files in one transfer", path
            )
        if header.size > self.max_file_size:
            raise TransferError(
                ErrorCode.TOO_LARGE,
                f"{path}: {header.size} bytes exceeds the per-file cap of {self.max_file_size}",
                path,
            )
        if self.declared_bytes + header.size > self.max_transfer_size:
            raise TransferError(
                ErrorCode.TOO_LARGE,
                f"{path}: transfer would reach {self.declared_bytes + header.size} bytes, "
                f"over the cap of {self.max_transfer_size}",
                path,
            )
        entry = _OpenFile(header.size, header.sha256, 0, hashlib.sha256())
        self._seen.add(path)
        self.declared_bytes += header.size
        self._open[path] = entry
        return entry


@dataclass(frozen=True, slots=True)
class IncomingLimits:
    """Bounds on result files arriving at the coordinator: bytes announced and not yet
    arrived, per member and over all members, and the free space to leave on the data
    folder's disk, so that members cannot fill it between them."""

    per_member: int
    total: int
    disk_margin: int


def output_allowance(storage_mb: float, max_output_bytes: int) -> int:
    """How many bytes of outputs one shard may return: its ``storage`` request when it
    states one (a shard cannot honestly need more), else the pool's cap."""
    if storage_mb <= 0:
        return max_output_bytes
    return min(max_output_bytes, int(storage_mb * BYTES_PER_MB))


def incoming_refusal(
    announced: int,
    allowance: int,
    member_in_flight: int,
    total_in_flight: int,
    disk_free: int,
    limits: IncomingLimits,
) -> str | None:
    """Why a result transfer of ``announced`` bytes is refused before any byte of it is
    written, or None. The in-flight counts are those already open, not counting this one."""
    if announced > allowance:
        return f"its outputs total {announced} bytes, more than the {allowance} the task allows"
    if member_in_flight + announced > limits.per_member:
        return f"this member already sends {member_in_flight} bytes (at most {limits.per_member})"
    if total_in_flight + announced > limits.total:
        return f"members already send {total_in_flight} bytes (at most {limits.total} at once)"
    if disk_free - total_in_flight - announced < limits.disk_margin:
        return f"the host's disk is short ({disk_free} bytes free)"
    return None
