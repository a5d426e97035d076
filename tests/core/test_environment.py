"""Task environments' pure decisions: the manifest's fields, the wire spec's checks, which
wheels fit a member, the cache key, what to evict and how a uv failure is told."""

from __future__ import annotations

import msgspec
import pytest

from poolnet_desktop.core.environment import (
    BuiltEnvironment,
    EnvironmentFailure,
    EnvironmentRequest,
    EnvironmentSpec,
    PlatformWheels,
    environment_key,
    explain_uv_failure,
    lru_victims,
    pick_platform,
    platform_target,
    requirement_lines,
    target_runs_on,
    targets_to_resolve,
    wheel_path,
)
from poolnet_desktop.core.manifest import FileEntry, ManifestError, TaskSpec, parse_manifest

SHA = "a" * 64
WHEEL = ".poolnet/wheels/tinya-1.0-py3-none-any.whl"


def manifest(extra: str) -> bytes:
    return f'command = ["{{python}}", "x.py"]\n{extra}\n'.encode()


def test_the_manifest_asks_for_packages_as_a_list_or_a_shipped_file() -> None:
    listed = parse_manifest(manifest('requirements = ["numpy>=2", "pillow"]\npython = "3.12"'), "a.pool.toml")
    assert listed.environment == EnvironmentRequest(("numpy>=2", "pillow"), None, "3.12")
    in_file = parse_manifest(manifest('requirements = "deps/requirements.txt"'), "a.pool.toml")
    assert in_file.environment == EnvironmentRequest((), "deps/requirements.txt", None)
    assert parse_manifest(manifest(""), "a.pool.toml").environment is None


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ('requirements = "../secrets.txt"', "requirements", "escapes its folder"),
        ("requirements = []", "requirements", "a list of packages"),
        ("requirements = [1]", "requirements", "a list of packages"),
        ('requirements = ["numpy\\nevil"]', "requirements", "line break"),
        ('python = "3.12"', "python", "needs requirements"),
        ('requirements = ["x"]\npython = "python3"', "python", "a version such as"),
        ('requirements = ["x"]\npython = 3.12', "python", "a version such as"),
    ],
)
def test_bad_environment_fields_are_refused_naming_the_key(extra: str, key: str, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest(extra), "a.pool.toml")
    assert caught.value.key == key and words in caught.value.message, str(caught.value)


def spec(*wheels: str, target: str = "x86_64-manylinux_2_28") -> EnvironmentSpec:
    return EnvironmentSpec(requirements=("tinya",), python="3.11",
                           platforms=(PlatformWheels(target, tuple(wheels)),))


def test_a_task_spec_names_only_wheels_it_ships_and_ships_no_other_file_in_their_folder() -> None:
    shipped = (FileEntry(path=WHEEL, size=1, sha256=SHA),)
    TaskSpec(name="t", command=("x",), files=shipped, environment=spec(WHEEL))
    with pytest.raises(ValueError, match="is not a task file"):
        TaskSpec(name="t", command=("x",), environment=spec(WHEEL))
    with pytest.raises(ValueError, match="in PoolNet's wheel folder"):
        TaskSpec(name="t", command=("x",), files=shipped)


def test_the_wire_refuses_a_wheel_path_outside_the_wheel_folder() -> None:
    encoded = msgspec.json.encode(spec(WHEEL))
    msgspec.json.decode(encoded, type=EnvironmentSpec)
    bad = encoded.replace(b".poolnet/wheels/", b"../../.bashrc/")
    with pytest.raises(msgspec.ValidationError, match="not a wheel"):
        msgspec.json.decode(bad, type=EnvironmentSpec)
    for name in ("x/../../y.whl", "--index-url=http:evil.whl", "a b.whl", "x.tar.gz"):
        with pytest.raises(ValueError, match="not a wheel"):
            wheel_path(name)


def test_requirement_lines_drop_comments_and_blanks() -> None:
    text = "# tools\nnumpy>=2  # fast\n\n  pillow\n--only-binary :all:\n"
    assert requirement_lines(text) == ("numpy>=2", "pillow", "--only-binary :all:")


@pytest.mark.parametrize(
    ("system", "machine", "glibc", "target"),
    [
        ("linux", "x86_64", (2, 36), "x86_64-manylinux_2_36"),
        ("linux", "x86_64", (2, 30), "x86_64-manylinux_2_28"),
        ("linux", "aarch64", (2, 17), "aarch64-manylinux_2_17"),
        ("linux", "x86_64", (2, 12), None),
        ("linux", "x86_64", None, None),  # musl
        ("darwin", "arm64", None, "aarch64-apple-darwin"),
        ("win32", "AMD64", None, "x86_64-pc-windows-msvc"),
        ("linux", "riscv64", (2, 36), None),
    ],
)
def test_a_machine_is_named_as_a_uv_target(system: str, machine: str, glibc: tuple[int, int] | None,
                                           target: str | None) -> None:
    assert platform_target(system, machine, glibc) == target


