"""The binary chunk frame and FileAssembler: literal bytes in, decisions out, no I/O."""

from __future__ import annotations

import hashlib
import struct
from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolnet_desktop.core.protocol import ErrorCode, ProtocolError
from poolnet_desktop.core.transfer import (
    CHUNK_SIZE,
    MAGIC,
    MAX_FRAME_SIZE,
    ChunkHeader,
    FileAssembler,
    TransferError,
    TransferErrorCode,
    chunk_headers,
    decode_chunk,
    encode_chunk,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frames_for(
    data: bytes, path: str = "in/a.bin", tid: str = "t1", size: int = 1000
) -> list[bytes]:
    """What a sender emits for ``data`` in ``size``-byte chunks."""
    return [
        encode_chunk(h, data[h.offset : h.offset + size])
        for h in chunk_headers(tid, path, len(data), sha(data), chunk_size=size)
    ]


def assembler(**caps: int) -> FileAssembler:
    return FileAssembler(
        "t1",
        max_file_size=caps.get("max_file_size", 10_000),
        max_transfer_size=caps.get("max_transfer_size", 20_000),
        max_files=caps.get("max_files", 100),
    )


def test_round_trip_keeps_header_and_bytes() -> None:
    data = b"\x00\xffhello"
    header = ChunkHeader(
        transfer_id="t", path="a/b.txt", offset=0, size=7, sha256=sha(data), last=True
    )
    frame = encode_chunk(header, data)
    assert frame.startswith(MAGIC)
    assert decode_chunk(frame) == (header, data)


def test_full_size_chunk_fits_far_under_the_control_cap() -> None:
    data = b"x" * CHUNK_SIZE
    header = ChunkHeader(
        transfer_id="t" * 128,
        path="p/" * 1000 + "f",
        offset=0,
        size=CHUNK_SIZE,
        sha256=sha(data),
        last=True,
    )
    assert len(encode_chunk(header, data)) < MAX_FRAME_SIZE // 2


def test_chunk_headers_cover_the_file_exactly() -> None:
    headers = list(chunk_headers("t", "f", 2500, sha(b""), chunk_size=1000))
    assert [(h.offset, h.last) for h in headers] == [(0, False), (1000, False), (2000, True)]
    assert [h.offset for h in chunk_headers("t", "f", 2000, sha(b""), chunk_size=1000)] == [0, 1000]


def test_empty_file_is_one_empty_last_chunk() -> None:
    (frame,) = frames_for(b"")
    op = assembler().accept(*decode_chunk(frame))
    assert op.complete and op.data == b"" and op.offset == 0


def test_chunk_headers_refuse_an_escaping_path() -> None:
    with pytest.raises(ValueError, match="escapes"):
        next(chunk_headers("t", "../x", 1, sha(b"")))


@pytest.mark.parametrize(
    ("offset", "size", "last", "data", "why"),
    [
        (0, 3, True, b"abcd", "runs past"),
        (0, 4, False, b"abcd", "last=False"),
        (0, 8, True, b"abcd", "last=True"),
        (0, 4, False, b"", "empty chunk"),
    ],
)
def test_encode_refuses_inconsistent_extent(
    offset: int, size: int, last: bool, data: bytes, why: str
) -> None:
    header = ChunkHeader(
        transfer_id="t", path="f", offset=offset, size=size, sha256=sha(b""), last=last
    )
    with pytest.raises(ValueError, match=why):
        encode_chunk(header, data)


def raw_frame(head: bytes, data: bytes = b"", magic: bytes = MAGIC, version: int = 1) -> bytes:
    return struct.pack(">4sBI", magic, version, len(head)) + head + data


GOOD_HEAD = (
    b'{"transferId":"t","path":"f","offset":0,"size":3,"sha256":"' + b"0" * 64 + b'","last":true}'
)


@pytest.mark.parametrize(
    ("frame", "code", "why"),
    [
        (b"", ErrorCode.BAD_MESSAGE, "shorter"),
        (b"PNF", ErrorCode.BAD_MESSAGE, "shorter"),
        (raw_frame(GOOD_HEAD, b"abc", magic=b"XXXX"), ErrorCode.BAD_MESSAGE, "magic"),
        (raw_frame(GOOD_HEAD, b"abc", version=2), ErrorCode.UNSUPPORTED_PROTOCOL, "version 2"),
        (struct.pack(">4sBI", MAGIC, 1, 500) + b"{}", ErrorCode.BAD_MESSAGE, "does not fit"),
        (struct.pack(">4sBI", MAGIC, 1, 2**32 - 1), ErrorCode.BAD_MESSAGE, "does not fit"),
        (raw_frame(b"{not json"), ErrorCode.BAD_MESSAGE, "malformed"),
        (raw_frame(b'{"transferId":"t"}'), ErrorCode.BAD_MESSAGE, "bad chunk header"),
        (raw_frame(GOOD_HEAD.replace(b'"0', b'"Z'), b"abc"), ErrorCode.BAD_MESSAGE, "sha256"),
        (raw_frame(GOOD_HEAD.replace(b'"f"', b'"../f"'), b"abc"), ErrorCode.FORBIDDEN, "escapes"),
        (raw_frame(GOOD_HEAD.replace(b'"f"', b'"/x"'), b"abc"), ErrorCode.FORBIDDEN, "absolute"),
        (raw_frame(GOOD_HEAD, b"ab"), ErrorCode.BAD_MESSAGE, "last=True"),
        (raw_frame(GOOD_HEAD.replace(b":0,", b":-1,"), b"abc"), ErrorCode.BAD_MESSAGE, "offset"),
        (b"\x00" * (MAX_FRAME_SIZE + 1), ErrorCode.TOO_LARGE, "exceeds"),
    ],
)
def test_decode_refuses_garbage_with_a_code(frame: bytes, code: str, why: str) -> None:
    with pytest.raises(ProtocolError, match=why) as info:
        decode_chunk(frame)
    assert info.value.code == code


def test_good_raw_frame_decodes() -> None:
    header, data = decode_chunk(raw_frame(GOOD_HEAD, b"abc"))
    assert header.path == "f" and data == b"abc"


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_only_raise_protocol_error(frame: bytes) -> None:
    try:
        decode_chunk(frame)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=200), st.binary(max_size=50), st.integers(0, 2**32 - 1))
