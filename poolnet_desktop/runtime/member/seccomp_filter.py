"""The seccomp filter every sandbox runs under: no kernel keyring.

The kernel's keyrings are not behind any of the namespaces a sandbox has. A shard of a member
run as root used root's user keyring, the same one as every root process on the machine and
every other sandbox: it could read the keys kept there (passwords systemd caches, Kerberos
tickets) and leave notes for another task's shards. One run as a user has that user's login
session keyring. So ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM in a sandbox,
as in Flatpak's and Docker's, by every system call ABI the machine runs (x86-64's 32-bit
ones included), and a call of an ABI this filter does not know ends its process.

The program is classic BPF, handed to bubblewrap through a pipe (``--seccomp FD``). Built for
x86-64 and AArch64 only; elsewhere ``program()`` is None and sandboxes run without it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import platform
import struct
from collections.abc import Iterator

_LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K
_NUMBER_AT, _ARCH_AT = 0, 4  # offsets in struct seccomp_data
_ALLOW = 0x7FFF0000
_FAIL_EPERM = 0x00050000 | errno.EPERM
_KILL_PROCESS = 0x80000000
_X32 = 0x40000000  # x86-64's x32 ABI: its numbers are the 64-bit ones with this bit set

# The audit architecture of each system call ABI, and the numbers of add_key, request_key and
# keyctl in it, by the machine's native architecture.
_KEYRING_CALLS: dict[str, dict[int, tuple[int, ...]]] = {
    "x86_64": {
        0xC000003E: (248, 249, 250, _X32 | 248, _X32 | 249, _X32 | 250),  # x86-64 and x32
        0x40000003: (286, 287, 288),  # i386
    },
    "aarch64": {
        0xC00000B7: (217, 218, 219),  # AArch64
        0x40000028: (309, 310, 311),  # 32-bit ARM
    },
}


def _instruction(code: int, k: int, if_true: int = 0, if_false: int = 0) -> bytes:
    return struct.pack("=HBBI", code, if_true, if_false, k)


def build(calls_by_arch: dict[int, tuple[int, ...]]) -> bytes:
    """A program that fails the ``calls_by_arch`` calls with EPERM, allows every other call
    of those architectures, and kills a process that calls by any other."""
    blocks = []
    for numbers in calls_by_arch.values():
        block = [_instruction(_LOAD_WORD, _NUMBER_AT)]
        for index, number in enumerate(numbers):
            # Equal: jump to the EPERM after this block's ALLOW.
            block.append(_instruction(_JUMP_IF_EQUAL, number, if_true=len(numbers) - index))
        blocks.append([*block, _instruction(_RETURN, _ALLOW), _instruction(_RETURN, _FAIL_EPERM)])
    program = [_instruction(_LOAD_WORD, _ARCH_AT)]
    # One test per architecture, then a kill; each block follows, in the same order.
    distance = len(calls_by_arch)  # from past the first test to its block: the other tests, the kill
    for index, arch in enumerate(calls_by_arch):
        program.append(_instruction(_JUMP_IF_EQUAL, arch, if_true=distance - index + sum(len(b) for b in blocks[:index])))
    program.append(_instruction(_RETURN, _KILL_PROCESS))
    for block in blocks:
        program.extend(block)
    return b"".join(program)


@functools.cache
def program() -> bytes | None:
    """This machine's program, or None where it has none (an architecture not built for)."""
    calls = _KEYRING_CALLS.get(platform.machine().lower())
    return build(calls) if calls is not None else None


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
