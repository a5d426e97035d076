"""The seccomp program, run by a small classic-BPF interpreter for every ABI it knows (the
sandbox tests run it in the real kernel, for this machine's own ABI only)."""

from __future__ import annotations

import errno
import struct

import pytest

from poolnet_desktop.runtime.member.seccomp_filter import _KEYRING_CALLS, build

ALLOW, EPERM, KILL = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000
X86_64, I386, AARCH64, ARM = 0xC000003E, 0x40000003, 0xC00000B7, 0x40000028


def run(program: bytes, number: int, arch: int) -> int:
    """What the kernel would return for a call ``number`` of ``arch``: loads of the
    call's number and architecture, jumps if equal, returns, as the program uses them."""
    instructions = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    data = {0: number, 4: arch}
    accumulator, at = 0, 0
    while True:
        code, if_true, if_false, k = instructions[at]
        at += 1
        if code == 0x20:
            accumulator = data[k]
        elif code == 0x15:
            at += if_true if accumulator == k else if_false
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"an instruction this program should not have: {code:#x}")


@pytest.mark.parametrize(("machine", "arch", "keyring", "other"), [
    ("x86_64", X86_64, (248, 249, 250), (0, 1, 59, 247, 251)),
    ("x86_64", X86_64, (0x40000000 | 248, 0x40000000 | 250), (0x40000000 | 1,)),
    ("x86_64", I386, (286, 287, 288), (3, 11, 285, 289)),
    ("aarch64", AARCH64, (217, 218, 219), (63, 64, 220, 221)),
    ("aarch64", ARM, (309, 310, 311), (3, 11, 308)),
])
def test_keyring_calls_fail_and_every_other_call_is_allowed(machine, arch, keyring, other) -> None:
    program = build(_KEYRING_CALLS[machine])
    assert [run(program, n, arch) for n in keyring] == [EPERM] * len(keyring)
    assert [run(program, n, arch) for n in other] == [ALLOW] * len(other)


@pytest.mark.parametrize("machine", sorted(_KEYRING_CALLS))
def test_a_call_by_an_abi_the_filter_does_not_know_ends_the_process(machine) -> None:
    program = build(_KEYRING_CALLS[machine])
    foreign = {"x86_64": AARCH64, "aarch64": X86_64}[machine]
    assert run(program, 250, foreign) == KILL
    assert run(program, 1, foreign) == KILL
