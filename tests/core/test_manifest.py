"""Task files: the TOML manifest, plain scripts, and the TaskSpec on the wire."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.manifest import (
    FileEntry,
    ManifestError,
    ShardResources,
    TaskSpec,
    expand_command,
    parse_manifest,
    script_task,
)
from poolnet_desktop.core.resources import ResourceVector

FULL = b"""
name = "sweep"
command = ["{python}", "sweep.py", "--shard", "{shard}", "--of", "{shards}"]
shards = 8
files = ["sweep.py", "data/", "./data/extra.csv", "win\\\\conf.ini"]
outputs = ["out/*.json", "logs/**/*.txt"]
timeout = 90.5
retries = 3
priority = 5

[resources]
cpu = 2
memory = "2 GiB"
gpu = 1
storage = "500 MB"

[env]
MODE = "fast"
"""

SHA = "a" * 64


def test_full_manifest() -> None:
    manifest = parse_manifest(FULL, "sweep.pool.toml")
    spec = manifest.spec
    assert manifest.source == "sweep.pool.toml"
    assert manifest.declared_files == ("sweep.py", "data", "data/extra.csv", "win/conf.ini")
    assert spec.name == "sweep"
    assert spec.command == ("{python}", "sweep.py", "--shard", "{shard}", "--of", "{shards}")
    assert spec.shards == 8
    assert spec.resources == ShardResources(cpu=2.0, memory_mb=2048.0, storage_mb=500e6 / 2**20,
                                            gpus=1)
    assert spec.outputs == ("out/*.json", "logs/**/*.txt")
    assert spec.env == {"MODE": "fast"}
    assert (spec.timeout, spec.retries, spec.priority, spec.shell) == (90.5, 3, 5, False)
    assert spec.files == ()


def test_defaults_and_name_from_file() -> None:
    spec = parse_manifest(b'command = ["true"]', "some/dir/render frames.pool.toml").spec
    assert spec.name == "render frames"
    assert (spec.shards, spec.retries, spec.priority, spec.timeout, spec.shell) == (
        1, 2, 0, None, False
    )
    assert spec.resources == ShardResources(cpu=1.0)
    assert spec.resources.vector() == ResourceVector(cpu=1.0)


def test_shell_command_is_one_string() -> None:
    spec = parse_manifest(b'command = "echo $HOME | wc -c"\nshell = true', "s.pool.toml").spec
    assert spec.command == ("echo $HOME | wc -c",)
    assert spec.shell


def test_with_files_sorts_entries() -> None:
    manifest = parse_manifest(b'command = ["x"]\nfiles = ["b", "a"]', "t.pool.toml")
    spec = manifest.with_files([FileEntry("b", 1, SHA), FileEntry("a", 2, SHA)])
    assert [entry.path for entry in spec.files] == ["a", "b"]
    with pytest.raises(ValueError, match="listed twice"):
        manifest.with_files([FileEntry("a", 1, SHA), FileEntry("a", 1, SHA)])


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (b'command = ["x"]\ncolour = "red"', "colour", "unknown key"),
        (b'command = ["x"]\n[resources]\ncores = 2', "resources.cores", "unknown key"),
        (b"command = [", None, "not valid TOML"),
        (b'command = ["\xff"]', None, "not UTF-8"),
        (b"shards = 2", "command", "missing"),
        (b"command = []", "command", "empty"),
        (b"command = [1, 2]", "command", "list of strings"),
        (b'command = ["  "]', "command", "names no program"),
        (b'command = "ls -l"', "command", "shell = true"),
        (b'command = ["ls", "-l"]\nshell = true', "command", "one string"),
        (b'command = ["x"]\nshell = "yes"', "shell", "true or false"),
        (b'command = ["x"]\nname = "a/b"', "name", "letters, digits"),
        (b'command = ["x"]\nname = ".."', "name", "letters, digits"),
        (b'command = ["x"]\nname = 7', "name", "must be a string"),
        (b'command = ["x"]\nshards = 0', "shards", "between 1 and 100000"),
        (b'command = ["x"]\nshards = 100001', "shards", "between 1 and 100000"),
        (b'command = ["x"]\nshards = true', "shards", "whole number"),
        (b'command = ["x"]\nshards = 2.5', "shards", "whole number"),
        (b'command = ["x"]\nretries = -1', "retries", "between 0 and 100"),
        (b'command = ["x"]\npriority = "high"', "priority", "whole number"),
        (b'command = ["x"]\ntimeout = 0', "timeout", "above 0"),
        (b'command = ["x"]\ntimeout = 1e12', "timeout", "at most"),
        (b'command = ["x"]\ntimeout = "10 parsecs"', "timeout", "not a duration"),
        (b'command = ["x"]\ntimeout = "0s"', "timeout", "above 0"),
        (b'command = ["x"]\ntimeout = [10]', "timeout", "seconds or a duration"),
        (b'command = ["x"]\nresources = 4', "resources", "must be a table"),
        (b'command = ["x"]\n[resources]\ncpu = 0', "resources.cpu", "above 0"),
        (b'command = ["x"]\n[resources]\ncpu = -2', "resources.cpu", "above 0"),
        (b'command = ["x"]\n[resources]\ncpu = "2"', "resources.cpu", "number of cores"),
        (b'command = ["x"]\n[resources]\nmemory = 512', "resources.memory", "with its unit"),
        (b'command = ["x"]\n[resources]\nmemory = "lots GB"', "resources.memory", "not a size"),
        (b'command = ["x"]\n[resources]\nmemory = "-1 GB"', "resources.memory", "not a size"),
        (b'command = ["x"]\n[resources]\nstorage = "9999999 TiB"', "resources.storage", "more"),
        (b'command = ["x"]\n[resources]\ngpu = 1.5', "resources.gpu", "whole number"),
        (b'command = ["x"]\n[resources]\ngpu = 65', "resources.gpu", "between 0 and 64"),
        (b'command = ["x"]\nfiles = "data"', "files", "list of relative paths"),
        (b'command = ["x"]\nfiles = ["../secret"]', "files", "escapes"),
        (b'command = ["x"]\nfiles = ["/etc/passwd"]', "files", "absolute"),
        (b'command = ["x"]\nfiles = ["C:\\\\Windows\\\\x"]', "files", "drive letter"),
        (b'command = ["x"]\noutputs = ["../../*.txt"]', "outputs", "escapes"),
        (b'command = ["x"]\noutputs = ["/tmp/*"]', "outputs", "absolute"),
        (b'command = ["x"]\nenv = ["A=1"]', "env", "table"),
        (b'command = ["x"]\n[env]\nA = 1', "env.A", "must be a string"),
        (b'command = ["x"]\n[env]\n"1BAD" = "x"', "env", "not a valid environment"),
        (b'command = ["x"]\n[env]\nPOOLNET_SHARD = "3"', "env", "set by PoolNet"),
        (b'command = ["x"]\n[env]\nCUDA_VISIBLE_DEVICES = "0"', "env", "set by PoolNet"),
    ],
)
def test_broken_manifests_name_file_key_and_fault(
    text: bytes, key: str | None, fragment: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, "jobs/bad.pool.toml")
    error = caught.value
    assert error.source == "jobs/bad.pool.toml"
    assert error.key == key
    assert fragment in error.message
    assert str(error).startswith("jobs/bad.pool.toml: ")
    if key:
        assert f"key '{key}'" in str(error)


@pytest.mark.parametrize(
    ("filename", "command"),
    [
        ("train.py", ("{python}", "train.py")),
        ("build.sh", ("sh", "build.sh")),
        ("setup.bat", ("cmd", "/c", "setup.bat")),
        ("clean.PS1", ("powershell", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File",
                       "clean.PS1")),
    ],
)
def test_script_tasks(filename: str, command: tuple[str, ...]) -> None:
    manifest = script_task(filename)
    assert manifest.spec.command == command
    assert manifest.spec.shards == 1
    assert manifest.declared_files == (filename,)
    assert manifest.spec.name == filename.rsplit(".", 1)[0]


def test_script_with_odd_name_gets_plain_name() -> None:
    assert script_task("#weird.py").spec.name == "script"


@pytest.mark.parametrize(
    ("filename", "fragment"),
    [("notes.txt", "cannot run a '.txt' file"), ("Makefile", "cannot run"),
     ("sub/x.py", "not a path")],
)
def test_script_refused(filename: str, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        script_task(filename)


def test_expand_command() -> None:
    command = ("{python}", "run.py", "--part={shard}/{shards}", '{"k": 1}', "{other}")
    assert expand_command(command, 2, 8) == [
        "{python}", "run.py", "--part=2/8", '{"k": 1}', "{other}"
    ]
    for shard in (-1, 8):
        with pytest.raises(ValueError, match="out of range"):
            expand_command(command, shard, 8)


@given(st.lists(st.text().filter(lambda s: "{" not in s), max_size=5), st.integers(1, 50))
def test_expand_leaves_plain_arguments_alone(args: list[str], shards: int) -> None:
    assert expand_command(args, shards - 1, shards) == args


def test_wire_round_trip() -> None:
    manifest = parse_manifest(FULL, "sweep.pool.toml")
    spec = manifest.with_files([FileEntry("sweep.py", 120, SHA), FileEntry("data/a.csv", 0, SHA)])
    data = msgspec.json.encode(spec)
    assert b'"memoryMb"' in data and b'"sha256"' in data
    assert msgspec.json.decode(data, type=TaskSpec) == spec


GOOD_WIRE = {"name": "t", "command": ["x"]}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"files": [{"path": "../x", "size": 1, "sha256": SHA}]}, "escapes"),
        ({"files": [{"path": "/etc/shadow", "size": 1, "sha256": SHA}]}, "absolute"),
        ({"files": [{"path": "a/./b", "size": 1, "sha256": SHA}]}, "canonical"),
        ({"files": [{"path": "a", "size": -1, "sha256": SHA}]}, ">= 0"),
        ({"files": [{"path": "a", "size": 1, "sha256": "XYZ"}]}, "regex"),
        ({"outputs": ["../*"]}, "escapes"),
        ({"files": [{"path": "a", "size": 1, "sha256": SHA},
                    {"path": "a/b", "size": 1, "sha256": SHA}]}, "both a file and a folder"),
        ({"files": [{"path": "a", "size": 1, "sha256": SHA}] * 2}, "listed twice"),
        ({"command": []}, "empty"),
        ({"command": ["a", "b"], "shell": True}, "one string"),
        ({"env": {"POOLNET_SHARDS": "1"}}, "set by PoolNet"),
        ({"shards": 0}, ">= 1"),
        ({"resources": {"cpu": 0}}, "> 0"),
        ({"name": "../etc"}, "letters, digits"),
    ],
)
def test_hostile_wire_specs_refused(changes: dict[str, object], fragment: str) -> None:
    data = msgspec.json.encode({**GOOD_WIRE, **changes})
    with pytest.raises(msgspec.ValidationError, match=fragment):
        msgspec.json.decode(data, type=TaskSpec)
    assert msgspec.json.decode(msgspec.json.encode(GOOD_WIRE), type=TaskSpec).name == "t"


@pytest.mark.parametrize(("written", "seconds"), [("120s", 120.0), ("2m", 120.0), ("1h30m", 5400.0), ("45", 45.0)])
def test_timeout_takes_units_as_memory_does(written: str, seconds: float) -> None:
    spec = parse_manifest(f'command = ["x"]\ntimeout = "{written}"'.encode(), "t.pool.toml").spec
    assert spec.timeout == seconds
