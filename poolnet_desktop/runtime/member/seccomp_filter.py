"""The seccomp filter every sandbox runs under: no kernel keyring, no user namespace.

- The kernel's keyrings are behind none of the namespaces a sandbox has. A shard of a member
  run as root used root's user keyring, the same one as every root process on the machine and
  every other sandbox: it could read the keys kept there (passwords systemd caches, Kerberos
  tickets) and leave notes for another task's shards. One run as a user has that user's login
  session keyring. So ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM.
- A user namespace of a shard's own gives it every capability there: file systems to mount
  (a tmpfs whose memory no one measures), and the kernel's larger surface that most of its
  privilege escalations need. So ``unshare`` and ``clone`` asking for ``CLONE_NEWUSER`` fail
  with EPERM, and ``clone3``, whose flags a filter cannot read, with ENOSYS: the C library
  then uses ``clone`` (glibc does, for threads and ``posix_spawn``).

As in Flatpak's and Docker's filters, by every system call ABI the machine runs (x86-64's
32-bit ones included); a call by an ABI this filter does not know ends its process. The
program is classic BPF, handed to bubblewrap through a pipe (``--seccomp FD``). Built for
x86-64 and AArch64; elsewhere ``program()`` is None and sandboxes run without it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

_LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_IF_ANY_BIT = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K
# Offsets in struct seccomp_data: the call's number, its ABI, the low half of its first argument.
_NUMBER_AT, _ARCH_AT, _FIRST_ARGUMENT_AT = 0, 4, 16
_ALLOW = 0x7FFF0000
_FAIL = 0x00050000  # SECCOMP_RET_ERRNO, with the errno in the low bits
_KILL_PROCESS = 0x80000000
_CLONE_NEWUSER = 0x10000000
_X32 = 0x40000000  # x86-64's x32 ABI: its numbers are the 64-bit ones with this bit set


@dataclass(frozen=True)
class Calls:
    """One ABI's numbers for the calls the filter judges."""

    keyring: tuple[int, ...]  # add_key, request_key, keyctl
    namespacing: tuple[int, ...]  # clone, unshare: their first argument holds the flags
    clone3: int


def _x86_64(numbers: tuple[int, ...]) -> tuple[int, ...]:
    return numbers + tuple(_X32 | n for n in numbers)


# By the machine's architecture: each ABI it runs, by its audit architecture.
CALLS: dict[str, dict[int, Calls]] = {
    "x86_64": {
        0xC000003E: Calls(_x86_64((248, 249, 250)), _x86_64((56, 272)), 435),  # x86-64 and x32
        0x40000003: Calls((286, 287, 288), (120, 310), 435),  # i386
    },
    "aarch64": {
        0xC00000B7: Calls((217, 218, 219), (220, 97), 435),  # AArch64
        0x40000028: Calls((309, 310, 311), (120, 337), 435),  # 32-bit ARM
    },
}


class _Load(NamedTuple):
    offset: int


class _Return(NamedTuple):
    value: int


class _Jump(NamedTuple):
    """To ``label`` if the loaded word equals ``k`` (or, ``any_bit``, shares a bit with it)."""

    k: int
    label: str
    any_bit: bool = False


class _Label(NamedTuple):
    name: str


def build(abis: dict[int, Calls]) -> bytes:
    """The program for these ABIs (see the module's docstring)."""
    code: list[_Load | _Return | _Jump | _Label] = [_Load(_ARCH_AT)]
    code += [_Jump(arch, f"abi-{index}") for index, arch in enumerate(abis)]
    code.append(_Return(_KILL_PROCESS))
    for index, calls in enumerate(abis.values()):
        code += [_Label(f"abi-{index}"), _Load(_NUMBER_AT)]
        code += [_Jump(number, "refuse") for number in calls.keyring]
        code.append(_Jump(calls.clone3, "missing"))
        code += [_Jump(number, "flags") for number in calls.namespacing]
        code.append(_Return(_ALLOW))
    code += [
        _Label("flags"), _Load(_FIRST_ARGUMENT_AT), _Jump(_CLONE_NEWUSER, "refuse", any_bit=True), _Return(_ALLOW),
        _Label("refuse"), _Return(_FAIL | errno.EPERM),
        _Label("missing"), _Return(_FAIL | errno.ENOSYS),
    ]
    return _assemble(code)


def _assemble(code: list[_Load | _Return | _Jump | _Label]) -> bytes:
    """Instructions with jumps to labels, as bytes (a jump counts from the instruction after it)."""
    instructions = [item for item in code if not isinstance(item, _Label)]
    labels, at = {}, 0
    for item in code:
        if isinstance(item, _Label):
            labels[item.name] = at
        else:
            at += 1
    out = []
    for at, item in enumerate(instructions, start=1):
        if isinstance(item, _Load):
            out.append(struct.pack("=HBBI", _LOAD_WORD, 0, 0, item.offset))
        elif isinstance(item, _Return):
            out.append(struct.pack("=HBBI", _RETURN, 0, 0, item.value))
        else:
            jump = labels[item.label] - at
            if not 0 <= jump < 256:
                raise ValueError(f"a jump of {jump} instructions")
            out.append(struct.pack("=HBBI", _JUMP_IF_ANY_BIT if item.any_bit else _JUMP_IF_EQUAL, jump, 0, item.k))
    return b"".join(out)


@functools.cache
def program() -> bytes | None:
    """This machine's program, or None where it has none (an architecture not built for)."""
    abis = CALLS.get(platform.machine().lower())
    return build(abis) if abis is not None else None


@contextlib.contextmanager
def program_pipe() -> Iterator[int | None]:
    """A descriptor to read this machine's program from, for one bwrap to inherit and read
    (each its own: a reader takes the bytes it reads). None where there is no program."""
    code = program()
    if code is None:
        yield None
        return
    read, write = os.pipe()
    try:
        try:  # a few hundred bytes: the pipe's buffer holds them, no reader is waited for
            os.write(write, code)
        finally:
            os.close(write)
        yield read
    finally:
        os.close(read)
