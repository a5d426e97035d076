"""The seccomp program, run by a small classic-BPF interpreter for every ABI it knows (the
sandbox tests run it in the real kernel, for this machine's own ABI only)."""

from __future__ import annotations

import errno
import struct

import pytest

from poolnet_desktop.runtime.member.seccomp_filter import CALLS, build

ALLOW, EPERM, ENOSYS, KILL = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS, 0x80000000
X86_64, I386, AARCH64, ARM = 0xC000003E, 0x40000003, 0xC00000B7, 0x40000028
CLONE_NEWUSER, CLONE_NEWNS, CLONE_THREAD = 0x10000000, 0x00020000, 0x00010000


def run(program: bytes, number: int, arch: int, first_argument: int = 0) -> int:
    """What the kernel would return for call ``number`` of ``arch``: the program's loads of
    the call's number, ABI and first argument (its low half), its jumps and its returns."""
    instructions = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    data = {0: number, 4: arch, 16: first_argument & 0xFFFFFFFF}
    accumulator, at = 0, 0
    while True:
        code, if_true, if_false, k = instructions[at]
        at += 1
        if code == 0x20:
            accumulator = data[k]
        elif code in (0x15, 0x45):
            taken = accumulator == k if code == 0x15 else bool(accumulator & k)
            at += if_true if taken else if_false
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"an instruction this program should not have: {code:#x}")


ABIS = [(machine, arch) for machine, abis in CALLS.items() for arch in abis]


@pytest.mark.parametrize(("machine", "arch"), ABIS)
def test_keyring_calls_fail_and_other_calls_are_allowed(machine: str, arch: int) -> None:
    program, calls = build(CALLS[machine]), CALLS[machine][arch]
    assert {run(program, n, arch) for n in calls.keyring} == {EPERM}
    others = {0, 1, 3, 11, 59, 63} - {*calls.keyring, *calls.namespacing, calls.clone3}
    assert {run(program, n, arch) for n in others} == {ALLOW}


@pytest.mark.parametrize(("machine", "arch"), ABIS)
def test_no_new_user_namespace_but_threads_and_other_namespaces_are_made(machine: str, arch: int) -> None:
    program, calls = build(CALLS[machine]), CALLS[machine][arch]
    for number in calls.namespacing:  # clone and unshare
        assert run(program, number, arch, CLONE_NEWUSER | CLONE_NEWNS) == EPERM
        assert run(program, number, arch, CLONE_NEWUSER) == EPERM
        assert run(program, number, arch, CLONE_THREAD) == ALLOW
        assert run(program, number, arch, CLONE_NEWNS) == ALLOW
        assert run(program, number, arch, (1 << 32) | CLONE_THREAD) == ALLOW  # only the low half holds flags
    assert run(program, calls.clone3, arch) == ENOSYS  # its flags cannot be read: the C library falls back


def test_the_x32_abi_is_judged_as_x86_64() -> None:
    program = build(CALLS["x86_64"])
    assert run(program, 0x40000000 | 250, X86_64) == EPERM  # keyctl
    assert run(program, 0x40000000 | 272, X86_64, CLONE_NEWUSER) == EPERM  # unshare
    assert run(program, 0x40000000 | 1, X86_64) == ALLOW


@pytest.mark.parametrize("machine", sorted(CALLS))
def test_a_call_by_an_abi_the_filter_does_not_know_ends_the_process(machine: str) -> None:
    program = build(CALLS[machine])
    foreign = {"x86_64": AARCH64, "aarch64": X86_64}[machine]
    assert run(program, 250, foreign) == KILL
    assert run(program, 1, foreign) == KILL
