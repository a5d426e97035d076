"""Platform matching: which members may run a task, decided from its manifest or command, and
the scheduler never placing a shard on a member of another platform."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.manifest import ManifestError, parse_manifest, script_task
from poolnet_desktop.core.platforms import (
    ANY_PLATFORM,
    POSIX,
    WINDOWS,
    PlatformNeed,
    platform_refusal,
    task_platforms,
)
from poolnet_desktop.core.resources import ResourceVector
from poolnet_desktop.core.scheduler import Scheduler, Unschedulable

ONE_CORE = ResourceVector(cpu=1)


def need_of(filename: str) -> PlatformNeed:
    return script_task(filename).spec.platform_need()


def test_scripts_run_where_their_interpreter_is() -> None:
    assert need_of("build.sh").platforms == POSIX
    assert need_of("build.bat").platforms == WINDOWS
    assert need_of("build.ps1").platforms == WINDOWS
    assert need_of("train.py") == ANY_PLATFORM
    assert need_of("build.sh").describe() == "linux or macos (a sh command)"


@pytest.mark.parametrize(
    ("command", "shell", "expected"),
    [
        (["bash", "run.sh"], False, POSIX),
        (["./run.sh", "--fast"], False, POSIX),
        (["/usr/bin/zsh", "-c", "true"], False, POSIX),
        (["C:\\Windows\\System32\\cmd.exe", "/c", "x"], False, WINDOWS),
        (["RUN.BAT"], False, WINDOWS),
        (["{python}", "x.sh"], False, None),  # a Python script handed a file name
        (["sh x.sh"], True, None),  # a shell line: the member's own shell runs it
        (["ffmpeg", "-i", "a.mp4"], False, None),
    ],
)
def test_a_manifest_command_is_judged_by_its_program(
    command: list[str], shell: bool, expected: frozenset[str] | None
) -> None:
    assert task_platforms((), command, shell).platforms == expected


def test_the_manifest_list_wins_over_the_command() -> None:
    spec = parse_manifest(b'command = ["sh", "x.sh"]\nplatform = ["windows"]', "m.pool.toml").spec
    assert spec.platform == ("windows",)
    need = spec.platform_need()
    assert need.platforms == WINDOWS
    assert need.describe() == "windows (its manifest's platform list)"
    one = parse_manifest(b'command = ["x"]\nplatform = "macos"', "m.pool.toml").spec
    assert one.platform == ("macos",)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b'["linux", "beos"]', "unknown platform 'beos'"),
        (b"[]", "lists no platform"),
        (b'["linux", "linux"]', "twice"),
        (b"3", "must be a list"),
        (b'"Linux"', "unknown platform"),
    ],
)
def test_bad_platform_lists_are_refused(value: bytes, fragment: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(b'command = ["x"]\nplatform = ' + value, "m.pool.toml")
    assert caught.value.key == "platform"
    assert fragment in caught.value.message


def test_a_sh_shard_is_never_placed_on_a_windows_member() -> None:
    """The Windows member is the bigger and idler one, which the scheduler would otherwise
    prefer; the shards wait for the Linux member instead, even when placed ahead."""
    sched = Scheduler(ahead=4)
    sched.set_member("win", ResourceVector(cpu=16), platform="windows")
    sched.set_member("lin", ResourceVector(cpu=2), platform="linux")
    sched.check_fits_somewhere(ONE_CORE, need_of("x.sh"))
    sched.submit("sh-task", ONE_CORE, range(10), need=need_of("x.sh"))
    placed = sched.place()
    assert placed and {p.device_id for p in placed} == {"lin"}
    assert sched.pending("sh-task") == 10 - len(placed)
    assert sched.waiting_reason("sh-task") == "waiting: needs 1 CPU core, every member's share is in use"
    # An unrestricted task behind it takes the Windows member.
    sched.submit("py-task", ONE_CORE, range(3), need=need_of("x.py"))
    assert {p.device_id for p in sched.place()} == {"win"}
    # With the Linux member gone, the rest waits and says why.
    sched.remove_member("lin")
    assert sched.place() == []
    assert sched.waiting_reason("sh-task") == (
        "waiting: runs on linux or macos (a sh command), no such member is sharing"
    )


def test_a_bat_shard_goes_only_to_windows_and_an_unknown_platform_takes_no_restricted_work() -> None:
    sched = Scheduler()
    sched.set_member("old", ResourceVector(cpu=8), platform="unknown")
    sched.set_member("win", ResourceVector(cpu=1), platform="windows")
    sched.submit("bat", ONE_CORE, range(3), need=need_of("x.bat"))
    assert [(p.shard, p.device_id) for p in sched.place()] == [(0, "win")]
    sched.release("bat", 0)
    assert [(p.shard, p.device_id) for p in sched.place()] == [(1, "win")]


def test_a_member_that_changes_platform_is_matched_by_its_new_one() -> None:
    sched = Scheduler()
    sched.set_member("m", ResourceVector(cpu=4), platform="windows")
    sched.set_member("m", ResourceVector(cpu=4), platform="linux")  # same share, re-joined
    sched.submit("sh", ONE_CORE, [0], need=need_of("x.sh"))
    assert [p.device_id for p in sched.place()] == ["m"]


def test_a_task_no_member_can_run_is_refused_with_the_reason() -> None:
    sched = Scheduler()
    sched.set_member("w1", ResourceVector(cpu=8), platform="windows")
    sched.set_member("w2", ResourceVector(cpu=8), platform="windows")
    with pytest.raises(Unschedulable) as caught:
        sched.check_fits_somewhere(ONE_CORE, need_of("x.sh"))
    assert str(caught.value) == (
        "it runs on linux or macos (a sh command) only, and no member does "
        "(members' platforms: windows)"
    )
    # Fit is judged among the members of the right platform only.
    sched.set_member("l", ResourceVector(cpu=1), platform="linux")
    with pytest.raises(Unschedulable, match="the closest, l, cannot give"):
        sched.check_fits_somewhere(ResourceVector(cpu=4), need_of("x.sh"))
    sched.check_fits_somewhere(ResourceVector(cpu=4), need_of("x.py"))


def test_platform_refusal_with_any_need_or_a_matching_member_is_none() -> None:
    assert platform_refusal(ANY_PLATFORM, []) is None
    assert platform_refusal(PlatformNeed(POSIX), ["windows", "macos"]) is None
    assert platform_refusal(PlatformNeed(WINDOWS), []) == (
        "it runs on windows only, and no member does (members' platforms: none)"
    )