def test_wheels_for_an_older_manylinux_run_on_a_newer_one_never_the_reverse() -> None:
    assert target_runs_on("x86_64-manylinux_2_28", "x86_64-manylinux_2_36")
    assert not target_runs_on("x86_64-manylinux_2_36", "x86_64-manylinux_2_28")
    assert not target_runs_on("aarch64-manylinux_2_17", "x86_64-manylinux_2_36")
    assert not target_runs_on("aarch64-apple-darwin", "x86_64-manylinux_2_36")


def test_a_member_picks_the_newest_fitting_platform_or_is_told_which_were_resolved() -> None:
    both = EnvironmentSpec(requirements=("x",), python="3.11", platforms=(
        PlatformWheels("x86_64-manylinux_2_17", ()), PlatformWheels("x86_64-manylinux_2_28", ()),
        PlatformWheels("aarch64-apple-darwin", ()),
    ))
    assert pick_platform(both, "x86_64-manylinux_2_36").target == "x86_64-manylinux_2_28"
    assert pick_platform(both, "aarch64-apple-darwin").target == "aarch64-apple-darwin"
    with pytest.raises(EnvironmentFailure, match=r"\(x86_64-pc-windows-msvc\).*resolved for "
                                                 r"x86_64-manylinux_2_17, x86_64-manylinux_2_28"):
        pick_platform(both, "x86_64-pc-windows-msvc")
    with pytest.raises(EnvironmentFailure, match="unsupported"):
        pick_platform(both, None)


def test_the_cache_key_depends_on_python_platform_and_wheel_set_not_their_order() -> None:
    key = environment_key("3.11", "x86_64-manylinux_2_36", ["a" * 64, "b" * 64])
    assert key == environment_key("3.11", "x86_64-manylinux_2_36", ["b" * 64, "a" * 64])
    assert key != environment_key("3.12", "x86_64-manylinux_2_36", ["a" * 64, "b" * 64])
    assert key != environment_key("3.11", "x86_64-manylinux_2_28", ["a" * 64, "b" * 64])
    assert key != environment_key("3.11", "x86_64-manylinux_2_36", ["a" * 64])


def test_eviction_drops_the_least_recently_used_until_the_rest_fit_sparing_those_in_use() -> None:
    built = [BuiltEnvironment("old", 400, 1.0), BuiltEnvironment("busy", 400, 2.0),
             BuiltEnvironment("mid", 300, 3.0), BuiltEnvironment("new", 300, 4.0)]
    assert lru_victims(built, 1400, set()) == []
    assert lru_victims(built, 1000, set()) == ["old"]
    assert lru_victims(built, 700, {"busy"}) == ["old", "mid"]
    assert lru_victims(built, 0, {"busy", "new"}) == ["old", "mid"]  # above the limit while they run


def test_a_uv_failure_names_the_missing_package_and_platform() -> None:
    not_found = ("  × No solution found when resolving dependencies:\n  ╰─▶ Because nosuch was not "
                 "found in the provided package locations and you require nosuch, we can conclude")
    assert explain_uv_failure(not_found, "x86_64-manylinux_2_28") == (
        "package 'nosuch' is not available for x86_64-manylinux_2_28")
    no_wheel = "  cause: Because only-source==1.0 has no usable wheels and only only-source==1.0 is"
    assert explain_uv_failure(no_wheel, "t-x").startswith(
        "package 'only-source' has no wheel for t-x, only source code, which PoolNet does not build")
    assert explain_uv_failure("error: something else\n", "t-x") == "error: something else (for t-x)"


def test_a_task_is_resolved_for_this_machine_and_each_member_platform_it_does_not_serve() -> None:
    own = "x86_64-manylinux_2_36"
    assert targets_to_resolve([own], []) == (own,)
    # A member on a newer glibc runs this machine's wheels; one on an older glibc, another
    # architecture or another system needs wheels of its own.
    members = ["x86_64-manylinux_2_39", "x86_64-manylinux_2_28", "aarch64-apple-darwin",
               "x86_64-pc-windows-msvc", "x86_64-manylinux_2_28", ""]
    assert targets_to_resolve([own], members) == (
        own, "aarch64-apple-darwin", "x86_64-manylinux_2_28", "x86_64-pc-windows-msvc",
    )
    assert targets_to_resolve([None], ["aarch64-apple-darwin"]) == ("aarch64-apple-darwin",)
    assert targets_to_resolve([own, "x86_64-manylinux_2_28"], ["x86_64-manylinux_2_31"]) == (
        own, "x86_64-manylinux_2_28",  # served already by the older level
    )


def test_a_members_report_that_names_no_real_platform_is_not_resolved_for() -> None:
    """A member writes its own ``python_target``; the submitter passes targets to uv's command
    line, so a made-up one (an option, an index URL, junk, a level no glibc has) is dropped
    rather than resolved for (which would fail every submission, or steer uv)."""
    own = "x86_64-manylinux_2_36"
    forged = ["--index-url=http://attacker.example/simple", "-rsecret", "x86_64-manylinux_2_99",
              "sparc-apple-darwin", "aarch64-pc-windows-msvc extra", "x" * 64]
    assert targets_to_resolve([own], forged) == (own,)
    assert targets_to_resolve([own], [*forged, "aarch64-manylinux_2_28"]) == (own, "aarch64-manylinux_2_28")
