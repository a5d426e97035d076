"""Strip the symbols of a Linux bundle's shared libraries, keeping only the strips the loader
cannot tell from the original.

Stripping every library (PyInstaller's ``strip=True``) broke numpy: its OpenBLAS, rewritten by
auditwheel's patchelf, has loaded segments past the section data that ``strip`` moves, so the
stripped copy's segments no longer sit at page-aligned offsets and every ``import numpy`` failed
("ELF load command address/offset not page-aligned"), which left the installed app's Dashboard
empty. So each library is stripped into a copy, and the copy replaces it only if everything the
dynamic loader reads (the program header table and the bytes of each loaded segment) is the same
in both: what goes is then only what nothing maps (symbol tables, debug sections).
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
PT_LOAD = 1


def loader_view(elf: bytes) -> tuple[bytes, ...]:
    """What the dynamic loader reads of an ELF file: its program header table, then the file
    bytes of each loaded segment. The ELF header is left out: it also records where the section
    table is, which stripping moves. Raises ValueError for a file that is not ELF."""
    if not elf.startswith(ELF_MAGIC) or len(elf) < 52:
        raise ValueError("not an ELF file")
    wide, order = elf[4] == 2, "<" if elf[5] == 1 else ">"
    if wide:
        (phoff,) = struct.unpack_from(order + "Q", elf, 0x20)
        ehsize, phentsize, phnum = struct.unpack_from(order + "HHH", elf, 0x34)
    else:
        (phoff,) = struct.unpack_from(order + "I", elf, 0x1C)
        ehsize, phentsize, phnum = struct.unpack_from(order + "HHH", elf, 0x28)
    table = elf[phoff : phoff + phentsize * phnum]
    if len(table) != phentsize * phnum:
        raise ValueError("truncated program header table")
    segments = []
    for index in range(phnum):
        entry = phoff + index * phentsize
        if wide:
            kind, _, offset, _, _, filesz = struct.unpack_from(order + "IIQQQQ", elf, entry)
        else:
            kind, offset, _, _, filesz = struct.unpack_from(order + "IIIII", elf, entry)
        if kind == PT_LOAD:
            start = max(offset, ehsize)
            segments.append(elf[start : offset + filesz])
    return (table, *segments)


def loads_the_same(original: bytes, stripped: bytes) -> bool:
    """Whether the loader would see no difference between a library and its stripped copy."""
    return loader_view(original) == loader_view(stripped)


@dataclass(frozen=True)
class StripReport:
    stripped: int  # libraries replaced by their stripped copy
    kept: tuple[str, ...]  # libraries left as they were: stripping changed what the loader reads
    saved_bytes: int


def strip_where_safe(folder: Path, strip: str = "strip") -> StripReport:
    """Strip every shared library (``*.so``, ``*.so.N``) under ``folder`` in place where
    :func:`loads_the_same` holds for the stripped copy; leave the others untouched. Executables
    are not touched: a PyInstaller executable carries its archive appended after the ELF data."""
    stripped, kept, saved = 0, [], 0
    for path in sorted(folder.rglob("*.so*")):
        if path.is_symlink() or not path.is_file() or not _is_shared_library_name(path.name):
            continue
        original = path.read_bytes()
        if not original.startswith(ELF_MAGIC):
            continue
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch, path.name)
            subprocess.run([strip, "-o", str(copy), str(path)], check=True, capture_output=True)
            smaller = copy.read_bytes()
        if len(smaller) >= len(original):
            continue
        if not loads_the_same(original, smaller):
            kept.append(str(path.relative_to(folder)))
            continue
        mode = path.stat().st_mode
        path.write_bytes(smaller)
        os.chmod(path, mode)
        stripped += 1
        saved += len(original) - len(smaller)
    return StripReport(stripped, tuple(kept), saved)


def _is_shared_library_name(name: str) -> bool:
    """``libx.so``, ``libx.so.6``, ``mod.cpython-311-x86_64-linux-gnu.so``; not ``x.sock``."""
    stem, dot_so, version = name.partition(".so")
    return bool(stem) and dot_so == ".so" and (version == "" or version.startswith("."))
