"""Loading tasks from disk: manifests, scripts, folders, hashed files, refused paths, and the
shipped examples run for real."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from poolnet_desktop.core.manifest import expand_command
from poolnet_desktop.core.matrix import param_env, shard_values
from poolnet_desktop.runtime.client.task_files import LoadedTask, TaskFileError, load_task
from poolnet_desktop.runtime.member.runner import ShardSpec, build_argv, build_env

EXAMPLES = Path(__file__).resolve().parents[2] / "resources" / "examples"


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def error_of(path: Path) -> TaskFileError:
    with pytest.raises(TaskFileError) as caught:
        load_task(path)
    return caught.value


def test_manifest_files_hashed_and_located(tmp_path: Path) -> None:
    write(tmp_path / "job.pool.toml", 'command = ["x"]\nfiles = ["run.py", "data", "data/b.bin"]')
    write(tmp_path / "run.py", "print('hi')\n")
    write(tmp_path / "data" / "b.bin", bytes(range(256)) * 5000)
    write(tmp_path / "data" / "sub" / "a.txt", "")
    write(tmp_path / "unlisted.txt", "not shipped")
    loaded = load_task(tmp_path / "job.pool.toml")
    assert loaded.source == tmp_path / "job.pool.toml"
    assert loaded.root == tmp_path.resolve()
    assert [e.path for e in loaded.spec.files] == ["data/b.bin", "data/sub/a.txt", "run.py"]
    for entry in loaded.spec.files:
        local = loaded.local_path(entry)
        assert local.is_absolute()
        content = local.read_bytes()
        assert entry.size == len(content)
        assert entry.sha256 == hashlib.sha256(content).hexdigest()
    assert loaded.spec.name == "job"


def test_folder_with_one_manifest(tmp_path: Path) -> None:
    write(tmp_path / "t" / "only.pool.toml", 'command = ["x"]')
    assert load_task(tmp_path / "t").spec.name == "only"
    write(tmp_path / "t" / "second.pool.toml", 'command = ["y"]')
    error = error_of(tmp_path / "t")
    assert "holds 2 manifests (only.pool.toml, second.pool.toml): choose the one to run" in str(error)
    (tmp_path / "empty").mkdir()
    assert "holds no .pool.toml manifest" in str(error_of(tmp_path / "empty"))


def test_script_is_a_one_shard_task_shipping_itself(tmp_path: Path) -> None:
    script = write(tmp_path / "crunch.py", "print(6 * 7)\n")
    loaded = load_task(script)
    assert loaded.spec.command == ("{python}", "crunch.py")
    assert [(e.path, e.size) for e in loaded.spec.files] == [("crunch.py", 13)]
    assert "cannot run a '.txt' file" in str(error_of(write(tmp_path / "notes.txt", "x")))
    assert "no such file" in str(error_of(tmp_path / "absent.sh"))


def test_broken_manifest_names_path_and_key(tmp_path: Path) -> None:
    manifest = write(tmp_path / "bad.pool.toml", 'command = ["x"]\nshards = -3')
    error = error_of(manifest)
    assert (error.source, error.key) == (str(manifest), "shards")
    assert str(error).startswith(f"{manifest}: key 'shards': must be between 1 and")
    assert "cannot read" in str(error_of(tmp_path / "missing.pool.toml"))


def test_missing_listed_file(tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.pool.toml", 'command = ["x"]\nfiles = ["gone.csv"]')
    error = error_of(manifest)
    assert error.key == "files"
    assert "'gone.csv' does not exist" in str(error)


def test_symlinks_leading_outside_are_refused(tmp_path: Path) -> None:
    outside = write(tmp_path / "secret" / "key.pem", "PRIVATE")
    task = tmp_path / "task"
    write(task / "m.pool.toml", 'command = ["x"]\nfiles = ["data"]')
    write(task / "data" / "ok.txt", "fine")
    (task / "data" / "key.pem").symlink_to(outside)
    assert "'data/key.pem' leads outside the task folder" in str(error_of(task))

    (task / "data" / "key.pem").unlink()
    (task / "data" / "link.txt").symlink_to(task / "data" / "ok.txt")
    loaded = load_task(task)
    assert [e.path for e in loaded.spec.files] == ["data/link.txt", "data/ok.txt"]
    assert loaded.spec.files[0].sha256 == loaded.spec.files[1].sha256

    (task / "data" / "loop").symlink_to(task / "data")
    assert "'data/loop' is a symlinked folder" in str(error_of(task))


def test_listed_path_through_a_symlinked_folder_outside(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "x.csv", "1,2")
    task = tmp_path / "task"
    write(task / "m.pool.toml", 'command = ["x"]\nfiles = ["ext/x.csv"]')
    (task / "ext").symlink_to(tmp_path / "elsewhere")
    assert "'ext/x.csv' leads outside the task folder" in str(error_of(task))
    write(task / "m.pool.toml", 'command = ["x"]\nfiles = ["ext"]')
    assert "leads outside" in str(error_of(task))


def test_special_and_unshippable_names_refused(tmp_path: Path) -> None:
    write(tmp_path / "m.pool.toml", 'command = ["x"]\nfiles = ["in"]')
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "pipe")
    assert "'in/pipe' is not a regular file" in str(error_of(tmp_path))
    (tmp_path / "in" / "pipe").unlink()
    write(tmp_path / "in" / "a\\b.txt", "x")
    assert "cannot be shipped" in str(error_of(tmp_path))


def run_shards(loaded: LoadedTask, shards: list[int], work: Path) -> list[Path]:
    """Run shards the way a member does: a working folder with the shipped files, the expanded
    command (with its sweep values) with PoolNet's own Python, and the shard's environment.
    Returns the folders."""
    folders = []
    for shard in shards:
        folder = work / f"shard-{shard}"
        for entry in loaded.spec.files:
            (folder / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(loaded.local_path(entry), folder / entry.path)
        values = shard_values(loaded.spec.matrix, shard) if loaded.spec.matrix else {}
        spec = ShardSpec(
            expand_command(loaded.spec.command, shard, loaded.spec.shards, values), folder, shard,
            loaded.spec.shards, {**loaded.spec.env, **param_env(values)}, loaded.spec.shell,
        )
        subprocess.run(build_argv(spec), cwd=folder, env=build_env(spec, os.environ), check=True,
                       capture_output=True, timeout=60)
        folders.append(folder)
    return folders


def test_sweep_example_runs(tmp_path: Path) -> None:
    loaded = load_task(EXAMPLES / "sweep")
    assert (loaded.spec.name, loaded.spec.shards, loaded.spec.outputs) == (
        "sweep", 8, ("out/*.json",)
    )
    for shard, folder in zip([0, 7], run_shards(loaded, [0, 7], tmp_path)):
        result = json.loads((folder / "out" / f"shard-{shard}.json").read_text())
        assert (result["shard"], result["shards"]) == (shard, 8)
        assert result["step"] == pytest.approx(0.1 * (shard + 1))
        assert 0 < result["mean_distance"] <= result["max_distance"]


def test_wordcount_example_runs(tmp_path: Path) -> None:
    loaded = load_task(EXAMPLES / "wordcount" / "wordcount.pool.toml")
    texts = sorted(e.path for e in loaded.spec.files if e.path.startswith("texts/"))
    assert len(texts) >= 6
    folders = run_shards(loaded, list(range(loaded.spec.shards)), tmp_path)
    counted: dict[str, int] = {}
    for shard, folder in enumerate(folders):
        result = json.loads((folder / "out" / f"counts-{shard}.json").read_text())
        counted.update(result["files"])
    assert sorted(f"texts/{name}" for name in counted) == texts
    first = (EXAMPLES / "wordcount" / texts[0]).read_text().split()
    assert counted[texts[0].removeprefix("texts/")] == len(first)