def test_fuzz_valid_prefix_random_header(head: bytes, data: bytes, declared: int) -> None:
    for frame in (raw_frame(head, data), struct.pack(">4sBI", MAGIC, 1, declared) + head + data):
        try:
            header, body = decode_chunk(frame)
        except ProtocolError:
            continue
        assert not PurePosixPath(header.path).is_absolute()
        assert header.offset + len(body) <= header.size


@settings(max_examples=100)
@given(st.binary(max_size=5000), st.integers(1, 2000))
def test_assembled_bytes_equal_the_sent_file(data: bytes, size: int) -> None:
    asm = assembler()
    out = bytearray()
    ops = [asm.accept(*decode_chunk(f)) for f in frames_for(data, size=size)]
    for op in ops:
        assert op.offset == len(out)
        out += op.data
    assert bytes(out) == data
    assert [op.complete for op in ops] == [False] * (len(ops) - 1) + [True]
    assert asm.completed == [PurePosixPath("in/a.bin")]
    assert asm.received_bytes == len(data)


def test_interleaved_files_each_in_order() -> None:
    a, b = frames_for(b"A" * 2500, "a"), frames_for(b"B" * 1500, "b")
    asm = assembler()
    for frame in (a[0], b[0], a[1], b[1], a[2]):
        asm.accept(*decode_chunk(frame))
    assert asm.completed == [PurePosixPath("b"), PurePosixPath("a")]


def test_out_of_order_chunk_is_refused_without_changing_state() -> None:
    frames = frames_for(b"x" * 3000)
    asm = assembler()
    asm.accept(*decode_chunk(frames[0]))
    with pytest.raises(TransferError, match="expected 1000") as info:
        asm.accept(*decode_chunk(frames[2]))
    assert info.value.code == TransferErrorCode.OUT_OF_ORDER
    assert info.value.path == PurePosixPath("in/a.bin")
    asm.accept(*decode_chunk(frames[1]))
    assert asm.accept(*decode_chunk(frames[2])).complete


def test_first_chunk_must_start_at_zero() -> None:
    with pytest.raises(TransferError, match="expected 0"):
        assembler().accept(*decode_chunk(frames_for(b"x" * 3000)[1]))


def test_checksum_mismatch_on_the_last_chunk() -> None:
    data = b"y" * 2000
    wrong = sha(b"other")
    first = ChunkHeader(transfer_id="t1", path="f", offset=0, size=2000, sha256=wrong, last=False)
    second = ChunkHeader(
        transfer_id="t1", path="f", offset=1000, size=2000, sha256=wrong, last=True
    )
    asm = assembler()
    asm.accept(first, data[:1000])
    with pytest.raises(TransferError, match="does not match") as info:
        asm.accept(second, data[1000:])
    assert info.value.code == TransferErrorCode.CHECKSUM_MISMATCH
    assert asm.completed == []
    with pytest.raises(TransferError, match="sent twice"):
        asm.accept(*decode_chunk(frames_for(data, "f", "t1")[0]))


def test_per_file_cap_refuses_before_any_byte() -> None:
    asm = assembler(max_file_size=999)
    with pytest.raises(TransferError, match="per-file cap of 999") as info:
        asm.accept(*decode_chunk(frames_for(b"z" * 1000)[0]))
    assert info.value.code == ErrorCode.TOO_LARGE
    assert asm.received_bytes == 0 and asm.declared_bytes == 0
    asm.accept(*decode_chunk(frames_for(b"z" * 999)[0]))


def test_per_transfer_cap_counts_declared_sizes() -> None:
    asm = assembler(max_file_size=1000, max_transfer_size=1500)
    asm.accept(*decode_chunk(frames_for(b"1" * 1000, "one")[0]))
    with pytest.raises(TransferError, match="over the cap of 1500"):
        asm.accept(*decode_chunk(frames_for(b"2" * 600, "two")[0]))
    asm.accept(*decode_chunk(frames_for(b"2" * 500, "two")[0]))
    assert asm.declared_bytes == 1500


def test_file_count_cap() -> None:
    asm = assembler(max_files=2)
    for name in ("a", "b"):
        asm.accept(*decode_chunk(frames_for(b"", name)[0]))
    with pytest.raises(TransferError, match="more than 2 files"):
        asm.accept(*decode_chunk(frames_for(b"", "c")[0]))


def test_other_transfer_and_changed_file_are_refused() -> None:
    asm = assembler()
    with pytest.raises(TransferError, match="sent to transfer 't1'"):
        asm.accept(*decode_chunk(frames_for(b"abc", tid="t2")[0]))
    asm.accept(*decode_chunk(frames_for(b"q" * 1500)[0]))
    with pytest.raises(TransferError, match="changed mid-file"):
        asm.accept(*decode_chunk(frames_for(b"q" * 1600)[1]))


def test_bad_caps_are_refused() -> None:
    with pytest.raises(ValueError):
        FileAssembler("t", max_file_size=-1, max_transfer_size=0)
